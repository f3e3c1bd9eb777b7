"""The cluster snapshot (clusterproof.facts), the version parser and kubeconfig resolver (clusterproof.kube),
the one CNI detector, and the stash-backed fixtures that hand the snapshot to the hosts list."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from kubernetes import client

from clusterproof import cni, facts, kube
from conftest import closed_port

ROOT = Path(__file__).resolve().parent.parent


def v1node(name="n1", ready="True", reason="KubeletReady", message="kubelet is posting ready status", ip="10.0.0.1",
           labels=None, annotations=None, taints=(), runtime="containerd://1.7.20", kubelet="v1.35.4",
           conditions=True, pod_cidr="10.244.1.0/24") -> client.V1Node:
    conds = [client.V1NodeCondition(type="Ready", status=ready, reason=reason, message=message),
             client.V1NodeCondition(type="MemoryPressure", status="False", reason="KubeletHasSufficientMemory")]
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name, **(labels or {})},
                                     annotations=annotations),
        spec=client.V1NodeSpec(taints=[client.V1Taint(key=k, effect=e) for k, e in taints] or None,
                               pod_cidr=pod_cidr, pod_cidrs=[pod_cidr] if pod_cidr else None),
        status=client.V1NodeStatus(
            addresses=[client.V1NodeAddress(type="InternalIP", address=ip)] if ip else
            [client.V1NodeAddress(type="Hostname", address=name)],
            conditions=conds if conditions else None,
            node_info=client.V1NodeSystemInfo(kubelet_version=kubelet, architecture="amd64", boot_id="b",
                                              container_runtime_version=runtime, kernel_version="6.1",
                                              kube_proxy_version="", machine_id="m", operating_system="linux",
                                              os_image="Debian", system_uuid="u")))


# ------------------------------------------------------------------ versions

@pytest.mark.parametrize(("text", "want"), [
    ("v1.35.4", (1, 35, 4)), ("1.30", (1, 30, 0)), ("v1.30.2-eks-1", (1, 30, 2)), ("v1.29.3+k3s1", (1, 29, 3)),
    (" v1.31.0 ", (1, 31, 0)), ("garbage", None), ("", None), (None, None),
], ids=["plain", "no-patch", "eks", "k3s", "spaces", "garbage", "empty", "none"])
def test_parse_version(text, want) -> None:
    got = kube.parse_version(text)
    assert (tuple(got) if got else None) == want


def test_version_orders_and_prints() -> None:
    v = kube.parse_version("v1.24.0")
    assert v is not None and v.minor_version == (1, 24) and str(v) == "v1.24.0"
    assert v < kube.Version(1, 25) and v >= (1, 24)


def test_parse_runtime_compares_releases_not_packaging() -> None:
    node = kube.parse_runtime("containerd://1.6.20")
    assert (node.name, node.version, str(node)) == ("containerd", "1.6.20", "containerd://1.6.20")
    assert kube.parse_runtime("containerd://1.6.20~ds1") == node
    assert kube.parse_runtime("containerd://v1.6.20") == node
    assert kube.parse_runtime("cri-o://1.30.1") != node
    assert kube.parse_runtime("docker://26.1.0").semver == kube.Version(26, 1, 0)
    assert kube.parse_runtime("").name == ""


# ------------------------------------------------------------------ kubeconfig

def test_resolve_kubeconfig_order_and_best_effort(tmp_path, monkeypatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("x")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    assert kube.resolve_kubeconfig(None) == str(first)
    assert kube.resolve_kubeconfig(str(second), required=False) is None
    with pytest.raises(kube.InputError) as info:
        kube.resolve_kubeconfig(str(second))
    assert info.value.code == kube.EXIT_KUBECONFIG
    assert "does not exist" in str(info.value)
    assert kube.resolve_kubeconfig(str(tmp_path), required=False) is None    # a folder cannot be read
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kube.kubeconfig_candidate(None) == tmp_path / ".kube" / "config"


# ------------------------------------------------------------------ readiness and NodeFacts

def test_node_facts_from_a_ready_control_plane() -> None:
    n = facts.node_facts(v1node(labels={"node-role.kubernetes.io/control-plane": ""},
                                annotations={facts.CRI_SOCKET_ANNOTATION: "unix:///run/containerd/containerd.sock"},
                                taints=[("node-role.kubernetes.io/control-plane", "NoSchedule")]))
    assert (n.name, n.internal_ip, n.roles) == ("n1", "10.0.0.1", ["control-plane"])
    assert n.ready and n.not_ready_reason is None and n.problem is None
    assert n.is_control_plane and facts.is_control_plane(n.raw)
    assert n.runtime == kube.Runtime("containerd", "1.7.20")
    assert n.kubelet == kube.Version(1, 35, 4)
    assert n.cri_socket == "/run/containerd/containerd.sock"
    assert n.hostname == "n1" and n.pod_cidrs == ["10.244.1.0/24"]
    assert n.conditions["MemoryPressure"].status == "False"


def test_node_facts_not_ready_and_without_ip() -> None:
    cni_down = facts.node_facts(v1node(ready="False", reason="KubeletNotReady", ip=None,
                                       message="container runtime network not ready: NetworkReady=false "
                                               "reason:NetworkPluginNotReady message:cni plugin not initialized"))
    assert not cni_down.ready and cni_down.network_not_ready
    assert (cni_down.not_ready_reason or "").startswith("Ready=False (KubeletNotReady")
    assert cni_down.internal_ip is None
    assert cni_down.problem is not None and "no InternalIP" in cni_down.problem
    assert cni_down.cri_socket is None and not cni_down.is_control_plane
    never = facts.node_facts(v1node(conditions=False))
    assert not never.ready and not never.network_not_ready
    assert never.not_ready_reason == "no Ready condition (kubelet never reported)"
    stopped = v1node(ready="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.")
    assert not facts.is_ready(stopped) and not facts.network_not_ready(stopped)
    assert facts.ready_text(stopped).startswith("Ready=Unknown (NodeStatusUnknown")


def test_hand_built_node_facts_keep_working() -> None:
    n = facts.NodeFacts(name="g", internal_ip="10.0.0.9", roles=["<none>"], kubelet_version="v1.35.0",
                        runtime_version="containerd://2.1", kernel_version="6.8", os_image="Ubuntu", pod_cidrs=[],
                        taints=[], annotations={}, labels={}, allocatable={}, capacity={})
    assert n.ready and n.runtime.name == "containerd" and n.hostname == "g"


def test_snapshot_names_the_nodes_left_out() -> None:
    nodes = [facts.node_facts(v1node("b", ready="False", reason="KubeletNotReady", message="PLEG is not healthy")),
             facts.node_facts(v1node("a")), facts.node_facts(v1node("c", ip=None))]
    snap = facts.ClusterFacts("https://api", "v1.35.4", "ctx", sorted(nodes, key=lambda n: n.name))
    assert [n.name for n in snap.ready_nodes] == ["a", "c"]
    assert [n.name for n in snap.not_ready_nodes] == ["b"]
    assert snap.node("zz") is None and snap.node("a") is not None
    assert snap.left_out() == ["b: Ready=False (KubeletNotReady: PLEG is not healthy)"]
    assert snap.left_out({"a": "probe-0"}) == ["b: Ready=False (KubeletNotReady: PLEG is not healthy)",
                                               "c: no InternalIP in status.addresses"]
    assert snap.server_semver == kube.Version(1, 35, 4)
    assert snap.cni_detection.name == "unknown" and snap.cni is None


# ------------------------------------------------------------------ the one CNI detector

def test_detect_from_node_annotations_when_no_agent_is_seen() -> None:
    calico = [facts.node_facts(v1node(annotations={"projectcalico.org/IPv4Address": "10.0.0.1/24"}))]
    got = cni.detect([], None, calico)
    assert (got.name, got.title, got.agents) == ("calico", "Calico", [])
    assert got.evidence == ["node n1 annotation projectcalico.org/IPv4Address"]
    canal = [v1node(annotations={"projectcalico.org/IPv4Address": "x", "flannel.alpha.coreos.com/backend-type": "x"})]
    assert cni.detect(nodes=canal).name == "canal"
    assert cni.detect(nodes=[v1node(annotations={"k8s.ovn.org/node-subnets": "x"})]).title == "OVN-Kubernetes"


def test_detect_prefers_agents_and_keeps_meta_plugins_aside() -> None:
    def ds(name: str, image: str) -> client.V1DaemonSet:
        return client.V1DaemonSet(metadata=client.V1ObjectMeta(name=name, namespace="kube-system"),
                                  spec=client.V1DaemonSetSpec(selector=client.V1LabelSelector(), template=
                                  client.V1PodTemplateSpec(spec=client.V1PodSpec(
                                      containers=[client.V1Container(name=name, image=image)]))))
    nodes = [v1node(annotations={"flannel.alpha.coreos.com/backend-type": "vxlan"})]
    got = cni.detect([ds("kube-multus-ds", "ghcr.io/k8snetworkplumbingwg/multus-cni:v4"),
                      ds("cilium", "quay.io/cilium/cilium:v1.16")], None, nodes)
    assert (got.name, got.agents) == ("cilium", ["kube-system/cilium"])
    assert got.others == ["flannel", "multus"]
    assert "detected: cilium" in got.text() and "also seen: flannel, multus" in got.text()
    none = cni.detect([ds("kube-multus-ds", "multus")])
    assert (none.name, none.title, none.others) == ("unknown", None, ["multus"])


def test_detect_from_api_keeps_an_api_error_as_evidence() -> None:
    conf = client.Configuration(host=f"http://127.0.0.1:{closed_port()}")
    conf.retries = False
    got = cni.detect_from_api(client.ApiClient(conf), [v1node(annotations={"projectcalico.org/IPv4Address": "x"})])
    assert got.name == "calico"
    assert got.evidence[0].startswith("cannot list DaemonSets: "), got.evidence
    assert got.evidence[1] == "node n1 annotation projectcalico.org/IPv4Address"


# ------------------------------------------------------------------ the snapshot in config.stash, and the hosts

SEED = '''
import pytest
from kubernetes import client

from clusterproof import facts
from fixtures import cluster

pytest_plugins = ["fixtures.options", "fixtures.cluster", "fixtures.hosts"]


def node(name, ip, ready):
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
        spec=client.V1NodeSpec(),
        status=client.V1NodeStatus(
            addresses=[client.V1NodeAddress(type="InternalIP", address=ip)] if ip else [],
            conditions=[client.V1NodeCondition(type="Ready", status=ready, reason="R", message="m")],
            node_info=client.V1NodeSystemInfo(kubelet_version="v1.35.0", architecture="a", boot_id="b",
                                              container_runtime_version="containerd://2.0", kernel_version="6",
                                              kube_proxy_version="", machine_id="m", operating_system="linux",
                                              os_image="o", system_uuid="u")))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    assert cluster.cached_client(config) is None and cluster.cached_snapshot(config) is None
    config.stash[cluster.CLIENT_KEY] = cluster.Connection("kubeconfig", object(), "v1.35.0")
    nodes = [facts.node_facts(node("n-noip", None, "True")), facts.node_facts(node("n-down", "127.0.0.1", "False"))]
    config.stash[cluster.SNAPSHOT_KEY] = facts.ClusterFacts("https://api", "v1.35.0", "ctx", nodes)
'''

CHECK = '''
def test_host_reached(node_host, host_node, pytestconfig):
    from fixtures import cluster
    assert cluster.cached_snapshot(pytestconfig).node(host_node.name) is host_node
'''


def test_every_node_is_a_host_and_one_without_ip_errors_saying_so(pytester: pytest.Pytester, monkeypatch) -> None:
    pytester.makeconftest(textwrap.dedent(SEED))
    pytester.makepyfile(test_check=CHECK)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-rE",
                                      "-W", "ignore::pytest.PytestAssertRewriteWarning",
                                      "--ssh-port", str(closed_port()), timeout=120)
    r.assert_outcomes(errors=2)
    r.stdout.fnmatch_lines(["*ERROR at setup of test_host_reached?ssh://n-down?*",
                            "host ssh://n-down unreachable over SSH: *Connection refused*",
                            "*ERROR at setup of test_host_reached?ssh://n-noip?*",
                            "host ssh://n-noip: node n-noip has no InternalIP in status.addresses to reach it over "
                            "SSH; fix: pass --hosts ssh://user@address for that node, or --host-transport=pod"])
    assert r.ret == kube.EXIT_SSH


MARKED = '''
import pytest


@pytest.mark.host
def test_host_reached(node_host):
    pass


@pytest.mark.nodes
def test_nodes_only():
    pass
'''


@pytest.mark.parametrize(("markexpr", "collected", "deselected"), [
    (None, ["test_host_reached[ssh://n-down]", "test_host_reached[ssh://n-noip]", "test_nodes_only"], 0),
    ("not host", ["test_nodes_only"], 1),   # the host check as one item, not one per host
    ("nodes or (host and not nodes)", ["test_host_reached[ssh://n-down]", "test_host_reached[ssh://n-noip]",
                                       "test_nodes_only"], 0),
])
def test_a_host_check_that_m_deselects_is_not_expanded_per_host(pytester: pytest.Pytester, monkeypatch,
                                                                  markexpr, collected, deselected) -> None:
    """Many nodes x host checks are many items: -m that rules a host check out leaves one item, not one per host."""
    pytester.makeconftest(textwrap.dedent(SEED))
    pytester.makepyfile(test_check=MARKED)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    args = ["-p", "no:cacheprovider", "-p", "no:randomly", "--collect-only", "-q",
            "-W", "ignore::pytest.PytestAssertRewriteWarning", *(["-m", markexpr] if markexpr else [])]
    r = pytester.runpytest_subprocess(*args, timeout=120)
    got = sorted(line.split("::", 1)[1] for line in r.stdout.lines if "::" in line)
    assert got == collected, r.stdout.str()
    assert r.parseoutcomes().get("deselected", 0) == deselected, r.stdout.str()


@pytest.mark.parametrize(("expr", "names", "ruled_out"), [
    ("not host", {"host", "check"}, True),
    ("not host", {"nodes"}, False),
    ("nodes or (gpu and not slow)", {"host", "check", "timeout"}, True),
    ("nodes or (gpu and not slow)", {"gpu", "slow"}, True),
    ("nodes or (gpu and not slow)", {"gpu"}, False),
    ("not (host or runtime)", {"runtime"}, True),
    ("not not host", {"host"}, False),
    ("host and", {"nodes"}, False),                 # a syntax error is pytest's to report
    ("(host", {"nodes"}, False),
    ("check(ID='HOST-001')", {"check"}, False),     # marker arguments: pytest decides
    ("host or nodes(x=1)", {"gpu"}, False),
    ("host == 1", {"gpu"}, False),
])
def test_mark_expression_rules_out(expr, names, ruled_out) -> None:
    from fixtures.hosts import mark_expression_rules_out

    assert mark_expression_rules_out(expr, names) is ruled_out
