"""The testbed's status: one health check per component, and the result as a typed tree."""
from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import faults, kube_router, net, proc
from .kube import CONTROL_LEASES, coredns_available, http_ok, https_ok, kubectl, lease_fresh
from .paths import STATE
from .state import (
    ADMIN_KUBECONFIG,
    SSH_KEY,
    api_server_url,
    bootstrap_mode,
    cni_mode,
    containerd_address,
    current_version,
    nodes,
)


@dataclass(frozen=True)
class Component:
    """One part of the testbed; node is None for a cluster-wide part."""

    name: str
    node: str | None
    healthy: bool
    detail: str


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ip: str
    netns: str


@dataclass(frozen=True)
class Status:
    """What `status` reports. healthy: every component is; up: the API server answers."""

    healthy: bool
    up: bool
    components: tuple[Component, ...]
    kubeconfig: Path
    ssh_key: Path
    version: str | None  # None when there is no testbed here
    nodes: tuple[NodeInfo, ...]
    cni: str | None = None  # kube-router | bridge; None when there is no testbed here
    bootstrap: str | None = None  # processes | kubeadm; None when there is no testbed here

    def unhealthy(self) -> list[Component]:
        return [c for c in self.components if not c.healthy]

    def to_json(self) -> dict[str, Any]:
        """The JSON document `status --json` prints: paths as strings, sequences as lists."""
        doc = asdict(self)
        doc.update(components=list(doc["components"]), kubeconfig=str(self.kubeconfig), ssh_key=str(self.ssh_key),
                   nodes=list(doc["nodes"]))
        return doc


def _check(fn: Callable[[], bool]) -> tuple[bool, str]:
    try:
        return (True, "ok") if fn() else (False, "not ready")
    except Exception as exc:  # the reason a component is down is the detail to report
        return False, f"{type(exc).__name__}: {exc}"[:200]


def _node_checks(node: net.Node) -> list[tuple[str, Callable[[], bool]]]:
    sock = Path(containerd_address(node))

    def sshd_answers() -> bool:
        socket.create_connection((node.ip, 22), timeout=2).close()
        return True

    return [
        ("containerd", lambda: proc.pid_of(f"{node.name}-containerd") is not None and sock.is_socket()),
        ("kubelet", lambda: http_ok(f"http://{node.ip}:10248/healthz")),
        ("kube-proxy", lambda: http_ok(f"http://{node.ip}:10256/healthz")),
        ("sshd", sshd_answers),
    ]


def _leads(component: str) -> bool:
    return proc.pid_of(component) is not None and lease_fresh(component)


def _process_control_plane() -> list[Component]:
    """etcd, the API server, the controller manager and the scheduler as processes on the machine."""
    comps = []
    for name, fn in (("etcd", lambda: http_ok("http://127.0.0.1:2379/health")),
                     ("kube-apiserver", lambda: https_ok(f"https://127.0.0.1:{net.API_PORT}/readyz")),
                     # running and leading: its kube-system Lease renewed (what CP-001/CP-002 read)
                     ("kube-controller-manager", lambda: _leads("kube-controller-manager")),
                     ("kube-scheduler", lambda: _leads("kube-scheduler"))):
        ok, detail = _check(fn)
        if not ok and proc.pid_of(name) is None:
            detail = "not running"
        elif not ok and name in CONTROL_LEASES:
            detail = (f"running, but its kube-system Lease {name} is not renewed (started without leader election by "
                      "an older testbed? python -m testbed down, then up)")
        comps.append(Component(name, None, ok, detail))
    return comps


def _kubeadm_control_plane(control: net.Node) -> list[Component]:
    """The static pods kubeadm made on CONTROL: the API server answering /readyz, each pod Running and Ready, and the
    scheduler and the controller manager leading."""
    from . import kubeadm

    api_ok, api_detail = _check(lambda: https_ok(f"{api_server_url()}/readyz"))
    waiting = kubeadm.static_pods_not_ready(control) if api_ok else []
    comps = []
    for name in kubeadm.CONTROL_PLANE_ORDER:
        pod = f"{name}-{control.name}"
        if not api_ok:
            ok, detail = (False, api_detail) if name == "kube-apiserver" else (False, "unknown: the API server is down")
        elif pod in waiting:
            ok, detail = False, f"static pod kube-system/{pod} not Running and Ready"
        elif name in CONTROL_LEASES and not lease_fresh(name):
            ok, detail = False, f"static pod Ready, but its kube-system Lease {name} is not renewed"
        else:
            ok, detail = True, "ok"
        comps.append(Component(name, control.name, ok, detail))
    return comps


def status() -> Status:
    """Check every component now (a few seconds; nothing is changed)."""
    all_nodes = nodes()
    if not STATE.exists():
        return Status(False, False, (), ADMIN_KUBECONFIG, SSH_KEY, None, ())
    comps = _kubeadm_control_plane(all_nodes[0]) if bootstrap_mode() == "kubeadm" else _process_control_plane()
    api_up = comps[1].healthy
    node_objs: dict[str, dict[str, Any]] = {}
    if api_up:
        r = kubectl("get", "nodes", "-o", "json", check=False)
        if r.returncode == 0:
            node_objs = {n["metadata"]["name"]: n for n in json.loads(r.stdout)["items"]}
    for node in all_nodes:
        for cname, fn in _node_checks(node):
            ok, detail = _check(fn)
            comps.append(Component(cname, node.name, ok, detail))
        obj = node_objs.get(node.name)
        ready = obj is not None and any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in obj["status"].get("conditions", []))
        comps.append(Component("node-ready", node.name, ready, "Ready" if ready else
                               ("not registered" if not obj else "NotReady")))
    if api_up:
        ok, detail = _check(coredns_available)
        comps.append(Component("coredns", None, ok, detail))
    if api_up and cni_mode() == "kube-router":
        missing = kube_router.not_ready([n.name for n in all_nodes])
        comps.append(Component("kube-router", None, not missing,
                               f"no ready pod on {', '.join(missing)}" if missing else "a ready pod on every node"))
    active = faults.active()
    if active:
        comps.append(Component("faults", None, False, ", ".join(
            f"{f.name}{'@' + f.node if f.node else ''}" for f in active)))
    healthy = bool(comps) and all(c.healthy for c in comps)
    return Status(healthy, api_up, tuple(comps), ADMIN_KUBECONFIG, SSH_KEY, current_version(),
                  tuple(NodeInfo(n.name, n.ip, n.netns) for n in all_nodes), cni_mode(), bootstrap_mode())
