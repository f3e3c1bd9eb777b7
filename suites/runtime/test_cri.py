"""The container runtime behind each node's CRI socket: present, answering, ready, the one the node reports."""
from __future__ import annotations

import json
import re

import pytest

from clusterproof.checks import evidence, fail, require, skip

ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket"
# Where containerd, CRI-O and cri-dockerd put their sockets (kubeadm's own detection list).
KNOWN_SOCKETS = ["/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock", "/run/crio/crio.sock",
                 "/var/run/crio/crio.sock", "/run/cri-dockerd.sock", "/var/run/cri-dockerd.sock"]
DOCKERSHIM = "dockershim.sock"
CRICTL_FIX = ("install crictl (cri-tools): VERSION=v1.35.0; curl -L https://github.com/kubernetes-sigs/cri-tools/"
              "releases/download/$VERSION/crictl-$VERSION-linux-amd64.tar.gz | tar -C /usr/local/bin -xz")
_sockets: dict[str, tuple[str | None, str, str]] = {}


def cri_socket(host, node) -> tuple[str | None, str, str]:
    """(socket path or None, where the name came from, its file type); once per host."""
    if host.id in _sockets:
        return _sockets[host.id]
    named = (node.annotations.get(ANNOTATION) if node else None) or ""
    if named:
        path = re.sub(r"^unix://", "", named)
        kind = host.file_type(path)
        evidence(f"{host.id}: type of {path}", kind)
        got: tuple[str | None, str, str] = (path, f"node annotation {ANNOTATION}={named}", kind)
    else:
        types = {p: host.file_type(p) for p in KNOWN_SOCKETS}
        evidence(f"{host.id}: known CRI socket paths", types)
        found = next((p for p, t in types.items() if t == "socket"), None)
        got = (found, "the known containerd/CRI-O/cri-dockerd paths", "socket" if found else "missing")
    _sockets[host.id] = got
    return got


def _crictl(host, sock: str, args: str):
    r = host.run(f"crictl --runtime-endpoint unix://{sock} --timeout 5s {args}")
    evidence(f"{host.id}: crictl {args}", r.evidence())
    return r


def _usable_socket(host, node) -> str:
    path, source, kind = cri_socket(host, node)
    if path is None or kind != "socket":
        skip(f"no usable CRI socket on {host.id} (CRI-001 fails with the fix); heal the socket to check this")
    if host.run("command -v crictl").rc != 0:
        fail(f"crictl on {host.id}", "crictl on PATH to ask the CRI socket", "crictl not found", CRICTL_FIX)
    return path


@pytest.mark.check("CRI-001")
def test_cri_socket_is_a_socket(node_host, host_node):
    """The node's CRI socket (kubeadm's cri-socket annotation, else a known runtime path) MUST exist and be a socket."""
    path, source, kind = cri_socket(node_host, host_node)
    if path is None:
        fail(f"CRI socket on {node_host.id}", f"a socket at one of {', '.join(KNOWN_SOCKETS)}",
             "none of them exists", "start the container runtime (systemctl enable --now containerd) or set the "
             f"node annotation {ANNOTATION}=unix:///path/to/runtime.sock")
    require(kind == "socket", f"CRI socket {path} on {node_host.id}", f"a Unix socket (named by {source})",
            kind, "restart the container runtime so it recreates its socket (systemctl restart containerd)")


@pytest.mark.check("CRI-002")
def test_cri_answers_version_and_status(node_host, host_node):
    """The CRI socket MUST answer Version and Status with RuntimeReady and NetworkReady true."""
    sock = _usable_socket(node_host, host_node)
    fix = "restart the container runtime (systemctl restart containerd) and read its log (journalctl -u containerd)"
    ver = _crictl(node_host, sock, "version")
    require(ver.rc == 0, f"CRI Version on unix://{sock} ({node_host.id})", "an answer",
            (ver.stderr.strip().splitlines() or ["no answer"])[-1][:200], fix)
    info = _crictl(node_host, sock, "info -o json")
    require(info.rc == 0, f"CRI Status on unix://{sock} ({node_host.id})", "an answer",
            (info.stderr.strip().splitlines() or ["no answer"])[-1][:200], fix)
    try:
        conditions = {c.get("type"): c for c in json.loads(info.stdout).get("status", {}).get("conditions", [])}
    except (ValueError, AttributeError):
        fail(f"CRI Status on unix://{sock} ({node_host.id})", "JSON with status.conditions",
             info.stdout[:200] or "empty output", fix)
    bad = [f"{t}={c.get('status')} {c.get('reason') or ''} {c.get('message') or ''}".strip()
           for t in ("RuntimeReady", "NetworkReady") for c in [conditions.get(t, {"status": "absent"})]
           if c.get("status") is not True]
    require(not bad, f"CRI Status of {node_host.id}", "RuntimeReady=true, NetworkReady=true", "; ".join(bad),
            fix + "; NetworkReady=false means no CNI config in /etc/cni/net.d (install the CNI plugin)")


def runtime_version(host, sock: str) -> str | None:
    r = _crictl(host, sock, "version")
    if r.rc != 0:
        return None
    fields = dict(ln.split(":", 1) for ln in r.stdout.splitlines() if ":" in ln)
    name, version = fields.get("RuntimeName", "").strip(), fields.get("RuntimeVersion", "").strip()
    return f"{name}://{version}" if name else None


def same_runtime(cri: str, node: str) -> bool:
    """The kubelet reports name://<generic version>: 1.6.20~ds1 on the socket is 1.6.20 on the node."""
    def split(v: str) -> tuple[str, str]:
        name, _, ver = v.partition("://")
        m = re.match(r"v?(\d+(?:\.\d+)*)", ver)
        return name, m.group(1) if m else ver
    return split(cri) == split(node)


@pytest.mark.check("CRI-003")
def test_runtime_matches_node_status(node_host, host_node):
    """The runtime name and version on the CRI socket MUST equal the node's status.nodeInfo.containerRuntimeVersion."""
    if host_node is None:
        skip(f"{node_host.id} is not a known node; run with --kubeconfig (and nodes as hosts) to compare")
    sock = _usable_socket(node_host, host_node)
    actual = runtime_version(node_host, sock)
    if actual is None:
        skip(f"the CRI on {node_host.id} does not answer Version (CRI-002 fails with the fix)")
    require(same_runtime(actual, host_node.runtime_version), f"container runtime of node {host_node.name}",
            f"{host_node.runtime_version} (node status)", f"{actual} (CRI Version on unix://{sock})",
            "restart the kubelet so it reports the runtime it talks to (systemctl restart kubelet), and check its "
            "containerRuntimeEndpoint names this socket")


def _minor(version: str) -> tuple[int, int]:
    m = re.match(r"v?(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@pytest.mark.check("CRI-004")
def test_no_dockershim(node_host, host_node):
    """On Kubernetes >= 1.24 a node MUST NOT name dockershim as its runtime; Docker needs cri-dockerd."""
    if host_node is not None and _minor(host_node.kubelet_version) < (1, 24):
        skip(f"kubelet {host_node.kubelet_version} on {host_node.name} still has dockershim (removed in 1.24)")
    path, source, kind = cri_socket(node_host, host_node)
    named = host_node.annotations.get(ANNOTATION, "") if host_node else ""
    dockershim = [s for s in (named, path or "") if DOCKERSHIM in s]
    docker = host_node is not None and host_node.runtime_version.startswith("docker://")
    if docker and not dockershim and "cri-dockerd" not in (path or ""):
        dockershim.append(f"runtime {host_node.runtime_version} without a cri-dockerd socket")
    require(not dockershim, f"runtime endpoint of {node_host.id}",
            "containerd, CRI-O or cri-dockerd (dockershim was removed in Kubernetes 1.24)",
            "; ".join(dockershim),
            "switch to containerd (or install cri-dockerd), then kubectl annotate node NODE --overwrite "
            f"{ANNOTATION}=unix:///run/containerd/containerd.sock")
