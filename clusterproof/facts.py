"""Cluster facts gathered once per run: server version, nodes with roles/IPs/versions, CIDRs."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from . import timeouts


@dataclass
class NodeFacts:
    name: str
    internal_ip: str | None
    roles: list[str]
    kubelet_version: str
    runtime_version: str
    kernel_version: str
    os_image: str
    pod_cidrs: list[str]
    taints: list[dict[str, str]]
    annotations: dict[str, str]
    labels: dict[str, str]
    allocatable: dict[str, str]
    capacity: dict[str, str]
    raw: Any = field(repr=False, default=None)


@dataclass
class ClusterFacts:
    server: str
    server_version: str
    context: str | None
    nodes: list[NodeFacts]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def gather(cls, api_client, context: str | None = None) -> ClusterFacts:
        from kubernetes import client

        from .kube import server_address

        t = timeouts.get("api")
        version = client.VersionApi(api_client).get_code(_request_timeout=t).git_version
        nodes = client.CoreV1Api(api_client).list_node(_request_timeout=t).items
        return cls(server_address(api_client), version, context, [node_facts(n) for n in nodes])

    def node(self, name: str) -> NodeFacts:
        return next(n for n in self.nodes if n.name == name)

    def pod_cidrs(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Union of the nodes' podCIDRs (the allocation the controller-manager made)."""
        return [ipaddress.ip_network(c) for n in self.nodes for c in n.pod_cidrs]


def node_facts(node) -> NodeFacts:
    st = node.status
    info = st.node_info
    ip = next((a.address for a in (st.addresses or []) if a.type == "InternalIP"), None)
    labels = node.metadata.labels or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")) or ["<none>"]
    # The attribute is pod_cidrs in newer kubernetes clients (pod_cid_rs in older ones).
    many = getattr(node.spec, "pod_cidrs", None) or getattr(node.spec, "pod_cid_rs", None)
    cidrs = list(many or ([node.spec.pod_cidr] if node.spec.pod_cidr else []))
    return NodeFacts(
        name=node.metadata.name,
        internal_ip=ip,
        roles=roles,
        kubelet_version=info.kubelet_version,
        runtime_version=info.container_runtime_version,
        kernel_version=info.kernel_version,
        os_image=info.os_image,
        pod_cidrs=cidrs,
        taints=[{"key": t.key, "value": t.value or "", "effect": t.effect} for t in (node.spec.taints or [])],
        annotations=dict(node.metadata.annotations or {}),
        labels=dict(labels),
        allocatable=dict(st.allocatable or {}),
        capacity=dict(st.capacity or {}),
        raw=node,
    )
