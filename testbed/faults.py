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

from . import configs, net, proc
from .errors import TestbedError
from .kube import apiserver_ready, coredns_available, http_ok, kubectl, node_pod_cidrs, wait
from .node import node_exec, start_containerd, start_gpu_plugin, start_kube_proxy, write_cni
from .paths import STATE, bin_dir
from .state import bind_source, current_version, find_node, node_dir, nodes

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
    proc.stop(f"{node.name}-containerd", timeout=10)
    start_containerd(node)


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


def _cni_remove(node: net.Node, value: str | None) -> str | None:
    conf = bind_source(node, "/etc/cni/net.d") / "10-bridge.conflist"
    text = conf.read_text() if conf.exists() else None
    conf.unlink(missing_ok=True)
    return text


def _cni_restore(node: net.Node, saved: str | None) -> None:
    if saved:
        (bind_source(node, "/etc/cni/net.d") / "10-bridge.conflist").write_text(saved)
    else:
        write_cni(node, node_pod_cidrs()[node.name])


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
    f = bind_source(node, "/etc/sysctl.d") / "99-kubernetes.conf"
    text = f.read_text() if f.exists() else None
    f.unlink(missing_ok=True)
    return text


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
    proc.stop(f"{node.name}-containerd", timeout=10)
    start_containerd(node)
    return old


def _cgroup_driver_restore(node: net.Node, saved: str | None) -> None:
    (node_dir(node) / "containerd.toml").write_text(saved or configs.containerd_toml())
    proc.stop(f"{node.name}-containerd", timeout=10)
    start_containerd(node)


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
    "hostname-unresolvable": _Fault("bind an /etc/hosts without the node's name over the node's (kubeadm's Hostname "
                                    "warning)", _hosts_without_name, _hosts_restore),
    "cgroup-driver-mismatch": _Fault("restart a node's containerd with SystemdCgroup = true (the kubelet keeps "
                                     "cgroupfs): new pods there fail to start", _cgroup_driver_mismatch,
                                     _cgroup_driver_restore),
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


def inject(name: str, node: str | None = None, value: str | None = None) -> None:
    """Break one part of the testbed; recorded so heal() (or up) restores it. Injecting twice is a no-op."""
    fault = _get(name)
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
