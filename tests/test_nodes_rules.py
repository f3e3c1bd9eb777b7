"""Node rules (clusterproof.nodes) on real-shaped V1Node objects: skew policy, readiness, taints."""
from __future__ import annotations

import pytest
from kubernetes import client

from clusterproof import facts
from clusterproof import nodes as rules


def node(name="n1", ready="True", message="kubelet is posting ready status", reason="KubeletReady",
         taints=(), labels=None, unschedulable=None, kubelet="v1.35.4") -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"kubernetes.io/hostname": name}),
        spec=client.V1NodeSpec(taints=[client.V1Taint(key=k, value=v, effect=e) for k, v, e in taints] or None,
                               unschedulable=unschedulable),
        status=client.V1NodeStatus(
            conditions=[client.V1NodeCondition(type="Ready", status=ready, reason=reason, message=message)],
            node_info=client.V1NodeSystemInfo(kubelet_version=kubelet, architecture="amd64", boot_id="b",
                                              container_runtime_version="containerd://1.7", kernel_version="6",
                                              kube_proxy_version="", machine_id="m", operating_system="linux",
                                              os_image="Debian", system_uuid="u")))


@pytest.mark.parametrize(("kubelet", "server", "ok"), [
    ("v1.35.4", "v1.35.4", True),
    ("v1.32.0", "v1.35.4", True),        # 3 minors older: allowed
    ("v1.31.9", "v1.35.4", False),       # 4 minors older
    ("v1.36.0", "v1.35.4", False),       # newer than the API server
    ("v1.30.2-eks-1", "v1.31.1+k3s1", True),
    ("v2.0.0", "v1.35.0", False),
    ("garbage", "v1.35.0", False),
], ids=["same", "3-older", "4-older", "newer", "vendor-suffixes", "major", "unparsable"])
def test_skew_policy(kubelet, server, ok) -> None:
    assert (rules.skew_problem(kubelet, server) is None) is ok


def test_network_not_ready_is_told_apart() -> None:
    cni_down = node(ready="False", reason="KubeletNotReady",
                    message="container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                            "message:Network plugin returns error: cni plugin not initialized")
    kubelet_down = node(ready="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.")
    assert facts.network_not_ready(cni_down)
    assert not facts.network_not_ready(kubelet_down)
    assert not facts.network_not_ready(node())


def test_taints_and_schedulability() -> None:
    worker = node(taints=[("clusterproof.io/fault", "true", "NoSchedule"),
                          ("node.kubernetes.io/not-ready", None, "NoSchedule"),
                          ("soft", None, "PreferNoSchedule")])
    assert [t.key for t in rules.blocking_taints(worker)] == ["clusterproof.io/fault"]
    assert rules.untaint_command("n1", rules.blocking_taints(worker)[0]) == \
        "kubectl taint nodes n1 clusterproof.io/fault:NoSchedule-"
    assert rules.schedulable_problems(node()) == []
    assert "cordoned (spec.unschedulable)" in rules.schedulable_problems(node(unschedulable=True))
    cp = node(taints=[("node-role.kubernetes.io/control-plane", None, "NoSchedule")])
    assert facts.is_control_plane(cp)
    assert rules.schedulable_problems(cp) == ["taint node-role.kubernetes.io/control-plane:NoSchedule"]
    assert not facts.is_control_plane(worker)


# ------------------------------------------------------------------ the verdicts the NODE checks apply

def with_condition(n: client.V1Node, kind: str, status: str, reason: str = "", message: str = "") -> client.V1Node:
    assert n.status is not None and n.status.conditions is not None
    n.status.conditions.append(client.V1NodeCondition(type=kind, status=status, reason=reason, message=message))
    return n


CP_TAINT = ("node-role.kubernetes.io/control-plane", None, "NoSchedule")
CP_LABELS = {"node-role.kubernetes.io/control-plane": ""}


def test_judge_ready() -> None:
    assert rules.judge_ready([node("a"), node("b")]).status == "pass"
    v = rules.judge_ready([node("a"), node("b", ready="Unknown", reason="NodeStatusUnknown",
                                            message="Kubelet stopped posting node status.")])
    assert v.status == "fail" and v.subject == "node(s) b" and "Kubelet stopped posting" in v.observed
    assert "kubectl describe node b" in v.fix and v.rows == ("b: Ready=Unknown (NodeStatusUnknown: Kubelet stopped "
                                                             "posting node status.)",)
    assert rules.judge_ready([]).status == "fail"


def test_judge_ready_leaves_a_network_not_ready_node_to_cni_002() -> None:
    cni = node("b", ready="False", reason="KubeletNotReady",
               message="container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady")
    v = rules.judge_ready([node("a"), cni])
    assert v.status == "skip" and v.blames == "CNI-002" and "node(s) b" in v.reason
    both = rules.judge_ready([cni, node("c", ready="Unknown", reason="NodeStatusUnknown", message="gone")])
    assert both.status == "fail" and both.subject == "node(s) c"


@pytest.mark.parametrize("kind", list(rules.PRESSURE))
def test_judge_pressure(kind) -> None:
    assert rules.judge_pressure([with_condition(node("a"), kind, "False")], kind).status == "pass"
    assert rules.judge_pressure([node("a")], kind).status == "pass"          # condition absent
    v = rules.judge_pressure([node("a"), with_condition(node("b"), kind, "True", "KubeletHas" + kind, "low")], kind)
    assert v.status == "fail" and v.subject == "node(s) b" and v.expected == f"{kind}=False"
    assert v.fix == rules.PRESSURE[kind] and v.rows == (f"b: {kind}=True (KubeletHas{kind}: low)",)


def test_judge_skew() -> None:
    assert rules.judge_skew([node("a"), node("b", kubelet="v1.32.1")], "v1.35.4").status == "pass"
    v = rules.judge_skew([node("a"), node("b", kubelet="v1.31.0")], "v1.35.4")
    assert v.status == "fail" and v.subject == "kubelet on b" and "4 minor versions older" in v.observed
    assert "kubeadm upgrade node" in v.fix


def test_judge_some_schedulable() -> None:
    cp = node("cp", taints=[CP_TAINT], labels=CP_LABELS)
    assert rules.judge_some_schedulable([cp, node("w")]).status == "pass"
    lone = rules.judge_some_schedulable([cp])
    assert lone.status == "fail" and lone.subject == "single-node cluster cp"
    assert "kubectl taint nodes cp node-role.kubernetes.io/control-plane:NoSchedule-" in lone.fix
    none = rules.judge_some_schedulable([cp, node("w", unschedulable=True)])
    assert none.status == "fail" and none.subject == "cluster" and "kubectl uncordon w" in none.fix
    assert len(none.rows) == 2
    assert rules.judge_some_schedulable([]).status == "fail"


def test_judge_workers_schedulable() -> None:
    cp = node("cp", taints=[CP_TAINT], labels=CP_LABELS)
    assert rules.judge_workers_schedulable([cp, node("w")]).status == "pass"
    only_cp = rules.judge_workers_schedulable([cp])
    assert only_cp.status == "pass" and "no worker" in only_cp.observed
    v = rules.judge_workers_schedulable([cp, node("w", taints=[("clusterproof.io/fault", "true", "NoSchedule")]),
                                         node("x", unschedulable=True)])
    assert v.status == "fail" and v.subject == "worker node(s) w, x"
    assert "w: taint clusterproof.io/fault=true:NoSchedule" in v.observed
    assert "kubectl taint nodes w clusterproof.io/fault:NoSchedule-" in v.fix and "kubectl uncordon x" in v.fix


def deployment(name="coredns", replicas=2, available=2, labels=None) -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, namespace="kube-system",
                                     labels=labels if labels is not None else {"k8s-app": "kube-dns"}),
        spec=client.V1DeploymentSpec(replicas=replicas, selector=client.V1LabelSelector(),
                                     template=client.V1PodTemplateSpec()),
        status=client.V1DeploymentStatus(available_replicas=available, ready_replicas=available))


def dns_pod(name: str, ready: bool) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(containers=[], node_name="n1"),
                        status=client.V1PodStatus(phase="Running" if ready else "Pending", conditions=[
                            client.V1PodCondition(type="Ready", status="True" if ready else "False")]))


def test_judge_coredns() -> None:
    assert rules.judge_coredns([deployment()], [dns_pod("a", True), dns_pod("b", True)]).status == "pass"
    zero = rules.judge_coredns([deployment(replicas=0, available=0)], [])
    assert zero.status == "fail" and zero.subject == "deployment kube-system/coredns"
    assert "scaled to 0" in zero.observed and "scale deployment coredns --replicas=2" in zero.fix
    short = rules.judge_coredns([deployment(available=1)], [dns_pod("a", True), dns_pod("b", False)])
    assert short.status == "fail" and short.observed == "1/2 available" and short.rows == ("b on n1: Pending",)
    missing = rules.judge_coredns([], [])
    assert missing.status == "fail" and "kubeadm init phase addon coredns" in missing.fix


def test_coredns_deployments_by_label_else_name() -> None:
    labelled, named, other = deployment("dns"), deployment("kube-dns", labels={}), deployment("web", labels={})
    assert rules.coredns_deployments([labelled, named, other]) == [labelled]
    assert rules.coredns_deployments([named, other]) == [named]
    assert rules.coredns_deployments([other]) == []
