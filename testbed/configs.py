"""Configuration files for containerd, the kubelet, kube-proxy, sshd, CNI, and CoreDNS manifests."""
from __future__ import annotations

import json
from pathlib import Path

from .net import CLUSTER_CIDR, DNS_IP, Node

PAUSE_IMAGE = "localhost/clusterproof/pause:1"
COREDNS_IMAGE = "localhost/clusterproof/coredns:1"


def containerd_toml(systemd_cgroup: bool = False) -> str:
    """containerd's config; systemd_cgroup (the cgroup-driver-mismatch fault) sets runc's SystemdCgroup, which the
    kubelet's cgroupDriver: cgroupfs does not match."""
    options = ('\n    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
               '      SystemdCgroup = true') if systemd_cgroup else ""
    return f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"{options}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
"""


def kubelet_yaml(node: Node, pki: Path, resolv: Path) -> str:
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
healthzBindAddress: 0.0.0.0
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {pki}/ca.crt}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
cgroupRoot: /{node.name}
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
clusterDNS: [{DNS_IP}]
clusterDomain: cluster.local
resolvConf: {resolv}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"}}
serializeImagePulls: false
rotateCertificates: false
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
"""


# how often kube-proxy looks for its canary chains (and retries a failed sync); 30 s by default. A testbed with
# kube-router has kube-proxy resync after each of kube-router's filter-table rewrites (kube_router.RESTORE_WRAPPER)
KUBE_PROXY_SYNC_PERIOD = "5s"


def kube_proxy_yaml(node: Node, kubeconfig: Path) -> str:
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
mode: iptables
iptables:
  syncPeriod: {KUBE_PROXY_SYNC_PERIOD}
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {node.name}
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
"""


BRIDGE_CONF = "10-bridge.conflist"  # the bridge CNI's file in a node's /etc/cni/net.d


def cni_conflist(subnet: str) -> str:
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "testbed-bridge",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2) + "\n"


def sshd_config(node: Node, state: Path) -> str:
    return f"""ListenAddress {node.ip}
Port 22
HostKey {state}/ssh/ssh_host_ed25519_key
PidFile {state}/nodes/{node.name}/sshd.pid
AuthorizedKeysFile {state}/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
"""


SYSCTL_CONF = """# Kubernetes networking prerequisites (kept by the testbed, as kubeadm's docs ask).
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
"""
MODULES_CONF = "overlay\nbr_netfilter\n"


def coredns_manifest() -> str:
    return f"""apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        health {{
            lameduck 2s
        }}
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }}
        cache 30
        loop
        reload
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 2
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      tolerations: [{{key: CriticalAddonsOnly, operator: Exists}}]
      containers:
      - name: coredns
        image: {COREDNS_IMAGE}
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{containerPort: 53, name: dns, protocol: UDP}}
        - {{containerPort: 53, name: dns-tcp, protocol: TCP}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
          initialDelaySeconds: 10
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
        securityContext:
          capabilities: {{add: [NET_BIND_SERVICE]}}
      volumes:
      - name: config
        configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns, kubernetes.io/name: CoreDNS}}
spec:
  clusterIP: {DNS_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"""
