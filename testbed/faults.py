"""Break and heal parts of the testbed, for the project's own tests.

Every fault is recorded in the state folder so `heal` (or the next `up`) restores it. A fault only
touches node processes, node files and the API, through `node`, `kube` and `state`; it never needs
`up` or `status`, which import this module (for the record of active faults).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import configs, images, kube_router, net, proc
from .controlplane import SHUTDOWN_DELAY, start_apiserver, start_controller_manager, start_scheduler
from .errors import TestbedError
from .kube import (
    CONTROL_LEASES,
    apiserver_ready,
    coredns_available,
    http_ok,
    https_get,
    kubectl,
    lease_holder,
    node_pod_cidrs,
    runtime_known,
    wait,
)
from .node import node_exec, start_containerd, start_gpu_plugin, start_kube_proxy, start_kubelet, write_cni
from .paths import STATE, bin_dir
from .state import (
    PKI,
    api_server_url,
    bind_source,
    bootstrap_mode,
    cni_mode,
    containerd_address,
    current_version,
    find_node,
    node_dir,
    nodes,
)

FILE = STATE / "faults.json"
TAINT = "clusterproof.io/fault"
SWAP_LINE = "/swap.img none swap sw 0 0  # clusterproof fault\n"

# A step gets the node (None for a cluster-wide fault) and --value (inject) or what inject returned (heal).
Step = Callable[[Any, str | None], str | None]


@dataclass(frozen=True)
class FaultInfo:
    """A fault the testbed knows, as `fault list` shows it."""

    name: str
    description: str


@dataclass(frozen=True)
class ActiveFault:
    """A fault injected and not healed yet; node is None for a cluster-wide one."""

    name: str
    node: str | None


@dataclass(frozen=True)
class _Fault:
    description: str
    inject: Step
    heal: Step
    # node: one node (the first without --node); last-node: the last without --node (the GPU node);
    # all-nodes: every node without --node; cluster: no node at all.
    scope: Literal["node", "last-node", "all-nodes", "cluster"] = "node"


def _record() -> list[dict[str, Any]]:
    try:
        entries: list[dict[str, Any]] = json.loads(FILE.read_text())
    except (OSError, ValueError):
        return []
    return entries


def _save(entries: list[dict[str, Any]]) -> None:
    if STATE.exists():
        FILE.write_text(json.dumps(entries, indent=1))


def active() -> list[ActiveFault]:
    """The faults injected and not healed, in the order they were injected."""
    return [ActiveFault(e["name"], e.get("node")) for e in _record()]


# ------------------------------------------------------------ the faults

def _runtime_stop(node: net.Node, value: str | None) -> None:
    proc.stop(f"{node.name}-containerd", timeout=10)


def _runtime_start(node: net.Node, saved: str | None) -> None:
    start_containerd(node)
    _wait_runtime_reported(node)


def _restart_containerd(node: net.Node) -> None:
    proc.stop(f"{node.name}-containerd", timeout=10)
    start_containerd(node)
    _wait_runtime_reported(node)


def _wait_runtime_reported(node: net.Node) -> None:
    """Until the node's status names its runtime's version again. A kubelet status update that ran while containerd
    was down wrote `containerd://Unknown` (its Version call failed); the next one, up to 10 s later, corrects it.
    Any such write was sent before containerd answered again, so one second after, the node shows which it is."""
    time.sleep(1)
    wait(f"{node.name} to report its runtime's version",
         lambda: runtime_known(_node_field(node, "{.status.nodeInfo.containerRuntimeVersion}")), 60, 1)


def _control_stop(component: str) -> Callable[[None, str | None], str | None]:
    """Stop COMPONENT; the saved value is the holder of its Lease then (the stopped process)."""
    def stop(node: None, value: str | None) -> str | None:
        holder = lease_holder(component)
        proc.stop(component, timeout=10)
        return holder
    return stop


def _control_start(component: str, starter: Callable[[str], None]) -> Callable[[None, str | None], None]:
    def start(node: None, saved: str | None) -> None:
        starter(current_version())
        # a restarted component takes its Lease over once the stopped one's 15 s have passed, then renews it: healed
        # when a holder other than the stopped process renews it (the old one's Lease stays fresh for up to 15 s)
        wait(f"{component} to lead again (kube-system Lease {component} renewed by a new holder)",
             lambda: lease_holder(component) not in (None, saved), 90, 1, logs=(component,))
    return start


def _runtime_freeze(node: net.Node, value: str | None) -> None:
    """A hung runtime: the socket is there, nothing answers on it (containers keep running in their shims)."""
    pid = proc.pid_of(f"{node.name}-containerd")
    if pid is None:
        raise TestbedError(f"containerd is not running on {node.name}", code=6)
    os.kill(pid, signal.SIGSTOP)


def _runtime_thaw(node: net.Node, saved: str | None) -> None:
    pid = proc.pid_of(f"{node.name}-containerd")
    if pid is not None:
        os.kill(pid, signal.SIGCONT)


def _socket_remove(node: net.Node, value: str | None) -> None:
    (bind_source(node, "/run/containerd") / "containerd.sock").unlink(missing_ok=True)


def _socket_restore(node: net.Node, saved: str | None) -> None:
    _restart_containerd(node)


def _kube_proxy_stop(node: net.Node, value: str | None) -> None:
    proc.stop(f"{node.name}-kube-proxy", timeout=10)
    # A stopped kube-proxy on a fresh node means no Service rules at all: remove what it left.
    exe = bin_dir(current_version()) / "kube-proxy"
    subprocess.run([*node_exec(node), str(exe), "--cleanup"], capture_output=True, timeout=60, check=False)


def _kube_proxy_start(node: net.Node, saved: str | None) -> None:
    start_kube_proxy(node, current_version())
    wait(f"kube-proxy on {node.name}", lambda: http_ok(f"http://{node.ip}:10256/healthz"), 30)


def _coredns_zero(node: None, value: str | None) -> str:
    r = kubectl("-n", "kube-system", "get", "deploy", "coredns", "-o", "jsonpath={.spec.replicas}")
    kubectl("-n", "kube-system", "scale", "deploy", "coredns", "--replicas=0")
    return r.stdout.strip() or "2"


def _coredns_restore(node: None, saved: str | None) -> None:
    kubectl("-n", "kube-system", "scale", "deploy", "coredns", f"--replicas={saved or 2}")
    wait("CoreDNS available", coredns_available, 90, 1)


def _take(path: Path) -> str | None:
    """Remove a node file; its text (None if there was none) is what the heal writes back."""
    text = path.read_text() if path.exists() else None
    path.unlink(missing_ok=True)
    return text


def _cni_conf(node: net.Node) -> Path:
    """The CNI config file the node's runtime loads: kube-router's (its init container installs it) or the bridge's."""
    name = kube_router.CONF_NAME if cni_mode() == "kube-router" else configs.BRIDGE_CONF
    return bind_source(node, "/etc/cni/net.d") / name


def _cni_remove(node: net.Node, value: str | None) -> str | None:
    return _take(_cni_conf(node))


def _cni_restore(node: net.Node, saved: str | None) -> None:
    if saved:
        _cni_conf(node).write_text(saved)
    elif cni_mode() == "bridge":
        write_cni(node, node_pod_cidrs()[node.name])
    else:  # a new kube-router pod installs the template again and fills in the node's podCIDR
        _restart_kube_router(node)


def _kube_router_pod(node: net.Node) -> str | None:
    r = kubectl("-n", kube_router.NAMESPACE, "get", "pods", "-l", "k8s-app=kube-router", "--field-selector",
                f"spec.nodeName={node.name}", "-o", "jsonpath={.items[*].metadata.name}", check=False)
    names = r.stdout.split() if r.returncode == 0 else []
    return names[0] if names else None


def _restart_kube_router(node: net.Node) -> None:
    pod = _kube_router_pod(node)
    if pod:
        kubectl("-n", kube_router.NAMESPACE, "delete", "pod", pod, "--wait=false")
    wait(f"kube-router ready on {node.name}",
         lambda: node.name in kube_router.ready_nodes() and _kube_router_pod(node) not in (None, pod), 120, 1)


def _needs_kube_router() -> None:
    if cni_mode() != "kube-router":
        raise TestbedError(f"this fault needs the kube-router CNI; the testbed runs {cni_mode()} "
                           "(python -m testbed up --cni kube-router)", code=2)


def _kube_router_stop(node: net.Node, value: str | None) -> None:
    """kube-router gone from one node: its image removed there and its pod deleted, so the DaemonSet's replacement
    cannot start (ErrImageNeverPull), as an agent whose image a node cannot pull."""
    _needs_kube_router()
    subprocess.run(["ctr", "-n", "k8s.io", "--address", containerd_address(node), "images", "rm", kube_router.IMAGE],
                   capture_output=True, check=False, timeout=60)
    pod = _kube_router_pod(node)
    if pod:
        kubectl("-n", kube_router.NAMESPACE, "delete", "pod", pod, "--grace-period=5")
    wait(f"kube-router's replacement pod on {node.name} failing to start",
         lambda: _kube_router_pod(node) not in (None, pod) and node.name not in kube_router.ready_nodes(), 60, 1)


def _kube_router_start(node: net.Node, saved: str | None) -> None:
    from .node import extra_images

    tars = extra_images(current_version(), echo=lambda *_: None)
    images.import_images(containerd_address(node), {kube_router.IMAGE: tars[kube_router.IMAGE]})
    _restart_kube_router(node)


def _kube_router_no_policy(node: None, value: str | None) -> None:
    """kube-router runs with its firewall (the NetworkPolicy controller) off: policies are accepted by the API and
    never enforced, while the CNI still claims policy support."""
    _needs_kube_router()
    args = tuple(a for a in kube_router.ARGS if not a.startswith("--run-firewall=")) + ("--run-firewall=false",)
    kube_router.deploy(args)
    _wait_kube_router_rollout()


def _kube_router_policy_restore(node: None, saved: str | None) -> None:
    kube_router.deploy()
    _wait_kube_router_rollout()


def _wait_kube_router_rollout() -> None:
    kubectl("-n", kube_router.NAMESPACE, "rollout", "status", f"daemonset/{kube_router.NAME}", "--timeout=120s",
            timeout=130)
    names = [n.name for n in nodes()]
    wait("kube-router ready on every node", lambda: not kube_router.not_ready(names), 60, 1)


def _sysctl_set(node: net.Node, value: str | None) -> str:
    """Set the sysctl and keep it set: a pod's CNI ADD turns net.ipv4.ip_forward back on (the bridge plugin with
    isGateway), so a one-off write would heal itself at the next pod; a holder re-applies it every 0.2 s, as an
    agent that keeps breaking the node would."""
    if not value or "=" not in value:
        raise TestbedError("the sysctl fault needs --value key=value, e.g. net.ipv4.ip_forward=0", code=2)
    key, val = (x.strip() for x in value.split("=", 1))
    old = net.in_ns(node, "sysctl", "-n", key).stdout.strip()
    net.in_ns(node, "sysctl", "-qw", f"{key}={val}")
    path = "/proc/sys/" + key.replace(".", "/")
    proc.start(_holder(node, key), [*node_exec(node), "sh", "-c",
                               f"while :; do echo {shlex.quote(val)} > {shlex.quote(path)}; sleep 0.2; done"])
    return f"{key}={old}"


def _holder(node: net.Node, key: str) -> str:
    return f"{node.name}-sysctl-{key}"


def _sysctl_restore(node: net.Node, saved: str | None) -> None:
    if saved:
        proc.stop(_holder(node, saved.split("=", 1)[0]), timeout=5)
        net.in_ns(node, "sysctl", "-qw", saved)


def _persist_remove(node: net.Node, value: str | None) -> str | None:
    return _take(bind_source(node, "/etc/sysctl.d") / "99-kubernetes.conf")


def _persist_restore(node: net.Node, saved: str | None) -> None:
    (bind_source(node, "/etc/sysctl.d") / "99-kubernetes.conf").write_text(saved or configs.SYSCTL_CONF)


def _fstab_swap(node: net.Node, value: str | None) -> None:
    f = bind_source(node, "/etc/fstab")
    f.write_text(f.read_text() + SWAP_LINE)


def _fstab_restore(node: net.Node, saved: str | None) -> None:
    f = bind_source(node, "/etc/fstab")
    f.write_text(f.read_text().replace(SWAP_LINE, ""))


def _taint(node: net.Node, value: str | None) -> None:
    kubectl("taint", "nodes", node.name, f"{TAINT}=true:NoSchedule", "--overwrite")


def _untaint(node: net.Node, saved: str | None) -> None:
    kubectl("taint", "nodes", node.name, f"{TAINT}:NoSchedule-", check=False)


def _gpu_stop(node: net.Node, value: str | None) -> None:
    proc.stop(f"{node.name}-gpu-plugin", timeout=10)


def _gpu_start(node: net.Node, saved: str | None) -> None:
    start_gpu_plugin(node)


# ------------------------------------------------------------ host, kubelet and cluster-config faults

_GPU_ALLOCATABLE = "{.status.allocatable.nvidia\\.com/gpu}"


def _restart_kubelet(node: net.Node, exe: Any = None, extra: tuple[str, ...] = ()) -> None:
    """Restart the node's kubelet and wait for its steady state: healthy, and the device plugins registered
    again (a restarted kubelet advertises no GPU until its plugins re-register and the next status update)."""
    import datetime as dt

    gpus = _node_field(node, _GPU_ALLOCATABLE)
    proc.stop(f"{node.name}-kubelet", timeout=15)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start_kubelet(node, current_version(), exe, extra)
    wait(f"kubelet on {node.name}", lambda: http_ok(f"http://{node.ip}:10248/healthz"), 60,
         logs=(f"{node.name}-kubelet",))

    def reported() -> bool:  # a status written by the new kubelet, showing the GPUs it had before
        beat = _node_field(node, '{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
        fresh = bool(beat) and dt.datetime.fromisoformat(beat.replace("Z", "+00:00")) > started
        return fresh and (gpus in ("", "0") or _node_field(node, _GPU_ALLOCATABLE) == gpus)

    wait(f"{node.name}'s status from the restarted kubelet", reported, 60, 1)


def _node_field(node: net.Node, jsonpath: str) -> str:
    return kubectl("get", "node", node.name, "-o", f"jsonpath={jsonpath}", check=False).stdout.strip()


def _wait_node_field(node: net.Node, jsonpath: str, want: str, timeout: float = 90) -> None:
    wait(f"{node.name} {jsonpath} = {want}", lambda: _node_field(node, jsonpath) == want, timeout, 1)


def _swap_on(node: None, value: str | None) -> None:
    """Real swap: a swap file on the machine's kernel, so every node (one kernel) has swap on."""
    img = STATE / "fault-swap.img"
    subprocess.run(["swapoff", str(img)], capture_output=True, check=False)
    img.unlink(missing_ok=True)
    with img.open("wb") as fh:  # written out: swapon refuses a sparse file
        for _ in range(32):
            fh.write(bytes(1 << 20))
    img.chmod(0o600)
    for cmd in (["mkswap", str(img)], ["swapon", str(img)]):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise TestbedError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}", code=6)


def _swap_off(node: None, saved: str | None) -> None:
    img = STATE / "fault-swap.img"
    subprocess.run(["swapoff", str(img)], capture_output=True, check=False)
    img.unlink(missing_ok=True)


def _modules_load_remove(node: net.Node, value: str | None) -> str | None:
    return _take(bind_source(node, "/etc/modules-load.d") / "k8s.conf")


def _modules_load_restore(node: net.Node, saved: str | None) -> None:
    (bind_source(node, "/etc/modules-load.d") / "k8s.conf").write_text(saved or configs.MODULES_CONF)


# What the node must not see for br_netfilter to look unloaded: the nodes share the machine's kernel, so the
# module cannot be unloaded for one node; its traces are covered in that node's mount namespace instead.
_MODULE_TRACES = ("/proc/modules", "/sys/module/br_netfilter", "/proc/sys/net/bridge")


def _module_hide(node: net.Node, value: str | None) -> None:
    hide = node_dir(node) / "fault-module-hide"
    (hide / "empty").mkdir(parents=True, exist_ok=True)
    modules = Path("/proc/modules")
    mods = [ln for ln in (modules.read_text().splitlines() if modules.exists() else [])
            if not ln.startswith("br_netfilter ")]
    (hide / "modules").write_text("".join(ln + "\n" for ln in mods))
    for target in _MODULE_TRACES:
        src = hide / ("modules" if target == "/proc/modules" else "empty")
        if subprocess.run([*node_exec(node), "test", "-e", target], check=False).returncode != 0:
            continue
        r = subprocess.run([*node_exec(node), "mount", "--bind", "-o", "ro", str(src), target],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise TestbedError(f"hiding {target} on {node.name}: {r.stderr.strip()}", code=6)


def _module_show(node: net.Node, saved: str | None) -> None:
    for target in _MODULE_TRACES:
        while subprocess.run([*node_exec(node), "umount", target], capture_output=True, check=False).returncode == 0:
            pass


def _tool_hide(node: net.Node, value: str | None) -> str:
    """Cover one binary kubeadm requires (nsenter unless --value names another) with an empty, non-executable file."""
    tool = value or "nsenter"
    r = subprocess.run([*node_exec(node), "sh", "-c", f"command -v {shlex.quote(tool)}"], capture_output=True,
                       text=True, check=False)
    path = r.stdout.strip()
    if r.returncode != 0 or not path.startswith("/"):
        raise TestbedError(f"{tool} is not on {node.name}'s PATH", code=2)
    empty = node_dir(node) / "fault-empty-file"
    empty.write_text("")
    empty.chmod(0o644)
    r = subprocess.run([*node_exec(node), "mount", "--bind", str(empty), path], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        raise TestbedError(f"covering {path} on {node.name}: {r.stderr.strip()}", code=6)
    return path


def _tool_show(node: net.Node, saved: str | None) -> None:
    if saved:
        subprocess.run([*node_exec(node), "umount", saved], capture_output=True, check=False)


def _kubelet_port(node: net.Node, value: str | None) -> None:
    """The kubelet moved off 10250 (--port): the node stays Ready, the API server follows its new port."""
    port = value or "10350"
    if not port.isdigit():
        raise TestbedError(f"the kubelet-port fault needs a port number, not {port!r}", code=2)
    _restart_kubelet(node, extra=(f"--port={port}",))
    _wait_node_field(node, "{.status.daemonEndpoints.kubeletEndpoint.Port}", port)


def _kubelet_default(node: net.Node, saved: str | None) -> None:
    _restart_kubelet(node)


def _kubelet_version(node: net.Node, value: str | None) -> None:
    """A kubelet ahead of its control plane, as after upgrading a node's packages first: this release's kubelet
    linked with the version stamp --value (v1.36.0 unless given)."""
    from .build import stamped_kubelet
    from .paths import CACHE

    stamp = value or "v1.36.0"
    exe = stamped_kubelet(current_version(), stamp, CACHE / "logs" / f"build-{current_version()}.log")
    _restart_kubelet(node, exe=exe)
    _wait_node_field(node, "{.status.nodeInfo.kubeletVersion}", stamp)


def _kubelet_version_restore(node: net.Node, saved: str | None) -> None:
    _restart_kubelet(node)
    _wait_node_field(node, "{.status.nodeInfo.kubeletVersion}", current_version())


def _memory_pressure(node: net.Node, value: str | None) -> None:
    """MemoryPressure=True with nothing evicted: a soft eviction threshold every node meets, with a day's grace.
    (The kubelet reports a pressure condition as soon as a threshold is met; it evicts only after the grace.)"""
    _restart_kubelet(node, extra=("--eviction-soft=memory.available<1000Ti",
                                  "--eviction-soft-grace-period=memory.available=24h"))
    _wait_node_field(node, '{.status.conditions[?(@.type=="MemoryPressure")].status}', "True")


def _memory_pressure_heal(node: net.Node, saved: str | None) -> None:
    _restart_kubelet(node)
    _wait_node_field(node, '{.status.conditions[?(@.type=="MemoryPressure")].status}', "False")
    wait(f"memory-pressure taint off {node.name}",
         lambda: "memory-pressure" not in _node_field(node, "{.spec.taints}"), 60, 1)


_KUBEADM_CONFIG = """apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
networking:
  podSubnet: {subnet}
  serviceSubnet: {services}
"""


def _kubeadm_config_cidr(node: None, value: str | None) -> str:
    """kube-system/kubeadm-config naming a podSubnet the nodes' ranges are not in (--value, 198.19.128.0/18)."""
    subnet = value or "198.19.128.0/18"
    old = kubectl("-n", "kube-system", "get", "configmap", "kubeadm-config", "-o", "json", check=False)
    if old.returncode == 0:
        raise TestbedError("kube-system/kubeadm-config exists; this fault only creates one", code=6)
    text = _KUBEADM_CONFIG.format(version=current_version(), subnet=subnet, services=net.SERVICE_CIDR)
    kubectl("-n", "kube-system", "create", "configmap", "kubeadm-config", f"--from-literal=ClusterConfiguration={text}")
    return "created"


def _kubeadm_config_delete(node: None, saved: str | None) -> None:
    kubectl("-n", "kube-system", "delete", "configmap", "kubeadm-config", "--ignore-not-found")


FAULT_NS = "tb-fault"
_OUTSIDE_CONF = "00-fault-outside.conflist"


def _pod_outside_cidr(node: net.Node, value: str | None) -> str:
    """A pod whose IP lies outside the pod CIDR, as a node whose IPAM range was wrong when it started leaves one:
    a CNI config with another range is put first on the node, a pod started there, the config removed again."""
    subnet = value or "198.19.100.0/24"
    conf = bind_source(node, "/etc/cni/net.d") / _OUTSIDE_CONF
    conf.write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "tb-fault-outside",
        "plugins": [{"type": "bridge", "bridge": "cni-fault", "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]}}]}))
    try:
        kubectl("create", "namespace", FAULT_NS, check=False)
        ip = ""
        for _ in range(10):
            time.sleep(2)  # containerd reloads /etc/cni/net.d on change
            pod = json.dumps({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": "outside-cidr", "namespace": FAULT_NS},
                              "spec": {"nodeName": node.name, "terminationGracePeriodSeconds": 0,
                                       "containers": [{"name": "pause", "image": configs.PAUSE_IMAGE,
                                                       "imagePullPolicy": "Never"}]}})
            kubectl("apply", "-f", "-", input=pod)
            wait("the outside-cidr pod's IP", lambda: bool(kubectl(
                "-n", FAULT_NS, "get", "pod", "outside-cidr", "-o", "jsonpath={.status.podIP}").stdout.strip()), 60, 1)
            ip = kubectl("-n", FAULT_NS, "get", "pod", "outside-cidr", "-o", "jsonpath={.status.podIP}").stdout.strip()
            if ip.startswith(subnet.rsplit(".", 1)[0] + "."):
                break
            kubectl("-n", FAULT_NS, "delete", "pod", "outside-cidr", "--wait=true")
        else:
            raise TestbedError(f"{node.name}'s runtime never used the outside range {subnet} (last IP {ip})", code=6)
    finally:
        conf.unlink(missing_ok=True)
    return subnet


def _pod_outside_heal(node: net.Node, saved: str | None) -> None:
    kubectl("delete", "namespace", FAULT_NS, "--ignore-not-found", "--wait=true", timeout=120)
    (bind_source(node, "/etc/cni/net.d") / _OUTSIDE_CONF).unlink(missing_ok=True)
    net.in_ns(node, "ip", "link", "del", "cni-fault", check=False)
    ipam = bind_source(node, "/var/lib/cni") / "networks" / "tb-fault-outside"
    if ipam.is_dir():
        for f in ipam.iterdir():
            f.unlink()
        ipam.rmdir()


def _app_image_remove(node: net.Node, value: str | None) -> None:
    """The course app's image missing from the node (never imported, or garbage-collected): its pods cannot start."""
    from .images import HELLO

    subprocess.run(["ctr", "-n", "k8s.io", "--address", containerd_address(node), "images", "rm", HELLO],
                   capture_output=True, check=False, timeout=60)


def _app_image_restore(node: net.Node, saved: str | None) -> None:
    from . import images

    tars = images.build_images(bin_dir(current_version()), echo=lambda *_: None)
    images.import_images(containerd_address(node), {images.HELLO: tars[images.HELLO]})


_CRI_ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket"


def _annotate_cri_socket(node: net.Node, endpoint: str) -> str:
    """Point the node's kubeadm cri-socket annotation at ENDPOINT; returns what it named before ('' for nothing)."""
    old = _node_field(node, "{.metadata.annotations.kubeadm\\.alpha\\.kubernetes\\.io/cri-socket}")
    kubectl("annotate", "node", node.name, "--overwrite", f"{_CRI_ANNOTATION}={endpoint}")
    return old


def _cri_socket_dockershim(node: net.Node, value: str | None) -> str:
    """kubeadm's cri-socket annotation still naming dockershim, as a cluster upgraded past 1.24 without fixing it
    keeps it (kubeadm upgrade and join read it)."""
    return _annotate_cri_socket(node, value or "unix:///var/run/dockershim.sock")


def _cri_socket_restore(node: net.Node, saved: str | None) -> None:
    if saved:
        kubectl("annotate", "node", node.name, "--overwrite", f"{_CRI_ANNOTATION}={saved}")
    else:
        kubectl("annotate", "node", node.name, f"{_CRI_ANNOTATION}-", check=False)


# A runc in front of the real one that drops the pod's namespaces (--value: ipc,pid or uts) from every app
# container's spec before creating it: a runtime that breaks the pod model, the way a custom OCI runtime can.
_RUNC_UNSHARE = """#!/usr/bin/python3
import json, os, sys
KINDS = set({kinds!r})
args = sys.argv[1:]
if "create" in args or "run" in args:
    bundle = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--bundle", "-b")), ".")
    path = os.path.join(bundle, "config.json")
    with open(path) as fh:
        spec = json.load(fh)
    if spec.get("annotations", {{}}).get("io.kubernetes.cri.container-type") == "container":
        for ns in spec.get("linux", {{}}).get("namespaces", []):
            if ns.get("type") in KINDS:
                ns.pop("path", None)
        with open(path, "w") as fh:
            json.dump(spec, fh)
os.execv({runc!r}, ["runc", *args])
"""


def _runtime_unshare(node: net.Node, value: str | None) -> str:
    import shutil

    kinds = [k.strip() for k in (value or "ipc,pid").split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("ipc", "pid", "uts")]
    if bad or not kinds:
        raise TestbedError(f"runtime-unshare takes ipc, pid and/or uts, not {value!r}", code=2)
    runc = shutil.which("runc")
    if runc is None:
        raise TestbedError("runc is not on PATH", code=6)
    wrapper = node_dir(node) / "runc-unshare"
    wrapper.write_text(_RUNC_UNSHARE.format(kinds=sorted(kinds), runc=runc))
    wrapper.chmod(0o755)
    conf = node_dir(node) / "containerd.toml"
    old = conf.read_text()
    table = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
    if table not in old:
        raise TestbedError(f"{conf} has no runc runtime table", code=6)
    conf.write_text(old.rstrip("\n") + f'\n{table[:-1]}.options]\n  BinaryName = "{wrapper}"\n')
    _restart_containerd(node)
    return old


def _runtime_unshare_heal(node: net.Node, saved: str | None) -> None:
    if saved:
        (node_dir(node) / "containerd.toml").write_text(saved)
    _restart_containerd(node)
    (node_dir(node) / "runc-unshare").unlink(missing_ok=True)


# ------------------------------------------------------------ what kubeadm preflight warns about (HOST-011..014)

def _hosts_without_name(node: net.Node, value: str | None) -> None:
    """The node's own name gone from what it resolves: an /etc/hosts without it bound over the node's one (the
    machine's DNS does not know the testbed's names either), as on a node installed without a hosts entry."""
    from .node import node_hosts

    fake = node_dir(node) / "fault-hosts"
    fake.write_text(node_hosts(node, with_name=False))
    r = subprocess.run([*node_exec(node), "mount", "--bind", "-o", "ro", str(fake), "/etc/hosts"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise TestbedError(f"covering /etc/hosts on {node.name}: {r.stderr.strip()}", code=6)


def _hosts_restore(node: net.Node, saved: str | None) -> None:
    from .node import holder_pid

    pid = holder_pid(node)
    if pid is None:
        return  # the node is down: its mount namespace, and the bind with it, are gone
    # Only the fault's own bind comes off: the node's /etc/hosts bind stays under it.
    if "fault-hosts" in Path(f"/proc/{pid}/mountinfo").read_text():
        subprocess.run([*node_exec(node), "umount", "/etc/hosts"], capture_output=True, check=False)
    (node_dir(node) / "fault-hosts").unlink(missing_ok=True)


def _cgroup_driver_mismatch(node: net.Node, value: str | None) -> str:
    """containerd restarted with runc's SystemdCgroup = true while the kubelet keeps cgroupDriver: cgroupfs: the
    real mismatch. Running pods keep running (their shims stay); new pods on the node fail to start (runc: cgroupsPath
    not of the "slice:prefix:name" form), as they do on a real node with this mismatch."""
    conf = node_dir(node) / "containerd.toml"
    old = conf.read_text()
    conf.write_text(configs.containerd_toml(systemd_cgroup=True))
    _restart_containerd(node)
    return old


def _cgroup_driver_restore(node: net.Node, saved: str | None) -> None:
    (node_dir(node) / "containerd.toml").write_text(saved or configs.containerd_toml())
    _restart_containerd(node)


# The course app broken the way its users break it, applied with kubectl to whatever hello-python a suite run
# deploys (the checks create it in their own namespace): a watcher patches each one as soon as it appears.
_APP_PATCHES = {
    "selector": ("service", "hello-python-service",
                 '{"spec":{"selector":{"app":"hello-python-matches-nothing"}}}'),
    "unready": ("deployment", "hello-python",
                '{"spec":{"template":{"spec":{"containers":[{"name":"hello-python","readinessProbe":'
                '{"httpGet":{"path":"/clusterproof-never-ready","port":5000}}}]}}}}'),
}


def _app_watcher(kind: str) -> str:
    return f"app-fault-{kind}"


def _app_break(node: None, value: str | None) -> str:
    kind = value or "selector"
    if kind not in _APP_PATCHES:
        raise TestbedError(f"app-break takes {' or '.join(_APP_PATCHES)}, not {kind!r}", code=2)
    resource, name, patch = _APP_PATCHES[kind]
    exe = bin_dir(current_version()) / "kubectl"
    from .state import ADMIN_KUBECONFIG

    k = f"{shlex.quote(str(exe))} --kubeconfig {shlex.quote(str(ADMIN_KUBECONFIG))}"
    mark = f"clusterproof.io/testbed-fault={kind}"
    # Every 0.3 s: each suite-owned namespace's object not yet marked gets the patch and the mark.
    script = (f"while :; do for ns in $({k} get {resource} -A -l clusterproof.io/owned=true,"
              f"'!clusterproof.io/testbed-fault' --field-selector metadata.name={name} "
              "-o jsonpath='{.items[*].metadata.namespace}' 2>/dev/null); do "
              f"{k} -n $ns patch {resource} {name} -p {shlex.quote(patch)} >/dev/null 2>&1 && "
              f"{k} -n $ns label {resource} {name} {mark} >/dev/null 2>&1; done; sleep 0.3; done")
    proc.start(_app_watcher(kind), ["sh", "-c", script])
    return kind


def _app_heal(node: None, saved: str | None) -> None:
    proc.stop(_app_watcher(saved or "selector"), timeout=5)


_OTHER_CONFIG = """version = 3
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{pause}"
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = "/etc/cni/net.d"
"""


def _runtime_second(node: net.Node, value: str | None) -> str:
    """Two runtimes on the node: a second containerd (another version, built from its module) that the kubelet does
    not use, and kubeadm's cri-socket annotation naming it: what is checked is not what runs the pods."""
    from .build import second_containerd
    from .paths import CACHE

    exe = second_containerd(CACHE / "logs" / "build-containerd.log")
    d = node_dir(node) / "cri-other"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.toml").write_text(_OTHER_CONFIG.format(d=d, pause=configs.PAUSE_IMAGE))
    sock = d / "containerd.sock"
    proc.start(f"{node.name}-containerd-other", [*node_exec(node), str(exe), "--config", str(d / "config.toml")])
    wait(f"the second containerd on {node.name}", lambda: sock.is_socket() and subprocess.run(
        ["ctr", "--address", str(sock), "version"], capture_output=True, timeout=5).returncode == 0, 30,
        logs=(f"{node.name}-containerd-other",))
    return _annotate_cri_socket(node, f"unix://{sock}")


def _runtime_second_heal(node: net.Node, saved: str | None) -> None:
    import shutil

    _cri_socket_restore(node, saved)
    proc.stop(f"{node.name}-containerd-other", timeout=10)
    d = node_dir(node) / "cri-other"
    for mnt in reversed(Path("/proc/mounts").read_text().splitlines()):
        target = mnt.split()[1]
        if target.startswith(str(d) + "/"):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------ the API server's health and the certificates (CP-003/4)

# A resource kept in an etcd of its own (as clusters keep events apart) whose etcd is down. The resource is one no API
# group serves: the API server refuses to start when a group it serves cannot reach its etcd, so a served one could
# not show the state this fault is for (served, every other resource working, the health checks failing).
OVERRIDE = "clusterproof.io/archived#http://127.0.0.1:2399"
OVERRIDE_CHECKS = ("etcd-override-0", "etcd-override-readiness-0")
CERT_DAYS_LEFT = 10


def _restart_apiserver(extra: tuple[str, ...] = (), ready: str = "/readyz", settle: bool = True) -> None:
    """Restart the API server (extra flags, waited on until READY answers), then (SETTLE) wait for the scheduler and
    the controller manager to lead again (either one that lost its Lease while the API server was away exits, and is
    started again here) and restart CoreDNS."""
    version = current_version()
    # SIGKILL, not SIGTERM: a terminating API server first takes itself out of the kubernetes Service's endpoints
    # (its pre-shutdown hook) and then drains for up to 15 s; the one started next, at the same address, puts them
    # back, but kube-proxy's watch has to reconnect (with a backoff) to see that, and until it does every
    # in-cluster client (CoreDNS, kube-router) is refused: measured, CoreDNS's restart below took 77 s, not 2 s
    pid = proc.pid_of("kube-apiserver")
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    proc.stop("kube-apiserver", timeout=15)
    start_apiserver(version, extra, ready)
    if not settle:
        return

    def leading() -> bool:
        start_controller_manager(version)
        start_scheduler(version)
        return all(lease_holder(n) is not None for n in CONTROL_LEASES)

    wait("the scheduler and the controller manager to lead after the API server's restart", leading, 90, 1,
         logs=CONTROL_LEASES)
    # CoreDNS's watch reconnects with a backoff: measured on the testbed, a Service made after the restart answered
    # NXDOMAIN for 34 s (APP-003's DNS probes failed under these faults). New CoreDNS pods list afresh.
    kubectl("-n", "kube-system", "rollout", "restart", "deployment/coredns")
    kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s", timeout=150)


def _etcd_override_down(node: None, value: str | None) -> None:
    """--etcd-servers-overrides sends one resource group to an etcd that is down: every other resource is served,
    /readyz and /livez (and /healthz) fail on that etcd's checks. Not settled: a controller manager that lost its
    Lease during the restart starts again only to wait 10 s for /healthz and exit (kube-controller-manager's
    WaitForAPIServer), so nothing that needs it works under this fault; it is no matrix row (CP-003 names none)."""
    try:
        _restart_apiserver((f"--etcd-servers-overrides={value or OVERRIDE}",),
                           "/readyz?" + "&".join(f"exclude={c}" for c in OVERRIDE_CHECKS), settle=False)
    except TestbedError:
        _restart_apiserver()  # an override the API server refused: back to the testbed's flags
        raise


def _readyz_failing_on_shutdown() -> bool:
    status, body = https_get(f"{api_server_url()}/readyz?verbose")
    return status != 200 and "[-]shutdown" in body


# the default/kubernetes Service's endpoints, which a terminating API server takes itself out of
_KUBERNETES_ENDPOINTS = (("endpoints", "kubernetes"), ("endpointslices.discovery.k8s.io", "kubernetes"))


def _kubernetes_endpoints() -> list[dict]:
    out = []
    for kind, name in _KUBERNETES_ENDPOINTS:
        obj = json.loads(kubectl("-n", "default", "get", kind, name, "-o", "json").stdout)
        meta = obj["metadata"]
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            meta.pop(key, None)
        out.append(obj)
    return out


def _kubernetes_endpoints_empty() -> bool:
    obj = json.loads(kubectl("-n", "default", "get", "endpoints", "kubernetes", "-o", "json").stdout)
    return not any(s.get("addresses") for s in obj.get("subsets") or [])


def _apiserver_shutting_down(node: None, value: str | None) -> None:
    """The API server, which runs with --shutdown-delay-duration (controlplane.SHUTDOWN_DELAY; --value another, for
    which it is restarted first), sent SIGTERM: for the delay it keeps serving every request while /readyz fails on
    its shutdown check ([-]shutdown). The SIGTERM takes it out of the
    kubernetes Service's endpoints at once (its pre-shutdown hook); they are written back as they were, so this is
    a draining API server that its load balancer did not take out of service, which is what /readyz is for. /livez
    stays ok, in-cluster clients (kube-router, CoreDNS) keep their API and the scheduler and the controller manager
    lead throughout. The heal restarts it as the testbed runs it (SIGKILL, then started), which reconciles the
    endpoints itself."""
    pid = proc.pid_of("kube-apiserver")
    if pid is None:
        raise TestbedError("kube-apiserver is not running; run python -m testbed up", code=8)
    flag = f"--shutdown-delay-duration={int(float(value)) if value else SHUTDOWN_DELAY}s"
    if flag.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
        _restart_apiserver((flag,))   # an API server an older testbed started, or another delay (--value)
        pid = proc.pid_of("kube-apiserver")
        if pid is None:
            raise TestbedError("kube-apiserver is not running after its restart; see its log", code=6)
    endpoints = _kubernetes_endpoints()
    os.kill(pid, signal.SIGTERM)
    wait("the API server's /readyz to fail on its shutdown check", _readyz_failing_on_shutdown, 30, 0.5,
         logs=("kube-apiserver",))
    wait("the terminating API server to take itself out of the kubernetes Service", _kubernetes_endpoints_empty,
         30, 0.5)
    kubectl("replace", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": endpoints}))


def _apiserver_default(node: None, saved: str | None) -> None:
    _restart_apiserver()


def _apiserver_cert_expiring(node: None, value: str | None) -> str:
    """The API server's serving certificate re-issued by the testbed CA with CERT_DAYS_LEFT (--value) days left,
    same subject, key and SANs; returns the original certificate, which the heal writes back."""
    from . import pki

    crt = PKI / "apiserver.crt"
    original = crt.read_text()
    days = float(value) if value else CERT_DAYS_LEFT
    crt.write_bytes(pki.reissue(PKI, original.encode(), PKI / "apiserver.key", days_left=days))
    try:
        _restart_apiserver()
    except TestbedError:
        _apiserver_cert_restore(None, original)  # not recorded as injected: nothing else would put it back
        raise
    return original


def _apiserver_cert_restore(node: None, saved: str | None) -> None:
    if saved:
        (PKI / "apiserver.crt").write_text(saved)
    _restart_apiserver()


def _kubelet_cert_paths(node: net.Node) -> tuple[Path, Path]:
    pki_dir = bind_source(node, "/var/lib/kubelet") / "pki"
    return pki_dir / "clusterproof-fault-expired.crt", pki_dir / "clusterproof-fault-expired.key"


def _kubelet_cert_expired(node: net.Node, value: str | None) -> None:
    """The node's kubelet restarted serving a certificate (issued by the testbed CA for its name and IP) that expired
    a day ago (--value days ago). The API server does not verify kubelet serving certificates (no
    --kubelet-certificate-authority), so logs, exec and the node's status keep working."""
    from . import pki

    crt, key = _kubelet_cert_paths(node)
    crt.parent.mkdir(parents=True, exist_ok=True)
    ago = float(value) if value else 1.0
    cert_pem, key_pem = pki.issue_expired(PKI, node.name, (node.name, node.ip), ago_days=ago)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    crt.write_bytes(cert_pem)
    inside = "/var/lib/kubelet/pki/"
    _restart_kubelet(node, extra=(f"--tls-cert-file={inside}{crt.name}", f"--tls-private-key-file={inside}{key.name}"))


def _kubelet_cert_restore(node: net.Node, saved: str | None) -> None:
    _restart_kubelet(node)
    for path in _kubelet_cert_paths(node):
        path.unlink(missing_ok=True)


FAULTS: dict[str, _Fault] = {
    "runtime-stop": _Fault("stop containerd on a node", _runtime_stop, _runtime_start),
    "runtime-freeze": _Fault("freeze containerd on a node (SIGSTOP: its socket stays, nothing answers)",
                             _runtime_freeze, _runtime_thaw),
    "cri-socket-remove": _Fault("delete the CRI socket file (runtime keeps running)", _socket_remove,
                                _socket_restore),
    "kube-proxy-stop": _Fault("stop kube-proxy on a node and remove its rules", _kube_proxy_stop, _kube_proxy_start),
    "coredns-scale-zero": _Fault("scale CoreDNS to 0 replicas", _coredns_zero, _coredns_restore, "cluster"),
    "cni-config-remove": _Fault("remove the CNI config from a node", _cni_remove, _cni_restore),
    "sysctl": _Fault("set a sysctl in a node's namespace and keep it set (--value key=value)", _sysctl_set,
                     _sysctl_restore),
    "sysctl-persist-remove": _Fault("remove /etc/sysctl.d/99-kubernetes.conf", _persist_remove, _persist_restore),
    "fstab-swap": _Fault("add an active swap entry to a node's /etc/fstab", _fstab_swap, _fstab_restore),
    "taint": _Fault("taint a node NoSchedule (all nodes without --node)", _taint, _untaint, "all-nodes"),
    "gpu-plugin-stop": _Fault("stop the fake GPU device plugin", _gpu_stop, _gpu_start, "last-node"),
    "swap-on": _Fault("turn swap on (a swap file on the machine's one kernel: every node has swap)", _swap_on,
                      _swap_off, "cluster"),
    "modules-load-remove": _Fault("remove /etc/modules-load.d/k8s.conf (br_netfilter not loaded at boot)",
                                  _modules_load_remove, _modules_load_restore),
    "module-hide": _Fault("make br_netfilter look unloaded on a node (its /proc/modules, /sys/module and "
                          "/proc/sys/net/bridge covered in the node's mount namespace)", _module_hide, _module_show),
    "tool-hide": _Fault("cover a binary kubeadm requires with an empty file (--value, nsenter)", _tool_hide,
                        _tool_show),
    "kubelet-port": _Fault("restart a node's kubelet on another port (--value, 10350)", _kubelet_port,
                           _kubelet_default),
    "kubelet-version": _Fault("run a kubelet stamped with a newer version (--value, v1.36.0)", _kubelet_version,
                              _kubelet_version_restore),
    "memory-pressure": _Fault("a node reports MemoryPressure (a soft eviction threshold met, evicting nothing)",
                              _memory_pressure, _memory_pressure_heal),
    "kubeadm-config-cidr": _Fault("create kube-system/kubeadm-config with another podSubnet (--value)",
                                  _kubeadm_config_cidr, _kubeadm_config_delete, "cluster"),
    "pod-outside-cidr": _Fault("start a pod on a node with an IP outside the pod CIDR", _pod_outside_cidr,
                               _pod_outside_heal),
    "cri-socket-dockershim": _Fault("annotate a node's kubeadm cri-socket as dockershim (--value another socket)",
                                    _cri_socket_dockershim, _cri_socket_restore),
    "runtime-unshare": _Fault("containerd on a node creates app containers outside the pod's namespaces "
                              "(--value ipc,pid or uts; every node without --node)", _runtime_unshare,
                              _runtime_unshare_heal, "all-nodes"),
    "runtime-second": _Fault("run a second containerd (another version) on a node and point its kubeadm "
                             "cri-socket annotation at it", _runtime_second, _runtime_second_heal),
    "app-break": _Fault("break every hello-python a suite deploys, as it appears (--value selector: its Service "
                        "selects nothing; unready: its readiness probe path does not exist)", _app_break, _app_heal,
                        "cluster"),
    "app-image-remove": _Fault("remove the hello-python image from every node's containerd", _app_image_remove,
                               _app_image_restore, "all-nodes"),
    "hostname-unresolvable": _Fault("bind an /etc/hosts without the node's name over the node's (kubeadm's Hostname "
                                    "warning)", _hosts_without_name, _hosts_restore),
    "scheduler-stop": _Fault("stop kube-scheduler (new pods stay unscheduled; its Lease stops being renewed)",
                             _control_stop("kube-scheduler"), _control_start("kube-scheduler", start_scheduler),
                             "cluster"),
    "controller-manager-stop": _Fault("stop kube-controller-manager (no Deployment rolls out, no namespace finishes "
                                      "deleting; its Lease stops being renewed)",
                                      _control_stop("kube-controller-manager"),
                                      _control_start("kube-controller-manager", start_controller_manager),
                                      "cluster"),
    "kube-router-stop": _Fault("remove kube-router's image from a node and delete its pod there: the DaemonSet's "
                               "replacement cannot start (needs --cni kube-router)", _kube_router_stop,
                               _kube_router_start),
    "kube-router-no-policy": _Fault("run kube-router with --run-firewall=false: NetworkPolicies are accepted and not "
                                    "enforced (needs --cni kube-router)", _kube_router_no_policy,
                                    _kube_router_policy_restore, "cluster"),
    "cgroup-driver-mismatch": _Fault("restart a node's containerd with SystemdCgroup = true (the kubelet keeps "
                                     "cgroupfs): new pods there fail to start", _cgroup_driver_mismatch,
                                     _cgroup_driver_restore),
    "apiserver-etcd-override-down": _Fault("restart the API server with an --etcd-servers-overrides etcd that is "
                                          "down (--value GROUP/RESOURCE#URL): /readyz and /livez fail",
                                          _etcd_override_down, _apiserver_default, "cluster"),
    "apiserver-shutting-down": _Fault("restart the API server with --shutdown-delay-duration (--value seconds, 900) "
                                      "and SIGTERM it: it serves on, /readyz fails on [-]shutdown",
                                      _apiserver_shutting_down, _apiserver_default, "cluster"),
    "apiserver-cert-expiring": _Fault("re-issue the API server's serving certificate with 10 days left (--value days) "
                                      "and restart it", _apiserver_cert_expiring, _apiserver_cert_restore, "cluster"),
    "kubelet-cert-expired": _Fault("restart a node's kubelet serving a certificate that expired a day ago (--value "
                                   "days ago)", _kubelet_cert_expired, _kubelet_cert_restore),
}


def _get(name: str) -> _Fault:
    try:
        return FAULTS[name]
    except KeyError:
        raise TestbedError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}", code=2) from None


def info(name: str) -> FaultInfo:
    """The fault called NAME; raises TestbedError (code 2) for a name the testbed does not know."""
    return FaultInfo(name, _get(name).description)


def catalog() -> list[FaultInfo]:
    """Every fault the testbed knows, by name."""
    return [FaultInfo(name, f.description) for name, f in sorted(FAULTS.items())]


def _targets(fault: _Fault, node: str | None) -> list[net.Node | None]:
    if fault.scope == "cluster":
        return [None]
    if fault.scope == "all-nodes" and node in (None, "all"):
        return list(nodes())
    return [find_node(node, default_last=fault.scope == "last-node")]


# Faults made for the testbed whose components run as processes here (restarted with other flags, files of
# that layout); on a kubeadm testbed they would break it differently or not heal (python -m testbed up --bootstrap)
PROCESSES_ONLY = frozenset({
    "apiserver-cert-expiring", "apiserver-etcd-override-down", "apiserver-shutting-down", "cgroup-driver-mismatch",
    "controller-manager-stop", "scheduler-stop", "kubeadm-config-cidr", "kubelet-cert-expired", "kubelet-port",
    "kubelet-version", "memory-pressure", "runtime-second", "runtime-unshare", "cri-socket-remove",
    "cri-socket-dockershim", "hostname-unresolvable", "pod-outside-cidr"})


def inject(name: str, node: str | None = None, value: str | None = None) -> None:
    """Break one part of the testbed; recorded so heal() (or up) restores it. Injecting twice is a no-op."""
    fault = _get(name)
    if name in PROCESSES_ONLY and bootstrap_mode() == "kubeadm":
        raise TestbedError(f"fault {name} is made for the testbed of processes, not this kubeadm one; run it on "
                           "python -m testbed up --bootstrap processes", code=2)
    if not apiserver_ready():
        raise TestbedError("the testbed is not up; run python -m testbed up", code=8)
    entries = _record()
    for target in _targets(fault, node):
        tname = target.name if target else None
        if any(e["name"] == name and e.get("node") == tname for e in entries):
            continue
        saved = fault.inject(target, value)
        entries.append({"name": name, "node": tname, "saved": saved, "at": time.time()})
        _save(entries)


def heal(name: str | None = None, node: str | None = None) -> None:
    """Undo the fault NAME (every active fault without a name) on NODE (on all its targets without one)."""
    if name is not None:
        _get(name)
    keep = []
    for e in _record():
        if (name is None or e["name"] == name) and (node in (None, "all") or e.get("node") == node):
            target = find_node(e["node"]) if e.get("node") else None
            _get(e["name"]).heal(target, e.get("saved"))
        else:
            keep.append(e)
    _save(keep)
