"""The testbed bootstrapped by kubeadm, as the course installs a cluster: `python -m testbed up` (the default
bootstrap; `--bootstrap processes` starts each component as a process instead).

`kubeadm init` runs inside tb-node-1 (its own network, mount and UTS namespaces, as kind runs kubeadm inside its
node containers) and `kubeadm join` inside every other node. kubeadm writes the certificates, the kubeconfigs and
the static pod manifests of etcd and the control plane into the node's own /etc/kubernetes, the kubelet runs
them from images assembled here from the built binaries (imageRepository localhost/clusterproof), uploads
kubeadm-config and kubelet-config, and labels and taints the control-plane node (kubeadm 1.35 writes no
cri-socket annotation any more: each kubelet gets the socket in kubeadm-flags.env).

There is no systemd on this machine. kubeadm's systemd drop-in makes the kubelet unit wait, restarting, until
kubeadm has written /var/lib/kubelet/config.yaml and kubeadm-flags.env, then runs the kubelet with them; each
node's kubelet runs under a small shell supervisor here that does the same (kubelet_unit_script). The two
add-ons kubeadm would deploy are off (dns.disabled, proxy.disabled); the testbed runs its own, as with processes:
CoreDNS (testbed/configs.py; kubeadm's Corefile forwards to the node's resolv.conf, a loop on this machine) and
kube-proxy as a process on every node with a client certificate from kubeadm's CA. kubeadm's preflight runs with
only the ignores this machine forces (PREFLIGHT_IGNORES).
"""
from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import images, net, pki, proc
from .errors import TestbedError
from .images import ImageSpec, Layer
from .kube import kubectl, pod_ready, wait
from .paths import STATE, bin_dir
from .state import ADMIN_KUBECONFIG, PKI, bind_source, node_dir

IMAGE_REPOSITORY = "localhost/clusterproof"
CONTROL_PLANE_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")  # as status lists them
CONTROL_PLANE = CONTROL_PLANE_ORDER
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
TOKEN_FILE = STATE / "kubeadm-token"
LOG_DIR = STATE / "logs"
# What this machine forces kubeadm's preflight to let pass (named in the README):
#   SystemVerification: cgroup v1 (the machine boots it; kubelet >= 1.35 needs failCgroupV1: false)
PREFLIGHT_IGNORES = ("SystemVerification",)


def control_plane_image(name: str, tag: str) -> str:
    return f"{IMAGE_REPOSITORY}/{name}:{tag}"


def image_spec(name: str, binary: Path, tag: str) -> ImageSpec:
    """One control-plane image: the binary on PATH over the base files (kubeadm's manifests name the command)."""
    layer = Layer(f"{name} {tag}")
    images._base_files(layer)
    layer.file(f"usr/local/bin/{name}", binary, 0o755)
    return ImageSpec(control_plane_image(name, tag), [layer], env=[images.PATH_ENV])


def required_images(version: str, config: Path) -> list[str]:
    """The images kubeadm needs for CONFIG, as it lists them (`kubeadm config images list`): its pause version and
    image names come from the kubeadm built here, not from this file."""
    r = subprocess.run([str(bin_dir(version) / "kubeadm"), "config", "images", "list", "--config", str(config)],
                       capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0:
        raise TestbedError(f"kubeadm config images list: {r.stderr.strip()[-400:]}", code=7)
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]


def image_archives(version: str, config: Path) -> dict[str, Path]:
    """Image name -> archive for every image kubeadm needs: the control plane and etcd around the binaries built
    here (each assembled again only when its binary changed), pause as the testbed's own pause."""
    from .node import _stamped_image

    b = bin_dir(version)
    out = {}
    for ref in required_images(version, config):
        repo, _, tag = ref.rpartition(":")
        name = repo.rsplit("/", 1)[-1]
        if not repo.startswith(IMAGE_REPOSITORY + "/"):
            raise TestbedError(f"kubeadm asks for {ref}, outside {IMAGE_REPOSITORY}: no registry here", code=7)
        if name in CONTROL_PLANE:
            out[ref] = _stamped_image(ref, b / name, partial(image_spec, name, b / name, tag))
        elif name == "pause":
            out[ref] = images.assemble(ImageSpec(ref, [images._single_binary_layer("pause", images._pause_binary(
                lambda _m: None))], entrypoint=["/pause"]))
        else:
            raise TestbedError(f"kubeadm asks for {ref}, which the testbed does not build", code=7)
    return out


def _token() -> str:
    """The bootstrap token the workers join with (made once per testbed, kept in the state folder)."""
    if TOKEN_FILE.exists():
        return TOKEN_FILE.read_text().strip()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    token = "".join(secrets.choice(alphabet) for _ in range(6)) + "." + "".join(
        secrets.choice(alphabet) for _ in range(16))
    TOKEN_FILE.write_text(token + "\n")
    TOKEN_FILE.chmod(0o600)
    return token


def _node_registration(node: net.Node) -> str:
    resolv = node_dir(node) / "resolv.conf"
    return f"""nodeRegistration:
  name: {node.name}
  criSocket: {CRI_SOCKET}
  imagePullPolicy: Never
  ignorePreflightErrors: [{", ".join(PREFLIGHT_IGNORES)}]
  kubeletExtraArgs:
  - {{name: node-ip, value: "{node.ip}"}}
  - {{name: cgroup-root, value: /{node.name}}}
  - {{name: resolv-conf, value: {resolv}}}
"""


def kubelet_configuration() -> str:
    """The cluster's KubeletConfiguration as kubeadm uploads it (kubelet-config): the testbed's settings that hold
    on every node (the per-node ones are kubeletExtraArgs)."""
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
healthzBindAddress: 0.0.0.0
clusterDNS: [{net.DNS_IP}]
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"}}
serializeImagePulls: false
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
"""


def init_config(node: net.Node, version: str) -> str:
    """kubeadm init's config: InitConfiguration, ClusterConfiguration and KubeletConfiguration (v1beta4)."""
    return f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: "{_token()}"
  ttl: "0s"
  groups: [system:bootstrappers:kubeadm:default-node-token]
localAPIEndpoint: {{advertiseAddress: {node.ip}, bindPort: {net.API_PORT}}}
{_node_registration(node)}---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: clusterproof-testbed
kubernetesVersion: {version}
imageRepository: {IMAGE_REPOSITORY}
controlPlaneEndpoint: "{node.ip}:{net.API_PORT}"
networking: {{podSubnet: {net.CLUSTER_CIDR}, serviceSubnet: {net.SERVICE_CIDR}, dnsDomain: cluster.local}}
dns: {{disabled: true}}
proxy: {{disabled: true}}
etcd:
  local:
    imageRepository: {IMAGE_REPOSITORY}
    imageTag: {version}
    extraArgs:
    - {{name: unsafe-no-fsync, value: "true"}}
    - {{name: log-level, value: warn}}
apiServer:
  certSANs: ["{node.ip}", "127.0.0.1", "localhost"]
controllerManager:
  extraArgs:
  - {{name: node-monitor-grace-period, value: 20s}}
---
{kubelet_configuration()}"""


def init_config_file(control: net.Node, version: str) -> Path:
    cfg = node_dir(control) / "kubeadm-init.yaml"
    cfg.write_text(init_config(control, version))
    return cfg


def ca_cert_hash(ca_crt: Path) -> str:
    """sha256:<hex> of the CA's SubjectPublicKeyInfo, as kubeadm's --discovery-token-ca-cert-hash."""
    cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def join_config(node: net.Node, control: net.Node, ca_crt: Path) -> str:
    return f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "{control.ip}:{net.API_PORT}"
    token: "{_token()}"
    caCertHashes: ["{ca_cert_hash(ca_crt)}"]
{_node_registration(node)}"""


def kubelet_unit_script(kubelet: Path) -> str:
    """What kubeadm's systemd drop-in does, without systemd: wait for kubeadm's files, then run the kubelet with
    them (the unit would restart the kubelet until they exist)."""
    return f"""set -e
while [ ! -f /var/lib/kubelet/config.yaml ] || [ ! -f /var/lib/kubelet/kubeadm-flags.env ] || \\
      {{ [ ! -f /etc/kubernetes/kubelet.conf ] && [ ! -f /etc/kubernetes/bootstrap-kubelet.conf ]; }}; do
  sleep 0.5
done
KUBELET_KUBEADM_ARGS=""
. /var/lib/kubelet/kubeadm-flags.env
exec {kubelet} --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \\
  --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml $KUBELET_KUBEADM_ARGS
"""


def start_kubelet_unit(node: net.Node, version: str) -> None:
    from .node import node_exec

    name = f"{node.name}-kubelet"
    if proc.pid_of(name) is None:
        proc.start(name, [*node_exec(node), "/bin/sh", "-c", kubelet_unit_script(bin_dir(version) / "kubelet")])


def joined(node: net.Node) -> bool:
    """kubeadm init or join has run in NODE: the kubelet's kubeconfig, which only kubeadm writes there, exists."""
    return (bind_source(node, "/etc/kubernetes") / "kubelet.conf").exists()


def _kubeadm(node: net.Node, version: str, args: list[str], what: str, timeout: float) -> None:
    from .node import node_exec

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"kubeadm-{what}-{node.name}.log"
    with log.open("w") as out:
        r = subprocess.run([*node_exec(node), str(bin_dir(version) / "kubeadm"), *args, "--v=1"], stdout=out,
                           stderr=subprocess.STDOUT, timeout=timeout, check=False)
    if r.returncode != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-4:]
        raise TestbedError(f"kubeadm {what} on {node.name} failed (exit {r.returncode}): {' | '.join(tail)[-600:]}; "
                           f"full log: {log}", code=7)


def init(control: net.Node, version: str) -> None:
    """kubeadm init on CONTROL unless it ran there; then the admin kubeconfig and the testbed's own client
    certificates (signed by kubeadm's CA) for its probes and kube-proxy."""
    if not joined(control):
        _kubeadm(control, version, ["init", "--config", str(init_config_file(control, version))], "init", 300)
    etc = bind_source(control, "/etc/kubernetes")
    PKI.mkdir(parents=True, exist_ok=True)
    for f in ("ca.crt", "ca.key"):
        if not (PKI / f).exists() or (PKI / f).read_bytes() != (etc / "pki" / f).read_bytes():
            shutil.copy2(etc / "pki" / f, PKI / f)
            for stale in ("admin", "kube-proxy"):
                (PKI / f"{stale}.crt").unlink(missing_ok=True)
    shutil.copy2(etc / "admin.conf", ADMIN_KUBECONFIG)
    ADMIN_KUBECONFIG.chmod(0o600)
    server = f"https://{control.ip}:{net.API_PORT}"
    pki.ensure_cert(PKI, "admin", "clusterproof-testbed-admin", ("system:masters",))
    pki.ensure_cert(PKI, "kube-proxy", "system:kube-proxy")
    pki.write_kubeconfig(STATE / "kube-proxy.conf", PKI, "kube-proxy", server, "system:kube-proxy")


def join(workers: list[net.Node], control: net.Node, version: str) -> None:
    """kubeadm join on every worker that has not joined (at once)."""
    todo = [n for n in workers if not joined(n)]

    def one(node: net.Node) -> None:
        cfg = node_dir(node) / "kubeadm-join.yaml"
        cfg.write_text(join_config(node, control, PKI / "ca.crt"))
        _kubeadm(node, version, ["join", "--config", str(cfg)], "join", 300)

    if todo:
        with ThreadPoolExecutor(len(todo)) as pool:
            list(pool.map(one, todo))


def untaint_single(control: net.Node) -> None:
    """One node: remove the control-plane taint, as the course does for a one-machine cluster."""
    r = kubectl("taint", "nodes", control.name, "node-role.kubernetes.io/control-plane:NoSchedule-", check=False)
    if r.returncode != 0 and "not found" not in r.stderr:
        raise TestbedError(f"removing the control-plane taint from {control.name}: {r.stderr.strip()[:300]}", code=6)


def static_pods_not_ready(control: net.Node) -> list[str]:
    """The control-plane static pods on CONTROL that are not Running and Ready (all when they cannot be read)."""
    r = kubectl("-n", "kube-system", "get", "pods", "-o", "json", check=False)
    want = [f"{c}-{control.name}" for c in CONTROL_PLANE]
    if r.returncode != 0:
        return want
    ready = {pod["metadata"]["name"] for pod in json.loads(r.stdout).get("items", []) if pod_ready(pod)}
    return [p for p in want if p not in ready]


def wait_static_pods(control: net.Node) -> None:
    wait("the control-plane static pods Running and Ready", lambda: not static_pods_not_ready(control), 120, 1)

