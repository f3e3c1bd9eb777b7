"""Node objects: Ready, no pressure, kubelet version skew, somewhere to schedule, CoreDNS available.

Read-only: the checks read the run's cluster snapshot (the `cluster` fixture's Node objects) and the
CoreDNS objects, and create nothing. The rules are `clusterproof.nodes.judge_*`. A node NotReady
only because its runtime's network is not ready is the CNI checks' finding (CNI-002 names the node
and the fix), so NODE-001 skips pointing at it instead of reporting it a second time.
"""
from __future__ import annotations

import pytest

from clusterproof import facts, timeouts
from clusterproof import nodes as rules
from clusterproof.checks import apply, evidence


def _nodes(cluster) -> list:
    """The snapshot's V1Node objects, by name."""
    return [n.raw for n in sorted(cluster.nodes, key=lambda n: n.name)]


@pytest.mark.check("NODE-001")
def test_every_node_ready(cluster) -> None:
    nodes = _nodes(cluster)
    evidence("kubectl get nodes (Ready condition)", rules.node_table(nodes))
    apply(rules.judge_ready(nodes))


@pytest.mark.check("NODE-002")
@pytest.mark.parametrize("kind", list(rules.PRESSURE), ids=list(rules.PRESSURE))
def test_no_node_pressure(cluster, kind: str) -> None:
    nodes = _nodes(cluster)
    evidence(f"kubectl get nodes -o jsonpath='{{.items[*].status.conditions[?(@.type==\"{kind}\")]}}'",
             "\n".join(f"{n.metadata.name}: {kind}={getattr(facts.condition(n, kind), 'status', 'absent')}"
                       for n in nodes))
    apply(rules.judge_pressure(nodes, kind))


@pytest.mark.check("NODE-003")
def test_kubelet_version_skew(cluster) -> None:
    nodes = _nodes(cluster)
    evidence("kubectl version; kubectl get nodes (VERSION)",
             f"API server {cluster.server_version}\n" + "\n".join(
                 f"{n.metadata.name}: kubelet {n.status.node_info.kubelet_version}" for n in nodes))
    apply(rules.judge_skew(nodes, cluster.server_version))


@pytest.mark.check("NODE-004")
def test_some_node_accepts_workloads(cluster) -> None:
    """A lone control-plane node gets the command that removes its control-plane taint as the fix."""
    nodes = _nodes(cluster)
    evidence("kubectl get nodes (taints, unschedulable)", "\n".join(
        f"{n.metadata.name}: {'; '.join(rules.schedulable_problems(n)) or 'accepts workloads'}" for n in nodes))
    apply(rules.judge_some_schedulable(nodes))


@pytest.mark.check("NODE-005")
def test_workers_accept_workloads(cluster) -> None:
    """A worker is a node without the control-plane label or taint."""
    nodes = _nodes(cluster)
    evidence("kubectl get nodes -o custom-columns=NAME:.metadata.name,TAINTS:.spec.taints,UNSCHED:.spec.unschedulable",
             "\n".join(f"{n.metadata.name}: control-plane={facts.is_control_plane(n)} "
                       f"taints={[rules.taint_text(t) for t in n.spec.taints or []]} "
                       f"unschedulable={bool(n.spec.unschedulable)}" for n in nodes))
    apply(rules.judge_workers_schedulable(nodes))


@pytest.mark.check("NODE-006")
def test_coredns_available(apps_v1, core_v1) -> None:
    """The DNS Deployment is found by its k8s-app=kube-dns label, else by the name coredns or kube-dns."""
    t = timeouts.get("api")
    deps = rules.coredns_deployments(apps_v1.list_namespaced_deployment("kube-system", _request_timeout=t).items)
    pods = core_v1.list_namespaced_pod("kube-system", label_selector=rules.COREDNS_SELECTOR, _request_timeout=t).items
    evidence(f"kubectl -n kube-system get deploy,pods -l {rules.COREDNS_SELECTOR} -o wide",
             rules.coredns_table(deps, pods))
    apply(rules.judge_coredns(deps, pods))
