"""Pure rules about Node objects: readiness, pressure, version skew, taints, CoreDNS. Unit-tested without a cluster.

Functions take kubernetes client models (V1Node, V1Deployment, V1Pod) or anything shaped like them;
the `judge_*` functions return the check's Verdict (suites/nodes only gathers and applies them).
"""
from __future__ import annotations

from typing import Any

from .facts import CONTROL_PLANE_KEYS, condition, is_control_plane, is_ready, network_not_ready, ready_text
from .kube import parse_version
from .pods import is_ready as pod_ready
from .verdict import Verdict, worst

# Taints the node lifecycle controller sets from conditions or cordon: the condition checks own them.
LIFECYCLE_TAINT_PREFIX = "node.kubernetes.io/"
CONTROL_PLANE_TAINTS = CONTROL_PLANE_KEYS
# The kubelet may be up to 3 minor versions older than the API server, never newer (version skew policy).
KUBELET_MAX_MINORS_BEHIND = 3


def skew_problem(kubelet: str, server: str) -> str | None:
    """Why a kubelet version breaks the skew policy against the API server, or None when it is allowed."""
    k, s = parse_version(kubelet), parse_version(server)
    if k is None or s is None:
        return f"cannot parse version (kubelet {kubelet!r}, server {server!r})"
    if k.major != s.major:
        return f"kubelet major {k.major} differs from API server major {s.major}"
    if k.minor > s.minor:
        return f"kubelet {kubelet} is newer than the API server {server}"
    if s.minor - k.minor > KUBELET_MAX_MINORS_BEHIND:
        return (f"kubelet {kubelet} is {s.minor - k.minor} minor versions older than the API server {server} "
                f"(at most {KUBELET_MAX_MINORS_BEHIND} allowed)")
    return None


def blocking_taints(node: Any, include_lifecycle: bool = False) -> list[Any]:
    """NoSchedule/NoExecute taints that keep ordinary pods off the node (lifecycle taints only on request)."""
    out = []
    for t in node.spec.taints or []:
        if t.effect not in ("NoSchedule", "NoExecute"):
            continue
        if not include_lifecycle and t.key.startswith(LIFECYCLE_TAINT_PREFIX):
            continue
        out.append(t)
    return out


def taint_text(t: Any) -> str:
    return f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}"


def untaint_command(node: str, t: Any) -> str:
    return f"kubectl taint nodes {node} {t.key}:{t.effect}-"


def schedulable_problems(node: Any) -> list[str]:
    """Why ordinary workloads cannot land on the node (empty when they can)."""
    why = []
    if node.spec.unschedulable:
        why.append("cordoned (spec.unschedulable)")
    if not is_ready(node):
        why.append("not Ready")
    why += [f"taint {taint_text(t)}" for t in blocking_taints(node, include_lifecycle=True)
            if t.key != "node.kubernetes.io/unschedulable"]
    return why


# ------------------------------------------------------------------ verdicts (one per check)

PRESSURE = {
    "MemoryPressure": "free memory on the node (stop or move pods, raise memory) or fix kubelet's "
                      "--eviction-hard memory.available threshold",
    "DiskPressure": "free disk on the node's root and image filesystems (crictl rmi --prune, clean /var/log) "
                    "or grow them",
    "PIDPressure": "find the process leaking PIDs (ps -eLf | wc -l) or raise kernel.pid_max / the pod's pids limit",
}
COREDNS_SELECTOR = "k8s-app=kube-dns"
COREDNS_NAMES = ("coredns", "kube-dns")


def _name(node: Any) -> str:
    return str(node.metadata.name)


def _names(rows: list[str]) -> str:
    return ", ".join(dict.fromkeys(r.split(":", 1)[0] for r in rows))


def judge_ready(nodes: list[Any]) -> Verdict:
    """NODE-001: every node Ready=True; a node NotReady only for its runtime's network is CNI-002's finding."""
    if not nodes:
        return Verdict.failed("cluster", "at least one Node", "no Node objects",
                              "join a node (kubeadm join ...) and start its kubelet")
    bad = [n for n in nodes if not is_ready(n)]
    own = [n for n in bad if not network_not_ready(n)]
    if bad and not own:
        return Verdict.skipped(f"node(s) {', '.join(_name(n) for n in bad)} NotReady only because the runtime "
                               "network is not ready; CNI-002 reports that with its fix", blames="CNI-002")
    if own:
        return Verdict.failed(f"node(s) {', '.join(_name(n) for n in own)}", "Ready=True",
                              "; ".join(f"{_name(n)} {ready_text(n)}" for n in own),
                              "on each node: systemctl status kubelet; journalctl -u kubelet -n 50; "
                              f"kubectl describe node {_name(own[0])}",
                              rows=[f"{_name(n)}: {ready_text(n)}" for n in own])
    return Verdict.passed(f"{len(nodes)} node(s)", "Ready=True", "all Ready")


def judge_pressure(nodes: list[Any], kind: str) -> Verdict:
    """NODE-002: no node reports the pressure condition `kind` (MemoryPressure, DiskPressure, PIDPressure)."""
    rows = []
    for n in nodes:
        c = condition(n, kind)
        if c is not None and c.status == "True":
            rows.append(f"{_name(n)}: {kind}=True ({c.reason}: {(c.message or '').strip()[:120]})")
    if rows:
        return Verdict.failed(f"node(s) {_names(rows)}", f"{kind}=False", f"{kind}=True on {len(rows)} node(s)",
                              PRESSURE.get(kind, "relieve the pressure on the node"), rows=rows)
    return Verdict.passed(f"{len(nodes)} node(s)", f"{kind}=False", f"no node reports {kind}")


def judge_skew(nodes: list[Any], server_version: str) -> Verdict:
    """NODE-003: every kubelet within the version skew policy against the API server."""
    rows = []
    for n in nodes:
        problem = skew_problem(n.status.node_info.kubelet_version, server_version)
        if problem:
            rows.append(f"{_name(n)}: {problem}")
    expected = (f"a kubelet version between {server_version} minus {KUBELET_MAX_MINORS_BEHIND} minors and "
                f"{server_version}")
    if rows:
        return Verdict.failed(f"kubelet on {_names(rows)}", expected, "; ".join(rows),
                              "upgrade the control plane first, then the kubelets one minor at a time "
                              "(kubeadm upgrade node; apt-get install kubelet=<version>; systemctl restart kubelet)",
                              rows=rows)
    return Verdict.passed(f"{len(nodes)} kubelet(s)", expected,
                          ", ".join(sorted({n.status.node_info.kubelet_version for n in nodes})) or "no nodes")


def judge_some_schedulable(nodes: list[Any]) -> Verdict:
    """NODE-004: at least one node accepts ordinary workloads; a lone control-plane node gets the untaint fix."""
    why = {_name(n): schedulable_problems(n) for n in nodes}
    good = [k for k, v in why.items() if not v]
    if good:
        return Verdict.passed("cluster", "at least one node that accepts workloads", ", ".join(good))
    if len(nodes) == 1 and is_control_plane(nodes[0]):
        n = nodes[0]
        cp = [t for t in n.spec.taints or [] if t.key in CONTROL_PLANE_TAINTS]
        fix = "; ".join(untaint_command(_name(n), t) for t in cp) or \
            f"kubectl taint nodes {_name(n)} node-role.kubernetes.io/control-plane:NoSchedule-"
        return Verdict.failed(f"single-node cluster {_name(n)}", "the only node to accept workloads",
                              f"{'; '.join(why[_name(n)])} (the control-plane taint keeps every workload Pending)",
                              f"{fix} (let workloads run on the control-plane node)")
    fixes = []
    for n in nodes:
        if n.spec.unschedulable:
            fixes.append(f"kubectl uncordon {_name(n)}")
        fixes += [untaint_command(_name(n), t) for t in blocking_taints(n) if t.key not in CONTROL_PLANE_TAINTS]
    rows = [f"{k}: {', '.join(v)}" for k, v in why.items()]
    return Verdict.failed("cluster", "at least one node that accepts workloads",
                          "none: " + ("; ".join(rows) or "no Node objects"),
                          "; ".join(fixes[:4]) or "make a node Ready (NODE-001) or add a worker node (kubeadm join)",
                          rows=rows)


def judge_workers_schedulable(nodes: list[Any]) -> Verdict:
    """NODE-005: every worker (non-control-plane) node is not cordoned and has no NoSchedule/NoExecute taint."""
    rows, fixes = [], []
    workers = [n for n in nodes if not is_control_plane(n)]
    for n in workers:
        name = _name(n)
        if n.spec.unschedulable:
            rows.append(f"{name}: cordoned (spec.unschedulable=true)")
            fixes.append(f"kubectl uncordon {name}")
        for t in blocking_taints(n):
            rows.append(f"{name}: taint {taint_text(t)}")
            fixes.append(untaint_command(name, t))
    expected = "no NoSchedule/NoExecute taint and not cordoned"
    if rows:
        return Verdict.failed(f"worker node(s) {', '.join(sorted({r.split(':')[0] for r in rows}))}", expected,
                              "; ".join(rows), "; ".join(fixes[:4]) +
                              " (if the node is dedicated on purpose, deselect NODE-005 for it)", rows=rows)
    return Verdict.passed(f"{len(workers)} worker node(s)", expected,
                          ", ".join(_name(n) for n in workers) or "no worker nodes (control plane only)")


def coredns_deployments(deployments: list[Any]) -> list[Any]:
    """The cluster DNS Deployments among those listed (by label, else by the usual names)."""
    labelled = [d for d in deployments if (d.metadata.labels or {}).get("k8s-app") == "kube-dns"]
    return labelled or [d for d in deployments if d.metadata.name in COREDNS_NAMES]


def judge_coredns(deployments: list[Any], pods: list[Any]) -> Verdict:
    """NODE-006: the cluster DNS Deployment(s) have all replicas available, and at least one."""
    if not deployments:
        return Verdict.failed("kube-system/coredns", f"a Deployment labelled {COREDNS_SELECTOR}", "none",
                              "install CoreDNS (kubeadm init phase addon coredns)")
    unready = [f"{p.metadata.name} on {p.spec.node_name or 'no node'}: {p.status.phase}" for p in pods
               if not pod_ready(p)]
    verdicts = []
    for d in deployments:
        want, have = d.spec.replicas or 0, d.status.available_replicas or 0
        subject = f"deployment kube-system/{d.metadata.name}"
        if want == 0:
            verdicts.append(Verdict.failed(subject, "at least 1 available replica",
                                           "scaled to 0 replicas (spec.replicas=0)",
                                           f"kubectl -n kube-system scale deployment {d.metadata.name} --replicas=2"))
        elif have < want:
            verdicts.append(Verdict.failed(
                subject, f"{want}/{want} replicas available", f"{have}/{want} available",
                f"kubectl -n kube-system describe pods -l {COREDNS_SELECTOR}; kubectl -n kube-system logs "
                f"-l {COREDNS_SELECTOR} (a Pending CoreDNS usually means no node is Ready or a CNI is missing)",
                rows=unready))
        else:
            verdicts.append(Verdict.passed(subject, f"{want}/{want} replicas available", f"{have}/{want} available"))
    return worst(verdicts, "cluster DNS", "all replicas available")


# ------------------------------------------------------------------ evidence text

def node_table(nodes: list[Any]) -> str:
    """One line per node: Ready condition, kubelet version, taints, cordon."""
    return "\n".join(f"{_name(n)}: {ready_text(n)}; kubelet {n.status.node_info.kubelet_version}; "
                     f"taints {[taint_text(t) for t in n.spec.taints or []] or 'none'}; "
                     f"unschedulable={bool(n.spec.unschedulable)}" for n in nodes)


def coredns_table(deployments: list[Any], pods: list[Any]) -> str:
    return "\n".join(f"deployment {d.metadata.name}: replicas={d.spec.replicas} "
                     f"available={d.status.available_replicas or 0} ready={d.status.ready_replicas or 0}"
                     for d in deployments) + "\n" + "\n".join(
        f"pod {p.metadata.name} node={p.spec.node_name} phase={p.status.phase}" for p in pods)
