"""Pure rules about a node's container runtime (CRI): which socket, its Version/Status answers, dockershim.

The checks in suites/runtime gather (file types, `crictl version`, `crictl info -o json` over the
host transport, and the Node object) and apply the `judge_*` verdicts; nothing here reaches a host.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from .verdict import Verdict

ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket"
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
class NodeRuntime:
    """What the Node object says about its runtime."""

    name: str
    annotation: str          # the cri-socket annotation, "" when absent
    runtime_version: str     # status.nodeInfo.containerRuntimeVersion, e.g. containerd://2.1.4
    kubelet_version: str


@dataclass(frozen=True)
class Socket:
    """The CRI socket chosen for a host: its path (None: none found), where the name came from, its file type."""

    path: str | None
    source: str
    kind: str


def node_runtime(node: Any) -> NodeRuntime:
    """NodeRuntime from a V1Node."""
    info = node.status.node_info
    return NodeRuntime(node.metadata.name, (node.metadata.annotations or {}).get(ANNOTATION, ""),
                       info.container_runtime_version or "", info.kubelet_version or "")


def socket_candidates(annotation: str) -> list[str]:
    """The paths to look at: the annotated socket, else the known runtime sockets."""
    return [re.sub(r"^unix://", "", annotation)] if annotation else list(KNOWN_SOCKETS)


def choose_socket(annotation: str, types: dict[str, str]) -> Socket:
    """The socket from the file types of `socket_candidates(annotation)` (path -> socket|regular|missing|...)."""
    if annotation:
        path = socket_candidates(annotation)[0]
        return Socket(path, f"node annotation {ANNOTATION}={annotation}", types.get(path, "missing"))
    found = next((p for p in KNOWN_SOCKETS if types.get(p) == "socket"), None)
    return Socket(found, "the known containerd/CRI-O/cri-dockerd paths", "socket" if found else "missing")


def judge_socket(host: str, sock: Socket) -> Verdict:
    """CRI-001: the chosen CRI socket exists and is a Unix socket."""
    if sock.path is None:
        return Verdict.failed(f"CRI socket on {host}", f"a socket at one of {', '.join(KNOWN_SOCKETS)}",
                              "none of them exists", "start the container runtime (systemctl enable --now "
                              f"containerd) or set the node annotation {ANNOTATION}=unix:///path/to/runtime.sock")
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


def same_runtime(cri: str, node: str) -> bool:
    """The kubelet reports name://<generic version>: 1.6.20~ds1 on the socket is 1.6.20 on the node."""
    def split(v: str) -> tuple[str, str]:
        name, _, ver = v.partition("://")
        m = re.match(r"v?(\d+(?:\.\d+)*)", ver)
        return name, m.group(1) if m else ver
    return split(cri) == split(node)


def judge_runtime_matches(host: str, node: NodeRuntime | None, cri: str | None, sock: str) -> Verdict:
    """CRI-003: the runtime on the socket is the one the node reports in status.nodeInfo.containerRuntimeVersion."""
    if node is None:
        return Verdict.skipped(f"{host} is not a known node; run with --kubeconfig (and nodes as hosts) to compare")
    if cri is None:
        return Verdict.skipped(f"the CRI on {host} does not answer Version (CRI-002 fails with the fix)",
                               blames="CRI-002")
    subject, expected = f"container runtime of node {node.name}", f"{node.runtime_version} (node status)"
    observed = f"{cri} (CRI Version on unix://{sock})"
    if not same_runtime(cri, node.runtime_version):
        return Verdict.failed(subject, expected, observed,
                              "restart the kubelet so it reports the runtime it talks to (systemctl restart kubelet), "
                              "and check its containerRuntimeEndpoint names this socket")
    return Verdict.passed(subject, expected, observed)


def minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"v?(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def judge_dockershim(host: str, node: NodeRuntime | None, sock: str | None) -> Verdict:
    """CRI-004: on Kubernetes >= 1.24 neither the annotation, the socket nor the runtime is dockershim."""
    kubelet = minor(node.kubelet_version) if node else None
    if node is not None and kubelet is not None and kubelet < DOCKERSHIM_REMOVED:
        return Verdict.skipped(f"kubelet {node.kubelet_version} on {node.name} still has dockershim (removed in "
                               "1.24); this check applies from Kubernetes 1.24")
    named = node.annotation if node else ""
    found = [s for s in (named, sock or "") if DOCKERSHIM in s]
    if node is not None and node.runtime_version.startswith("docker://") and not found \
            and "cri-dockerd" not in (sock or ""):
        found.append(f"runtime {node.runtime_version} without a cri-dockerd socket")
    subject, expected = f"runtime endpoint of {host}", \
        "containerd, CRI-O or cri-dockerd (dockershim was removed in Kubernetes 1.24)"
    if found:
        return Verdict.failed(subject, expected, "; ".join(found),
                              "switch to containerd (or install cri-dockerd), then kubectl annotate node NODE "
                              f"--overwrite {ANNOTATION}=unix:///run/containerd/containerd.sock")
    return Verdict.passed(subject, expected, sock or named or (node.runtime_version if node else "no socket found"))
