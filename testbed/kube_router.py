"""kube-router, the testbed's default CNI: an agent DaemonSet, as the course's Calico is.

On every node a kube-router pod (host network, privileged) fills the node's podCIDR into the CNI
config its init container put in /etc/cni/net.d (the bridge and host-local plugins Debian ships
do the per-pod work), peers with the other nodes over BGP and routes their pod ranges, and
enforces NetworkPolicy with iptables and ipset. kube-proxy keeps the Services. The image is built
here from the kube-router binary (github.com/cloudnativelabs/kube-router/v2, built from the Go
module) and the machine's own iptables, ipset and iproute2 with their libraries.

`python -m testbed up --cni bridge` keeps the config-file bridge CNI (testbed/configs.py).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from . import images, net
from .errors import TestbedError
from .images import ImageSpec, Layer
from .kube import kubectl, pod_ready, wait
from .paths import KUBE_ROUTER_VERSION

IMAGE = f"localhost/clusterproof/kube-router:{KUBE_ROUTER_VERSION}"
NAMESPACE = "kube-system"
NAME = "kube-router"
LABELS = {"k8s-app": NAME, "tier": "node"}
CONF_NAME = "10-kuberouter.conflist"
BRIDGE = "kube-bridge"
HEALTH_PORT = 20244
HASH_ANNOTATION = "clusterproof.io/manifest-sha256"
# kube-router's flags as the testbed runs it; the fault kube-router-no-policy turns the firewall off
ARGS = ("--run-router=true", "--run-firewall=true", "--run-service-proxy=false", "--enable-overlay=false",
        "--bgp-graceful-restart=true", f"--service-cluster-ip-range={net.SERVICE_CIDR}",
        f"--health-port={HEALTH_PORT}", "--v=1")
XTABLES_NAMES = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
XTABLES_MODULES = Path("/usr/lib/x86_64-linux-gnu/xtables")
TOOLS = {"usr/sbin/ipset": Path("/usr/sbin/ipset"), "usr/sbin/ip": Path("/usr/bin/ip")}
# kube-router 2.1 writes the whole filter table back with iptables-restore (no --noflush; kube-router issue 1372):
# a rule kube-proxy changed between kube-router's iptables-save and this restore is put back as it was (seen: a
# Service's "has no endpoints" REJECT returning after its pods became ready, so its NodePort and ClusterIP refused
# connections on that node). kube-proxy 1.35 does a full sync only hourly, or when its canary chains disappear (how
# it notices a firewall reload). The image's iptables-restore is this wrapper: after each table kube-router restores,
# it deletes kube-proxy's canaries (mangle last: kube-proxy polls that one, then expects the others gone), so
# kube-proxy rewrites its rules within its syncPeriod (configs.KUBE_PROXY_SYNC_PERIOD).
RESTORE_WRAPPER = """#!/bin/sh
/usr/sbin/{xt} iptables-restore "$@" || exit $?
case " $* " in
  *" -T "*) for t in filter nat mangle; do /usr/sbin/{xt} iptables -w -t $t -X KUBE-PROXY-CANARY 2>/dev/null; done ;;
esac
exit 0
"""


def cni_template() -> str:
    """The CNI config the init container installs; kube-router adds the node's podCIDR to its ranges."""
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "kube-router",
        "plugins": [
            {"type": "bridge", "name": "kubernetes", "bridge": BRIDGE, "isDefaultGateway": True,
             "hairpinMode": True, "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": True, "snat": True}},
        ],
    }, indent=2) + "\n"


def restore_wrapper() -> str:
    return RESTORE_WRAPPER.format(xt=_xtables().name)


def image_revision() -> str:
    """What of kube-router's image is not its binary: the image is assembled again, and the DaemonSet's pods
    replaced, when this changes."""
    return hashlib.sha256(restore_wrapper().encode()).hexdigest()[:16]


def _xtables() -> Path:
    """The xtables multi-binary the machine's iptables is (nft or legacy): kube-proxy runs on the machine's, and
    the two must program the same backend."""
    return Path("/usr/sbin/iptables").resolve()


def image_spec(bin_dir: Path) -> ImageSpec:
    """busybox + python (the probe image's layer, shared) and a layer of kube-router with iptables, ipset, ip."""
    layer = Layer(f"kube-router {KUBE_ROUTER_VERSION}")
    layer.file("usr/local/bin/kube-router", bin_dir / "kube-router", 0o755)
    xt = _xtables()
    layer.file(f"usr/sbin/{xt.name}", xt, 0o755)
    for name in XTABLES_NAMES:
        layer.link(f"usr/sbin/{name}", xt.name)
    layer.data("usr/sbin/iptables-restore", restore_wrapper().encode(), 0o755)
    for dest, src in TOOLS.items():
        if not src.exists():
            raise TestbedError(f"{src} missing (kube-router's image needs it); apt-get install ipset iproute2", code=4)
        layer.file(dest, src.resolve(), 0o755)
    modules = sorted(XTABLES_MODULES.glob("*.so"))
    for mod in modules:
        layer.file(f"usr/lib/x86_64-linux-gnu/xtables/{mod.name}", mod.resolve(), 0o755)
    layer.libraries([xt, *TOOLS.values(), *modules])
    if Path("/etc/iproute2").is_dir():
        layer.tree("etc/iproute2", Path("/etc/iproute2"))
    return ImageSpec(IMAGE, [images._base_layer(), layer], entrypoint=["/usr/local/bin/kube-router"],
                     env=[images.PATH_ENV])


def manifest(args: tuple[str, ...] = ARGS) -> str:
    """The ServiceAccount, its ClusterRole and binding, the CNI template and the DaemonSet (kubectl apply)."""
    rules = [
        {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
        {"apiGroups": [""], "resources": ["services/status"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    install = (f"set -e; if [ ! -f /etc/cni/net.d/{CONF_NAME} ]; then "
               f"cp /etc/kube-router/cni-conf.json /etc/cni/net.d/.{CONF_NAME}.tmp; "
               f"mv /etc/cni/net.d/.{CONF_NAME}.tmp /etc/cni/net.d/{CONF_NAME}; fi")
    ds: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS},
        "spec": {
            "selector": {"matchLabels": LABELS},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": LABELS,
                                       "annotations": {"clusterproof.io/image-revision": image_revision()}},
                         "spec": {
                "priorityClassName": "system-node-critical",
                "serviceAccountName": NAME,
                "hostNetwork": True,
                "terminationGracePeriodSeconds": 5,
                "tolerations": [{"operator": "Exists", "effect": "NoSchedule"},
                                {"operator": "Exists", "effect": "NoExecute"},
                                {"key": "CriticalAddonsOnly", "operator": "Exists"}],
                "initContainers": [{
                    "name": "install-cni", "image": IMAGE, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", install],
                    "volumeMounts": [{"name": "cni-conf-dir", "mountPath": "/etc/cni/net.d"},
                                     {"name": "kube-router-cfg", "mountPath": "/etc/kube-router"}]}],
                "containers": [{
                    "name": NAME, "image": IMAGE, "imagePullPolicy": "Never",
                    "args": list(args),
                    "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "KUBE_ROUTER_CNI_CONF_FILE", "value": f"/etc/cni/net.d/{CONF_NAME}"}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT},
                                       "periodSeconds": 2, "failureThreshold": 2},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT},
                                      "initialDelaySeconds": 10, "periodSeconds": 5},
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                    "securityContext": {"privileged": True},
                    "volumeMounts": [{"name": "cni-conf-dir", "mountPath": "/etc/cni/net.d"},
                                     {"name": "xtables-lock", "mountPath": "/run/xtables.lock"}]}],
                "volumes": [
                    {"name": "cni-conf-dir", "hostPath": {"path": "/etc/cni/net.d"}},
                    {"name": "kube-router-cfg", "configMap": {"name": "kube-router-cfg"}},
                    {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}}],
            }},
        },
    }
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": NAME},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NAME},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "kube-router-cfg", "namespace": NAMESPACE, "labels": LABELS},
         "data": {"cni-conf.json": cni_template()}},
        ds,
    ]
    # the DaemonSet carries the digest of everything here: deploy() applies only a manifest that is not running
    ds["metadata"]["annotations"] = {HASH_ANNOTATION: _digest(docs)}
    return "\n---\n".join(json.dumps(d, sort_keys=True) for d in docs) + "\n"


def _digest(docs: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()


def _applied_hash() -> str | None:
    r = kubectl("-n", NAMESPACE, "get", "daemonset", NAME, "-o", "json", check=False)
    if r.returncode != 0:
        return None
    return (json.loads(r.stdout)["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)


def deploy(args: tuple[str, ...] = ARGS) -> bool:
    """Apply kube-router with ARGS unless exactly this manifest runs already; True when applied."""
    text = manifest(args)
    ds = json.loads(text.split("\n---\n")[-1])
    if _applied_hash() == ds["metadata"]["annotations"][HASH_ANNOTATION]:
        return False
    kubectl("apply", "-f", "-", input=text)
    # the pods the old manifest made stay ready for a moment: wait until the DaemonSet controller replaced them
    wait("kube-router rolled out (the DaemonSet's pods all of its current template)", rolled_out, 120, 1)
    return True


def rolled_out() -> bool:
    """The DaemonSet's controller has seen its latest spec and every scheduled pod is of it and available."""
    r = kubectl("-n", NAMESPACE, "get", "daemonset", NAME, "-o", "json", check=False)
    if r.returncode != 0:
        return False
    ds = json.loads(r.stdout)
    st = ds.get("status") or {}
    want = st.get("desiredNumberScheduled", -1)
    return (st.get("observedGeneration", 0) >= ds["metadata"].get("generation", 1)
            and st.get("updatedNumberScheduled", 0) == want == st.get("numberAvailable", 0))


def not_ready(nodes: list[str]) -> list[str]:
    """Those of NODES without a ready kube-router pod (all of them when the pods cannot be read)."""
    ready = ready_nodes()
    return [n for n in nodes if n not in ready]


def ready_nodes() -> set[str]:
    """Nodes with a Ready kube-router pod that is not being deleted."""
    r = kubectl("-n", NAMESPACE, "get", "pods", "-l", ",".join(f"{k}={v}" for k, v in LABELS.items()), "-o", "json",
                check=False)
    if r.returncode != 0:
        return set()
    out = set()
    for pod in json.loads(r.stdout).get("items", []):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if pod_ready(pod):
            out.add(pod.get("spec", {}).get("nodeName", ""))
    return out - {""}
