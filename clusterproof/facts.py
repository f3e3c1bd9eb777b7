"""The cluster snapshot, taken once per run (per xdist worker): server, version, nodes, CNI.

`ClusterFacts.gather(api_client, context)` reads the server version, the nodes (once) and the CNI;
fixtures and checks read it from there instead of listing nodes again (fixtures/cluster.py keeps
it in `config.stash`). `NodeFacts` is one node as plain data plus the V1Node it came from (`raw`).

The readiness helpers (`condition`, `is_ready`, `ready_text`, `network_not_ready`,
`is_control_plane`) work on V1Node objects (or anything shaped like them) and are the project's
only reading of a node's Ready condition.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from . import cni, timeouts
from .kube import Runtime, Version, parse_runtime, parse_version

CRI_SOCKET_ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket"
ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
CONTROL_PLANE_KEYS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
HOSTNAME_LABEL = "kubernetes.io/hostname"
# Words in a NotReady condition that say the runtime's network (CNI) is the cause: the CNI checks own that.
_NETWORK_NOT_READY = ("network plugin", "networkready=false", "cni ", "cni config", "networkpluginnotready")


# ------------------------------------------------------------------ readiness (V1Node in)

def condition(node: Any, kind: str) -> Any:
    """The node's condition of that type (Ready, MemoryPressure, ...), or None."""
    status = getattr(node, "status", None)
    return next((c for c in (getattr(status, "conditions", None) or []) if c.type == kind), None)


def is_ready(node: Any) -> bool:
    """The node's Ready condition is True."""
    c = condition(node, "Ready")
    return c is not None and c.status == "True"


def ready_text(node: Any) -> str:
    """The Ready condition as one line: `Ready=False (KubeletNotReady: ...)`."""
    c = condition(node, "Ready")
    if c is None:
        return "no Ready condition (kubelet never reported)"
    return f"Ready={c.status} ({c.reason or 'no reason'}: {(c.message or '').strip()[:160]})"


def network_not_ready(node: Any) -> bool:
    """NotReady because the runtime's network (CNI) is not ready."""
    c = condition(node, "Ready")
    if c is None or c.status == "True":
        return False
    text = f"{c.reason or ''} {c.message or ''}".lower()
    return any(k in text for k in _NETWORK_NOT_READY)


def _control_plane(labels: dict[str, str], taint_keys: list[str]) -> bool:
    return any(k in labels for k in CONTROL_PLANE_KEYS) or any(k in CONTROL_PLANE_KEYS for k in taint_keys)


def is_control_plane(node: Any) -> bool:
    """A control-plane node: its node-role label or its NoSchedule taint says so."""
    return _control_plane(node.metadata.labels or {}, [t.key for t in node.spec.taints or []])


# ------------------------------------------------------------------ the snapshot

@dataclass(frozen=True)
class Condition:
    """One node condition as plain data."""

    status: str
    reason: str = ""
    message: str = ""


@dataclass
class NodeFacts:
    """One node. `name`, `internal_ip`, `roles`, `raw` are stable; the rest is derived from `raw`."""

    name: str
    internal_ip: str | None
    roles: list[str]
    kubelet_version: str
    runtime_version: str                  # containerRuntimeVersion as reported, e.g. containerd://1.7.20
    kernel_version: str
    os_image: str
    pod_cidrs: list[str]
    taints: list[dict[str, str]]
    annotations: dict[str, str]
    labels: dict[str, str]
    allocatable: dict[str, str]
    capacity: dict[str, str]
    raw: Any = field(repr=False, default=None)
    ready: bool = True
    ready_text: str = "Ready=True"
    network_not_ready: bool = False
    unschedulable: bool = False
    conditions: dict[str, Condition] = field(default_factory=dict)

    @property
    def not_ready_reason(self) -> str | None:
        """Why the node is not Ready (its Ready condition as one line), None when it is Ready."""
        return None if self.ready else self.ready_text

    @property
    def is_control_plane(self) -> bool:
        return _control_plane(self.labels, [t["key"] for t in self.taints])

    @property
    def hostname(self) -> str:
        """The kubernetes.io/hostname label (what nodeAffinity pins to), else the node's name."""
        return self.labels.get(HOSTNAME_LABEL, self.name)

    @property
    def kubelet(self) -> Version | None:
        return parse_version(self.kubelet_version)

    @property
    def runtime(self) -> Runtime:
        """The runtime's name and numeric version, parsed from containerRuntimeVersion."""
        return parse_runtime(self.runtime_version)

    @property
    def cri_socket(self) -> str | None:
        """The CRI socket path kubeadm recorded (cri-socket annotation, unix:// dropped), None without it."""
        named = self.annotations.get(CRI_SOCKET_ANNOTATION, "")
        return named.removeprefix("unix://") or None

    @property
    def problem(self) -> str | None:
        """Why host and pod checks cannot use this node (NotReady, no InternalIP), None when they can."""
        why = [] if self.ready else [self.ready_text]
        if not self.internal_ip:
            why.append("no InternalIP in status.addresses")
        return "; ".join(why) or None


@dataclass
class ClusterFacts:
    """The run's snapshot of the cluster; `nodes` are sorted by name."""

    server: str
    server_version: str
    context: str | None
    nodes: list[NodeFacts]
    extra: dict[str, Any] = field(default_factory=dict)
    cni_detection: cni.Detection = field(default_factory=lambda: cni.Detection("unknown"))

    @classmethod
    def gather(cls, api_client: Any, context: str | None = None) -> ClusterFacts:
        """Server version, nodes (one list call) and the CNI; API errors other than the CNI's propagate."""
        from kubernetes import client

        from .kube import server_address

        t = timeouts.get("api")
        version = client.VersionApi(api_client).get_code(_request_timeout=t).git_version
        items = client.CoreV1Api(api_client).list_node(_request_timeout=t).items
        nodes = sorted((node_facts(n) for n in items), key=lambda n: n.name)
        return cls(server_address(api_client), version, context, nodes,
                   cni_detection=cni.detect_from_api(api_client, nodes))

    @property
    def cni(self) -> str | None:
        """The CNI's display name for reports ("Calico", "Weave Net", ...), None when not detected."""
        return self.cni_detection.title

    @property
    def server_semver(self) -> Version | None:
        return parse_version(self.server_version)

    def node(self, name: str) -> NodeFacts | None:
        """The node of that name, None when the cluster has none."""
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def ready_nodes(self) -> list[NodeFacts]:
        return [n for n in self.nodes if n.ready]

    @property
    def not_ready_nodes(self) -> list[NodeFacts]:
        return [n for n in self.nodes if not n.ready]

    def left_out(self, used: list[str] | dict[str, Any] | None = None) -> list[str]:
        """Rows for the nodes a check did not use (`used`: the node names it ran on; default the Ready nodes)."""
        names = set(used) if used is not None else {n.name for n in self.ready_nodes}
        return [f"{n.name}: {n.problem or 'not used'}" for n in self.nodes if n.name not in names]

    def pod_cidrs(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Union of the nodes' podCIDRs (the allocation the controller-manager made)."""
        return [ipaddress.ip_network(c) for n in self.nodes for c in n.pod_cidrs]


def node_facts(node: Any) -> NodeFacts:
    """NodeFacts of one V1Node."""
    st = node.status
    info = st.node_info
    ip = next((a.address for a in (st.addresses or []) if a.type == "InternalIP"), None)
    labels = node.metadata.labels or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith(ROLE_LABEL_PREFIX)) or ["<none>"]
    return NodeFacts(
        name=node.metadata.name,
        internal_ip=ip,
        roles=roles,
        kubelet_version=info.kubelet_version if info else "",
        runtime_version=info.container_runtime_version if info else "",
        kernel_version=info.kernel_version if info else "",
        os_image=info.os_image if info else "",
        pod_cidrs=cni.node_pod_cidrs(node),
        taints=[{"key": t.key, "value": t.value or "", "effect": t.effect} for t in (node.spec.taints or [])],
        annotations=dict(node.metadata.annotations or {}),
        labels=dict(labels),
        allocatable=dict(st.allocatable or {}),
        capacity=dict(st.capacity or {}),
        raw=node,
        ready=is_ready(node),
        ready_text=ready_text(node),
        network_not_ready=network_not_ready(node),
        unschedulable=bool(node.spec.unschedulable),
        conditions={c.type: Condition(c.status, c.reason or "", (c.message or "").strip())
                    for c in st.conditions or []},
    )
