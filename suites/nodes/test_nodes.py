"""Node objects: Ready, no pressure, kubelet version skew, somewhere to schedule, CoreDNS available.

Read-only: every check reads the API (nodes listed once per module) and creates nothing.
A node NotReady only because its runtime's network is not ready is the CNI checks' finding
(CNI-002 names the node and the fix), so NODE-001 does not report it a second time.
"""
from __future__ import annotations

import pytest

from clusterproof import nodes as rules
from clusterproof import timeouts
from clusterproof.checks import evidence, fail, require

PRESSURE = {
    "MemoryPressure": "free memory on the node (stop or move pods, raise memory) or fix kubelet's "
                      "--eviction-hard memory.available threshold",
    "DiskPressure": "free disk on the node's root and image filesystems (crictl rmi --prune, clean /var/log) "
                    "or grow them",
    "PIDPressure": "find the process leaking PIDs (ps -eLf | wc -l) or raise kernel.pid_max / the pod's pids limit",
}
COREDNS_SELECTOR = "k8s-app=kube-dns"


@pytest.fixture(scope="module")
def node_list(core_v1) -> list:
    """The cluster's Node objects, read once for this module."""
    items = core_v1.list_node(_request_timeout=timeouts.get("api")).items
    return sorted(items, key=lambda n: n.metadata.name)


def _table(node_list) -> str:
    return "\n".join(f"{n.metadata.name}: {rules.not_ready_text(n)}; kubelet {n.status.node_info.kubelet_version}; "
                     f"taints {[rules.taint_text(t) for t in n.spec.taints or []] or 'none'}; "
                     f"unschedulable={bool(n.spec.unschedulable)}" for n in node_list)


@pytest.mark.check("NODE-001")
def test_every_node_ready(node_list) -> None:
    """Every node MUST report Ready=True."""
    evidence("kubectl get nodes (Ready condition)", _table(node_list))
    require(bool(node_list), "cluster", "at least one Node", "no Node objects",
            "join a node (kubeadm join ...) and start its kubelet")
    bad = [n for n in node_list if not rules.is_ready(n)]
    own = [n for n in bad if not rules.network_not_ready(n)]
    if bad and not own:
        pytest.skip(f"node(s) {', '.join(n.metadata.name for n in bad)} NotReady only because the runtime network "
                    "is not ready; CNI-002 reports that with its fix")
    if own:
        names = ", ".join(n.metadata.name for n in own)
        fail(f"node(s) {names}", "Ready=True", "; ".join(f"{n.metadata.name} {rules.not_ready_text(n)}" for n in own),
             "on each node: systemctl status kubelet; journalctl -u kubelet -n 50; "
             f"kubectl describe node {own[0].metadata.name}",
             rows=[f"{n.metadata.name}: {rules.not_ready_text(n)}" for n in own])


@pytest.mark.check("NODE-002")
@pytest.mark.parametrize("kind", list(PRESSURE), ids=list(PRESSURE))
def test_no_node_pressure(node_list, kind: str) -> None:
    """No node MUST report memory, disk or PID pressure."""
    rows = []
    for n in node_list:
        c = rules.condition(n, kind)
        if c is not None and c.status == "True":
            rows.append(f"{n.metadata.name}: {kind}=True ({c.reason}: {(c.message or '').strip()[:120]})")
    evidence(f"kubectl get nodes -o jsonpath='{{.items[*].status.conditions[?(@.type==\"{kind}\")]}}'",
             "\n".join(f"{n.metadata.name}: {kind}={getattr(rules.condition(n, kind), 'status', 'absent')}"
                       for n in node_list))
    require(not rows, f"node(s) {', '.join(r.split(':')[0] for r in rows)}", f"{kind}=False",
            f"{kind}=True on {len(rows)} node(s)", PRESSURE[kind], rows=rows)


@pytest.mark.check("NODE-003")
def test_kubelet_version_skew(node_list, cluster) -> None:
    """Every kubelet MUST be no newer than the API server and at most 3 minor versions older."""
    server = cluster.server_version
    rows = []
    for n in node_list:
        problem = rules.skew_problem(n.status.node_info.kubelet_version, server)
        if problem:
            rows.append(f"{n.metadata.name}: {problem}")
    evidence("kubectl version; kubectl get nodes (VERSION)",
             f"API server {server}\n" + "\n".join(f"{n.metadata.name}: kubelet {n.status.node_info.kubelet_version}"
                                                  for n in node_list))
    require(not rows, f"kubelet on {', '.join(r.split(':')[0] for r in rows)}",
            f"a kubelet version between {server} minus {rules.KUBELET_MAX_MINORS_BEHIND} minors and {server}",
            "; ".join(rows), "upgrade the control plane first, then the kubelets one minor at a time "
            "(kubeadm upgrade node; apt-get install kubelet=<version>; systemctl restart kubelet)", rows=rows)


@pytest.mark.check("NODE-004")
def test_some_node_accepts_workloads(node_list) -> None:
    """At least one node MUST accept ordinary workloads (Ready, not cordoned, no NoSchedule/NoExecute taint)."""
    why = {n.metadata.name: rules.schedulable_problems(n) for n in node_list}
    evidence("kubectl get nodes (taints, unschedulable)", "\n".join(
        f"{k}: {'accepts workloads' if not v else '; '.join(v)}" for k, v in why.items()))
    if any(not v for v in why.values()):
        return
    if len(node_list) == 1 and rules.is_control_plane(node_list[0]):
        n = node_list[0]
        cp = [t for t in n.spec.taints or [] if t.key in rules.CONTROL_PLANE_TAINTS]
        fix = "; ".join(rules.untaint_command(n.metadata.name, t) for t in cp) or \
            f"kubectl taint nodes {n.metadata.name} node-role.kubernetes.io/control-plane:NoSchedule-"
        fail(f"single-node cluster {n.metadata.name}", "the only node to accept workloads",
             f"{'; '.join(why[n.metadata.name])} (the control-plane taint keeps every workload Pending)",
             f"{fix} (let workloads run on the control-plane node)")
    fixes = []
    for n in node_list:
        if n.spec.unschedulable:
            fixes.append(f"kubectl uncordon {n.metadata.name}")
        fixes += [rules.untaint_command(n.metadata.name, t) for t in rules.blocking_taints(n)
                  if t.key not in rules.CONTROL_PLANE_TAINTS]
    fail("cluster", "at least one node that accepts workloads", "none: " + "; ".join(
        f"{k}: {', '.join(v)}" for k, v in why.items()),
        "; ".join(fixes[:4]) or "make a node Ready (NODE-001) or add a worker node (kubeadm join)",
        rows=[f"{k}: {', '.join(v)}" for k, v in why.items()])


@pytest.mark.check("NODE-005")
def test_workers_accept_workloads(node_list) -> None:
    """Every worker (non-control-plane) node MUST accept workloads: not cordoned, no NoSchedule/NoExecute taint."""
    rows, fixes = [], []
    for n in node_list:
        if rules.is_control_plane(n):
            continue
        name = n.metadata.name
        if n.spec.unschedulable:
            rows.append(f"{name}: cordoned (spec.unschedulable=true)")
            fixes.append(f"kubectl uncordon {name}")
        for t in rules.blocking_taints(n):
            rows.append(f"{name}: taint {rules.taint_text(t)}")
            fixes.append(rules.untaint_command(name, t))
    evidence("kubectl get nodes -o custom-columns=NAME:.metadata.name,TAINTS:.spec.taints,UNSCHED:.spec.unschedulable",
             "\n".join(f"{n.metadata.name}: control-plane={rules.is_control_plane(n)} "
                       f"taints={[rules.taint_text(t) for t in n.spec.taints or []]} "
                       f"unschedulable={bool(n.spec.unschedulable)}" for n in node_list))
    require(not rows, f"worker node(s) {', '.join(sorted({r.split(':')[0] for r in rows}))}",
            "no NoSchedule/NoExecute taint and not cordoned", "; ".join(rows),
            "; ".join(fixes[:4]) + " (if the node is dedicated on purpose, deselect NODE-005 for it)", rows=rows)


@pytest.mark.check("NODE-006")
def test_coredns_available(apps_v1, core_v1) -> None:
    """The cluster DNS (CoreDNS, k8s-app=kube-dns in kube-system) MUST have all its replicas available, at least one."""
    t = timeouts.get("api")
    deps = apps_v1.list_namespaced_deployment("kube-system", label_selector=COREDNS_SELECTOR, _request_timeout=t).items
    if not deps:
        deps = [d for d in apps_v1.list_namespaced_deployment("kube-system", _request_timeout=t).items
                if d.metadata.name in ("coredns", "kube-dns")]
    pods = core_v1.list_namespaced_pod("kube-system", label_selector=COREDNS_SELECTOR, _request_timeout=t).items
    evidence(f"kubectl -n kube-system get deploy,pods -l {COREDNS_SELECTOR} -o wide",
             "\n".join(f"deployment {d.metadata.name}: replicas={d.spec.replicas} "
                       f"available={d.status.available_replicas or 0} ready={d.status.ready_replicas or 0}"
                       for d in deps) + "\n" + "\n".join(
                 f"pod {p.metadata.name} node={p.spec.node_name} phase={p.status.phase}" for p in pods))
    require(bool(deps), "kube-system/coredns", f"a Deployment labelled {COREDNS_SELECTOR}", "none",
            "install CoreDNS (kubeadm init phase addon coredns)")
    for d in deps:
        want, have = d.spec.replicas or 0, d.status.available_replicas or 0
        subject = f"deployment kube-system/{d.metadata.name}"
        if want == 0:
            fail(subject, "at least 1 available replica", "scaled to 0 replicas (spec.replicas=0)",
                 f"kubectl -n kube-system scale deployment {d.metadata.name} --replicas=2")
        unready = [f"{p.metadata.name} on {p.spec.node_name or 'no node'}: {p.status.phase}" for p in pods
                   if not any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        require(have >= want, subject, f"{want}/{want} replicas available", f"{have}/{want} available",
                f"kubectl -n kube-system describe pods -l {COREDNS_SELECTOR}; kubectl -n kube-system logs "
                f"-l {COREDNS_SELECTOR} (a Pending CoreDNS usually means no node is Ready or a CNI is missing)",
                rows=unready)
