"""CRI rules (clusterproof.cri) on plain values and NodeFacts: socket choice, Version/Status, runtime vs node,
dockershim."""
from __future__ import annotations

import json

import pytest
from kubernetes import client

from clusterproof import cri, facts, kube
from clusterproof.facts import CRI_SOCKET_ANNOTATION
from clusterproof.hosts import Result

HOST = "ssh://n1"
SOCK = "/run/containerd/containerd.sock"
VERSION_OUT = "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  1.7.20~ds1\nRuntimeApiVersion:  v1\n"


def ran(stdout: str = "", rc: int = 0, stderr: str = "") -> Result:
    return Result(rc, stdout, stderr, "crictl ...")


def info(runtime: bool | None = True, network: bool | None = True, reason: str = "") -> Result:
    conds = [{"type": t, "status": s, "reason": reason, "message": ""}
             for t, s in (("RuntimeReady", runtime), ("NetworkReady", network)) if s is not None]
    return ran(json.dumps({"status": {"conditions": conds}}))


def runtime(kubelet="v1.35.4", version="containerd://1.7.20", annotation="") -> facts.NodeFacts:
    """The NodeFacts of a real-shaped V1Node, as the run's snapshot holds it (`host_node`)."""
    annotations = {CRI_SOCKET_ANNOTATION: annotation} if annotation else None
    return facts.node_facts(client.V1Node(
        metadata=client.V1ObjectMeta(name="n1", annotations=annotations),
        spec=client.V1NodeSpec(),
        status=client.V1NodeStatus(node_info=client.V1NodeSystemInfo(
            kubelet_version=kubelet, container_runtime_version=version, architecture="", boot_id="",
            kernel_version="", kube_proxy_version="", machine_id="", operating_system="", os_image="",
            system_uuid=""))))


def test_socket_named_by_the_node() -> None:
    named = runtime(annotation="unix:///run/x.sock")
    assert named.cri_socket == "/run/x.sock"
    assert cri.socket_candidates(named.cri_socket) == ["/run/x.sock"]
    assert cri.socket_candidates(runtime().cri_socket) == list(cri.KNOWN_SOCKETS)


def test_socket_choice() -> None:
    assert cri.socket_candidates("/run/crio/crio.sock") == ["/run/crio/crio.sock"]
    assert cri.socket_candidates(None) == list(cri.KNOWN_SOCKETS)
    named = cri.choose_socket("/run/crio/crio.sock", {"/run/crio/crio.sock": "regular"})
    assert (named.path, named.kind) == ("/run/crio/crio.sock", "regular") and CRI_SOCKET_ANNOTATION in named.source
    types = dict.fromkeys(cri.KNOWN_SOCKETS, "missing") | {"/var/run/crio/crio.sock": "socket"}
    assert cri.choose_socket(None, types) == cri.Socket("/var/run/crio/crio.sock",
                                                      "the known containerd/CRI-O/cri-dockerd paths", "socket")
    assert cri.choose_socket(None, dict.fromkeys(cri.KNOWN_SOCKETS, "missing")).path is None


def test_judge_socket() -> None:
    assert cri.judge_socket(HOST, cri.choose_socket(None, {SOCK: "socket"})).status == "pass"
    none = cri.judge_socket(HOST, cri.choose_socket(None, {}))
    assert none.status == "fail" and none.message.startswith(
        f"CRI socket on {HOST}: expected a socket at one of /run/containerd/containerd.sock")
    file = cri.judge_socket(HOST, cri.Socket(SOCK, "the known paths", "regular"))
    assert file.status == "fail" and file.observed == "regular" and "systemctl restart containerd" in file.fix


def test_judge_usable() -> None:
    ok = cri.Socket(SOCK, "the known paths", "socket")
    assert cri.judge_usable(HOST, ok, has_crictl=True) is None
    skip = cri.judge_usable(HOST, cri.Socket(None, "the known paths", "missing"), has_crictl=True)
    assert skip is not None and skip.status == "skip" and skip.blames == "CRI-001"
    no_crictl = cri.judge_usable(HOST, ok, has_crictl=False)
    assert no_crictl is not None and no_crictl.status == "fail" and "cri-tools" in no_crictl.fix


def test_judge_version_and_status() -> None:
    ok = cri.judge_version_and_status(HOST, SOCK, ran(VERSION_OUT), info())
    assert ok.status == "pass" and "containerd://1.7.20~ds1" in ok.observed
    down = cri.judge_version_and_status(HOST, SOCK, ran(rc=1, stderr="connect: connection refused\n"), None)
    assert down.status == "fail" and down.subject == f"CRI Version on unix://{SOCK} ({HOST})"
    assert down.observed == "connect: connection refused"
    no_status = cri.judge_version_and_status(HOST, SOCK, ran(VERSION_OUT), ran(rc=1, stderr="timeout"))
    assert no_status.status == "fail" and no_status.subject.startswith("CRI Status on")
    garbled = cri.judge_version_and_status(HOST, SOCK, ran(VERSION_OUT), ran("not json"))
    assert garbled.status == "fail" and garbled.expected == "JSON with status.conditions"
    net = cri.judge_version_and_status(HOST, SOCK, ran(VERSION_OUT),
                                       info(network=False, reason="NetworkPluginNotReady"))
    assert net.status == "fail" and "NetworkReady=False NetworkPluginNotReady" in net.observed
    assert "/etc/cni/net.d" in net.fix
    absent = cri.judge_version_and_status(HOST, SOCK, ran(VERSION_OUT), info(runtime=None))
    assert absent.status == "fail" and "RuntimeReady=absent" in absent.observed
    assert cri.judge_version_and_status(HOST, SOCK, ran(VERSION_OUT), None).status == "error"


@pytest.mark.parametrize(("cri_version", "node_version", "same"), [
    ("containerd://1.7.20~ds1", "containerd://1.7.20", True),
    ("containerd://v2.1.4", "containerd://2.1.4", True),
    ("cri-o://1.30.1", "containerd://1.30.1", False),
    ("containerd://1.7.19", "containerd://1.7.20", False),
])
def test_same_runtime(cri_version, node_version, same) -> None:
    """CRI-003 compares kube.parse_runtime releases: a distro suffix or a leading v is the same runtime."""
    assert (kube.parse_runtime(cri_version) == kube.parse_runtime(node_version)) is same
    verdict = cri.judge_runtime_matches(HOST, runtime(version=node_version), cri_version, SOCK)
    assert verdict.status == ("pass" if same else "fail")


def test_runtime_version_from_crictl() -> None:
    assert cri.runtime_version(ran(VERSION_OUT)) == "containerd://1.7.20~ds1"
    assert cri.runtime_version(ran(rc=1)) is None
    assert cri.runtime_version(ran("nothing useful")) is None


def test_judge_runtime_matches() -> None:
    assert cri.judge_runtime_matches(HOST, runtime(), "containerd://1.7.20~ds1", SOCK).status == "pass"
    v = cri.judge_runtime_matches(HOST, runtime(), "cri-o://1.30.1", SOCK)
    assert v.status == "fail" and v.subject == "container runtime of node n1"
    assert v.expected == "containerd://1.7.20 (node status)" and f"unix://{SOCK}" in v.observed
    silent = cri.judge_runtime_matches(HOST, runtime(), None, SOCK)
    assert silent.status == "skip" and silent.blames == "CRI-002"
    unknown = cri.judge_runtime_matches(HOST, None, None, "")
    assert unknown.status == "skip" and unknown.blames is None and "--kubeconfig" in unknown.reason
    # a kubelet whose Version calls fail reports RUNTIME://Unknown: a failure that says so, not a version mismatch
    lost = cri.judge_runtime_matches(HOST, runtime(version="containerd://Unknown"), "containerd://1.7.20", SOCK)
    assert lost.status == "fail" and "kubelet's own Version calls" in lost.observed and "kubelet's log" in lost.fix


def test_judge_dockershim() -> None:
    assert cri.judge_dockershim(HOST, runtime(), SOCK).status == "pass"
    assert cri.judge_dockershim(HOST, None, SOCK).status == "pass"
    shim = cri.judge_dockershim(HOST, runtime(annotation="unix:///var/run/dockershim.sock"), SOCK)
    assert shim.status == "fail" and shim.observed == "/var/run/dockershim.sock" and CRI_SOCKET_ANNOTATION in shim.fix
    both = cri.judge_dockershim(HOST, runtime(annotation="unix:///var/run/dockershim.sock"), "/var/run/dockershim.sock")
    assert both.status == "fail" and both.observed == "/var/run/dockershim.sock"    # one path, said once
    docker = cri.judge_dockershim(HOST, runtime(version="docker://24.0.7"), None)
    assert docker.status == "fail" and "without a cri-dockerd socket" in docker.observed
    assert cri.judge_dockershim(HOST, runtime(version="docker://24.0.7"), "/run/cri-dockerd.sock").status == "pass"
    old = cri.judge_dockershim(HOST, runtime(kubelet="v1.23.17", annotation="unix:///var/run/dockershim.sock"), None)
    assert old.status == "skip" and "1.24" in old.reason
