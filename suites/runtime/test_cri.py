"""The container runtime behind each node's CRI socket: present, answering, ready, the one the node reports.

Each check gathers over the host transport (file types, `crictl version`, `crictl info -o json`)
and from the node in the run's snapshot (NodeFacts), and applies a `clusterproof.cri.judge_*` verdict.
"""
from __future__ import annotations

import pytest

from clusterproof import cri
from clusterproof.checks import apply, evidence
from clusterproof.facts import NodeFacts

_sockets: dict[str, cri.Socket] = {}


def _socket(host, node: NodeFacts | None) -> cri.Socket:
    """The CRI socket of the host (the node's cri-socket annotation, else the known paths); looked up once per host."""
    if host.id not in _sockets:
        named = node.cri_socket if node else None
        _sockets[host.id], types = cri.find_socket(named, host.file_type)
        evidence(f"{host.id}: {'type of ' + next(iter(types)) if named else 'known CRI socket paths'}", types)
    return _sockets[host.id]


def _crictl(host, sock: str, args: str):
    r = host.run(f"crictl --runtime-endpoint unix://{sock} --timeout 5s {args}")
    evidence(f"{host.id}: crictl {args}", r.evidence())
    return r


def _usable_socket(host, node: NodeFacts | None) -> str:
    """The socket path to ask; skips (CRI-001 owns a missing socket) or fails (no crictl) otherwise."""
    sock = _socket(host, node)
    stop = cri.judge_usable(host.id, sock, sock.kind == "socket" and host.run("command -v crictl").rc == 0)
    if stop is not None:
        apply(stop)
    return sock.path or ""


@pytest.mark.check("CRI-001")
def test_cri_socket_is_a_socket(node_host, host_node):
    apply(cri.judge_socket(node_host.id, _socket(node_host, host_node)))


@pytest.mark.check("CRI-002")
def test_cri_answers_version_and_status(node_host, host_node):
    """Asked with crictl on the node: `crictl version` and `crictl info -o json` (status.conditions)."""
    sock = _usable_socket(node_host, host_node)
    version = _crictl(node_host, sock, "version")
    info = _crictl(node_host, sock, "info -o json") if version.rc == 0 else None
    apply(cri.judge_version_and_status(node_host.id, sock, version, info))


@pytest.mark.check("CRI-003")
def test_runtime_matches_node_status(node_host, host_node):
    if host_node is None:
        apply(cri.judge_runtime_matches(node_host.id, None, None, ""))
    sock = _usable_socket(node_host, host_node)
    actual = cri.runtime_version(_crictl(node_host, sock, "version"))
    apply(cri.judge_runtime_matches(node_host.id, host_node, actual, sock))


@pytest.mark.check("CRI-004")
def test_no_dockershim(node_host, host_node):
    """Looks at the cri-socket annotation, the socket found and the node's reported runtime."""
    apply(cri.judge_dockershim(node_host.id, host_node, _socket(node_host, host_node).path))
