"""Node rules (clusterproof.nodes) on real-shaped V1Node objects: skew policy, readiness, taints."""
from __future__ import annotations

import pytest
from kubernetes import client

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
    assert rules.network_not_ready(cni_down)
    assert not rules.network_not_ready(kubelet_down)
    assert not rules.network_not_ready(node())


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
    assert rules.is_control_plane(cp)
    assert rules.schedulable_problems(cp) == ["taint node-role.kubernetes.io/control-plane:NoSchedule"]
    assert not rules.is_control_plane(worker)
