"""Pure rules about a node's container runtime (CRI): which socket, its Version/Status answers, dockershim.

The checks in suites/runtime gather (file types, `crictl version`, `crictl info -o json` over the
host transport, and the node from the run's snapshot, a `facts.NodeFacts`) and apply the `judge_*`
verdicts; nothing here reaches a host. The node's cri-socket annotation, runtime and kubelet version
are read through NodeFacts (`cri_socket`, `runtime`, `kubelet`), versions with `kube.parse_*`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .facts import CRI_SOCKET_ANNOTATION, NodeFacts
from .kube import parse_runtime
from .verdict import Verdict

# Where containerd, CRI-O and cri-dockerd put their sockets (kubeadm's own detection list).
KNOWN_SOCKETS = ("/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock", "/run/crio/crio.sock",
                 "/var/run/crio/crio.sock", "/run/cri-dockerd.sock", "/var/run/cri-dockerd.sock")
DOCKERSHIM = "dockershim.sock"
DOCKERSHIM_REMOVED = (1, 24)
CRICTL_FIX = ("install crictl (cri-tools): VERSION=v1.35.0; curl -L https://github.com/kubernetes-sigs/cri-tools/"
              "releases/download/$VERSION/crictl-$VERSION-linux-amd64.tar.gz | tar -C /usr/local/bin -xz")
RESTART_FIX = "restart the container runtime (systemctl restart containerd) and read its log (journalctl -u containerd)"


class Answer(Protocol):
    """What one command returned (clusterproof.hosts.Result has this shape)."""

    rc: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Socket:
    """The CRI socket chosen for a host: its path (None: none found), where the name came from, its file type."""

    path: str | None
    source: str
    kind: str


def socket_candidates(named: str | None) -> list[str]:
    """The paths to look at: the socket the node names (`NodeFacts.cri_socket`), else the known runtime sockets."""
    return [named] if named else list(KNOWN_SOCKETS)


def choose_socket(named: str | None, types: dict[str, str]) -> Socket:
    """The socket from the file types of `socket_candidates(named)` (path -> socket|regular|missing|...)."""
    if named:
        return Socket(named, f"node annotation {CRI_SOCKET_ANNOTATION}", types.get(named, "missing"))
    found = next((p for p in KNOWN_SOCKETS if types.get(p) == "socket"), None)
    return Socket(found, "the known containerd/CRI-O/cri-dockerd paths", "socket" if found else "missing")


def find_socket(named: str | None, file_types: Callable[[list[str]], dict[str, str]]) -> tuple[Socket, dict[str, str]]:
    """The socket CRI-001 judges, and the file types it was chosen from: `file_types` (a host's
    hosts.Host.file_types, one round trip) of `socket_candidates(named)`. POD-003 asks crictl on the same socket."""
    types = file_types(socket_candidates(named))
    return choose_socket(named, types), types


def judge_socket(host: str, sock: Socket) -> Verdict:
    """CRI-001: the chosen CRI socket exists and is a Unix socket."""
    if sock.path is None:
        return Verdict.failed(f"CRI socket on {host}", f"a socket at one of {', '.join(KNOWN_SOCKETS)}",
                              "none of them exists", "start the container runtime (systemctl enable --now "
                              f"containerd) or set the node annotation {CRI_SOCKET_ANNOTATION}=unix:///path/to/runtime.sock")
    if sock.kind != "socket":
        return Verdict.failed(f"CRI socket {sock.path} on {host}", f"a Unix socket (named by {sock.source})",
                              sock.kind, "restart the container runtime so it recreates its socket "
                              "(systemctl restart containerd)")
    return Verdict.passed(f"CRI socket {sock.path} on {host}", f"a Unix socket (named by {sock.source})", sock.kind)


def judge_usable(host: str, sock: Socket, has_crictl: bool) -> Verdict | None:
    """Before asking the socket: a skip pointing at CRI-001 without one, a failure without crictl; None: go on."""
    if sock.path is None or sock.kind != "socket":
        return Verdict.skipped(f"no usable CRI socket on {host} (CRI-001 fails with the fix); heal the socket to "
                               "check this", blames="CRI-001")
    if not has_crictl:
        return Verdict.failed(f"crictl on {host}", "crictl on PATH to ask the CRI socket", "crictl not found",
                              CRICTL_FIX)
    return None


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no answer"])[-1][:200]


def judge_version_and_status(host: str, sock: str, version: Answer, info: Answer | None) -> Verdict:
    """CRI-002: `crictl version` and `crictl info -o json` answer, with RuntimeReady and NetworkReady true.

    `info` may be None when Version did not answer (Status is then not asked).
    """
    if version.rc != 0:
        return Verdict.failed(f"CRI Version on unix://{sock} ({host})", "an answer", _last_line(version.stderr),
                              RESTART_FIX)
    if info is None:
        return Verdict.errored(f"CRI Status on unix://{sock} ({host})", "Status was not asked")
    if info.rc != 0:
        return Verdict.failed(f"CRI Status on unix://{sock} ({host})", "an answer", _last_line(info.stderr),
                              RESTART_FIX)
    try:
        listed = json.loads(info.stdout).get("status", {}).get("conditions", [])
        conditions = {c.get("type"): c for c in listed}
    except (ValueError, AttributeError, TypeError):
        return Verdict.failed(f"CRI Status on unix://{sock} ({host})", "JSON with status.conditions",
                              info.stdout[:200] or "empty output", RESTART_FIX)
    bad = [f"{t}={c.get('status')} {c.get('reason') or ''} {c.get('message') or ''}".strip()
           for t in ("RuntimeReady", "NetworkReady") for c in [conditions.get(t, {"status": "absent"})]
           if c.get("status") is not True]
    expected = "RuntimeReady=true, NetworkReady=true"
    if bad:
        return Verdict.failed(f"CRI Status of {host}", expected, "; ".join(bad),
                              RESTART_FIX + "; NetworkReady=false means no CNI config in /etc/cni/net.d "
                              "(install the CNI plugin)")
    return Verdict.passed(f"CRI Status of {host}", expected, f"{runtime_version(version) or 'answered'}, ready")


def runtime_version(version: Answer) -> str | None:
    """`name://version` from `crictl version` output (RuntimeName/RuntimeVersion), None when it did not answer."""
    if version.rc != 0:
        return None
    fields = dict(ln.split(":", 1) for ln in version.stdout.splitlines() if ":" in ln)
    name, ver = fields.get("RuntimeName", "").strip(), fields.get("RuntimeVersion", "").strip()
    return f"{name}://{ver}" if name else None


# What a kubelet reports as containerRuntimeVersion when its Version call to the runtime failed.
UNKNOWN_RUNTIME = "://Unknown"


def judge_runtime_matches(host: str, node: NodeFacts | None, cri: str | None, sock: str) -> Verdict:
    """CRI-003: the runtime on the socket is the one the node reports in status.nodeInfo.containerRuntimeVersion.

    Compared as `kube.parse_runtime` releases: 1.6.20~ds1 on the socket is 1.6.20 on the node.
    """
    if node is None:
        return Verdict.skipped(f"{host} is not a known node; run with --kubeconfig (and nodes as hosts) to compare")
    if cri is None:
        return Verdict.skipped(f"the CRI on {host} does not answer Version (CRI-002 fails with the fix)",
                               blames="CRI-002")
    subject, expected = f"container runtime of node {node.name}", f"{node.runtime_version} (node status)"
    observed = f"{cri} (CRI Version on unix://{sock})"
    if node.runtime_version.endswith(UNKNOWN_RUNTIME):
        return Verdict.failed(subject, f"the version the runtime on unix://{sock} answers, {cri}",
                              f"{node.runtime_version} in the node's status, still after two status updates: the "
                              "kubelet's own Version calls to its runtime fail",
                              "read the kubelet's log for the runtime errors (journalctl -u kubelet) and check its "
                              "containerRuntimeEndpoint names this socket")
    if parse_runtime(cri) != node.runtime:
        return Verdict.failed(subject, expected, observed,
                              "restart the kubelet so it reports the runtime it talks to (systemctl restart kubelet), "
                              "and check its containerRuntimeEndpoint names this socket")
    return Verdict.passed(subject, expected, observed)


def judge_dockershim(host: str, node: NodeFacts | None, sock: str | None) -> Verdict:
    """CRI-004: on Kubernetes >= 1.24 neither the annotation, the socket nor the runtime is dockershim."""
    kubelet = node.kubelet if node else None
    if node is not None and kubelet is not None and kubelet.minor_version < DOCKERSHIM_REMOVED:
        return Verdict.skipped(f"kubelet {node.kubelet_version} on {node.name} still has dockershim (removed in "
                               "1.24); this check applies from Kubernetes 1.24")
    named = (node.cri_socket if node else None) or ""
    found = [s for s in dict.fromkeys((named, sock or "")) if DOCKERSHIM in s]
    if node is not None and node.runtime.name == "docker" and not found \
            and "cri-dockerd" not in (sock or ""):
        found.append(f"runtime {node.runtime_version} without a cri-dockerd socket")
    subject, expected = f"runtime endpoint of {host}", \
        "containerd, CRI-O or cri-dockerd (dockershim was removed in Kubernetes 1.24)"
    if found:
        return Verdict.failed(subject, expected, "; ".join(found),
                              "switch to containerd (or install cri-dockerd), then kubectl annotate node NODE "
                              f"--overwrite {CRI_SOCKET_ANNOTATION}=unix:///run/containerd/containerd.sock")
    return Verdict.passed(subject, expected, sock or named or (node.runtime_version if node else "no socket found"))
