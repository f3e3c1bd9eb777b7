"""The container runtime behind each node's CRI socket: present, answering, ready, the one the node reports.

Each check gathers over the host transport (file types, `crictl version`, `crictl info -o json`)
and from the node in the run's snapshot (NodeFacts), and applies a `clusterproof.cri.judge_*` verdict.
"""
from __future__ import annotations

import dataclasses

import pytest

from clusterproof import cri, timeouts
from clusterproof.checks import apply, evidence
from clusterproof.facts import NodeFacts
from clusterproof.wait import WaitTimeout, wait_for

_sockets: dict[str, cri.Socket] = {}


def _socket(host, node: NodeFacts | None) -> cri.Socket:
    """The CRI socket of the host (the node's cri-socket annotation, else the known paths); looked up once per host."""
    if host.id not in _sockets:
        named = node.cri_socket if node else None
        _sockets[host.id], types = cri.find_socket(named, host.file_types)
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
def test_runtime_matches_node_status(node_host, host_node, request):
    if host_node is None:
        apply(cri.judge_runtime_matches(node_host.id, None, None, ""))
    sock = _usable_socket(node_host, host_node)
    actual = cri.runtime_version(_crictl(node_host, sock, "version"))
    if host_node.runtime_version.endswith(cri.UNKNOWN_RUNTIME):
        host_node = _reported_again(host_node, request.getfixturevalue("core_v1"))
    apply(cri.judge_runtime_matches(node_host.id, host_node, actual, sock))


def _reported_again(node: NodeFacts, core_v1) -> NodeFacts:
    """The node as its kubelet reports it after up to two status updates: `RUNTIME://Unknown` is what a kubelet
    writes when its Version call to the runtime failed (the runtime restarting), and the next update (10 s later by
    default) corrects it while the runtime answers. An API error here is the check's error, not a pass."""
    def ask() -> tuple[bool, str]:
        got = core_v1.read_node(node.name, _request_timeout=timeouts.get("api")).status.node_info
        reported = got.container_runtime_version if got else ""
        return not reported.endswith(cri.UNKNOWN_RUNTIME), reported

    try:
        reported = wait_for(ask, f"node {node.name} to report its runtime's version", timeouts.scaled(25), 2)
    except WaitTimeout:
        return node
    evidence(f"node {node.name}: status.nodeInfo.containerRuntimeVersion, read again", reported)
    return dataclasses.replace(node, runtime_version=reported)


@pytest.mark.check("CRI-004")
def test_no_dockershim(node_host, host_node):
    """Looks at the cri-socket annotation, the socket found and the node's reported runtime."""
    apply(cri.judge_dockershim(node_host.id, host_node, _socket(node_host, host_node).path))
