"""Pure rules about Node objects: readiness, version skew, taints. Unit-tested without a cluster.

Functions take kubernetes client models (V1Node) or anything shaped like them.
"""
from __future__ import annotations

import re
from typing import Any

# Taints the node lifecycle controller sets from conditions or cordon: the condition checks own them.
LIFECYCLE_TAINT_PREFIX = "node.kubernetes.io/"
CONTROL_PLANE_TAINTS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
CONTROL_PLANE_LABELS = CONTROL_PLANE_TAINTS
# The kubelet may be up to 3 minor versions older than the API server, never newer (version skew policy).
KUBELET_MAX_MINORS_BEHIND = 3
_NETWORK_NOT_READY = ("network plugin", "networkready=false", "cni ", "cni config", "networkpluginnotready")
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def minor_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of a Kubernetes version string such as v1.35.4, v1.30.2-eks-1, v1.29.3+k3s1."""
    m = _VERSION.match((text or "").strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def skew_problem(kubelet: str, server: str) -> str | None:
    """Why a kubelet version breaks the skew policy against the API server, or None when it is allowed."""
    k, s = minor_version(kubelet), minor_version(server)
    if k is None or s is None:
        return f"cannot parse version (kubelet {kubelet!r}, server {server!r})"
    if k[0] != s[0]:
        return f"kubelet major {k[0]} differs from API server major {s[0]}"
    if k[1] > s[1]:
        return f"kubelet {kubelet} is newer than the API server {server}"
    if s[1] - k[1] > KUBELET_MAX_MINORS_BEHIND:
        return (f"kubelet {kubelet} is {s[1] - k[1]} minor versions older than the API server {server} "
                f"(at most {KUBELET_MAX_MINORS_BEHIND} allowed)")
    return None


def condition(node: Any, kind: str) -> Any:
    """The node's condition of that type, or None."""
    return next((c for c in (node.status.conditions or []) if c.type == kind), None)


def is_ready(node: Any) -> bool:
    c = condition(node, "Ready")
    return c is not None and c.status == "True"


def network_not_ready(node: Any) -> bool:
    """NotReady because the runtime's network (CNI) is not ready: the CNI checks own that."""
    c = condition(node, "Ready")
    if c is None or c.status == "True":
        return False
    text = f"{c.reason or ''} {c.message or ''}".lower()
    return any(k in text for k in _NETWORK_NOT_READY)


def not_ready_text(node: Any) -> str:
    c = condition(node, "Ready")
    if c is None:
        return "no Ready condition (kubelet never reported)"
    return f"Ready={c.status} ({c.reason or 'no reason'}: {(c.message or '').strip()[:160]})"


def is_control_plane(node: Any) -> bool:
    labels = node.metadata.labels or {}
    taints = node.spec.taints or []
    return any(k in labels for k in CONTROL_PLANE_LABELS) or any(t.key in CONTROL_PLANE_TAINTS for t in taints)


def blocking_taints(node: Any, include_lifecycle: bool = False) -> list[Any]:
    """NoSchedule/NoExecute taints that keep ordinary pods off the node (lifecycle taints only on request)."""
    out = []
    for t in node.spec.taints or []:
        if t.effect not in ("NoSchedule", "NoExecute"):
            continue
        if not include_lifecycle and t.key.startswith(LIFECYCLE_TAINT_PREFIX):
            continue
        out.append(t)
    return out


def taint_text(t: Any) -> str:
    return f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}"


def untaint_command(node: str, t: Any) -> str:
    return f"kubectl taint nodes {node} {t.key}:{t.effect}-"


def schedulable_problems(node: Any) -> list[str]:
    """Why ordinary workloads cannot land on the node (empty when they can)."""
    why = []
    if node.spec.unschedulable:
        why.append("cordoned (spec.unschedulable)")
    if not is_ready(node):
        why.append("not Ready")
    why += [f"taint {taint_text(t)}" for t in blocking_taints(node, include_lifecycle=True)
            if t.key != "node.kubernetes.io/unschedulable"]
    return why
