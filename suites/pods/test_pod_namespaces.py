"""A pod's containers share the pause container's net, ipc and uts namespaces (the course's `ls -l /proc/<pid>/ns`).

The module starts, on every Ready node, a two-container pod (manifests/pods/two-containers.yaml),
and one more with `shareProcessNamespace: true`. Inside the pod each container reads
`readlink /proc/self/ns/*`; from the node (host transport: SSH or the probe DaemonSet) crictl finds
the pod's sandbox and containers and their PIDs, and `/proc/<pid>/ns` gives the namespace inodes.
"""
from __future__ import annotations

import copy

import pytest

from clusterproof import checks, podns, pods, timeouts
from clusterproof.checks import evidence, fail, require

pytestmark = pytest.mark.slow
CONTAINERS = ("app", "sidecar")


@pytest.fixture(scope="module")
def share_pods(workloads: pods.Workloads, ready_nodes: dict[str, str], pytestconfig: pytest.Config) -> dict:
    """{"per_node": {node: pod}, "pid": pod or None}: two-container pods, Running, one per Ready node."""
    template = pods.load_manifest("pods/two-containers.yaml")[0]
    image = pytestconfig.getoption("probe_image")
    per_node: dict[str, str] = {}
    for i, (node, hostname) in enumerate(sorted(ready_nodes.items())):
        body = copy.deepcopy(template)
        body["metadata"]["name"] = f"share-{i}"
        for c in body["spec"]["containers"]:
            c["image"] = image
        body["spec"]["affinity"] = pods.node_affinity(hostname)
        workloads.create(body)
        per_node[node] = f"share-{i}"
    pid_pod = None
    if ready_nodes:
        body = copy.deepcopy(template)
        body["metadata"]["name"] = pid_pod = "share-pid"
        body["spec"]["shareProcessNamespace"] = True
        for c in body["spec"]["containers"]:
            c["image"] = image
        body["spec"]["affinity"] = pods.node_affinity(ready_nodes[sorted(ready_nodes)[0]])
        workloads.create(body)
    names = [*per_node.values(), *([pid_pod] if pid_pod else [])]
    if names:
        workloads.wait_pods(names)
    return {"per_node": per_node, "pid": pid_pod}


def _links(workloads: pods.Workloads, pod: str, container: str) -> dict[str, str]:
    """Namespace links of one container (exec transport failures retried; a bad answer is not)."""

    class _R:
        def __init__(self, res: pods.ExecResult):
            self.res, self.conclusive = res, not res.error and res.rc is not None

    got = pods.conclusive(lambda: _R(pods.exec_in_pod(workloads.core_v1, workloads.namespace, pod,
                                                       podns.IN_POD_ARGV, container=container))).res
    evidence(f"kubectl exec -n {workloads.namespace} {pod} -c {container} -- {' '.join(podns.IN_POD_ARGV)}",
             got.evidence())
    if got.error or got.rc != 0:
        fail(f"pod {workloads.namespace}/{pod} container {container}", "readlink /proc/self/ns/* to print the links",
             got.error or f"exit {got.rc}: {got.stderr.strip()[:160]}",
             "check the exec API (kubectl exec) works and the probe image has readlink (--probe-image)")
    return podns.parse_links(got.stdout)


def _compare_containers(workloads: pods.Workloads, pod: str, shared: tuple[str, ...],
                        apart: tuple[str, ...]) -> tuple[list[str], str]:
    a, b = (_links(workloads, pod, c) for c in CONTAINERS)
    rows = [f"{pod}: {k} differs ({CONTAINERS[0]} {a.get(k)}, {CONTAINERS[1]} {b.get(k)})"
            for k in podns.compare(a, b, shared)]
    rows += [f"{pod}: {k} shared ({a.get(k)}) but must not be" for k in apart if a.get(k) and a.get(k) == b.get(k)]
    table = "\n".join(f"{k}: {CONTAINERS[0]}={a.get(k)} {CONTAINERS[1]}={b.get(k)}" for k in podns.KINDS)
    return rows, table


@pytest.mark.check("POD-001")
def test_containers_share_net_ipc_uts_not_mnt(share_pods: dict, workloads: pods.Workloads) -> None:
    if not share_pods["per_node"]:
        checks.skip("no Ready node to run a pod on; NODE-001 reports why", blames="NODE-001")
    rows = []
    for node, pod in sorted(share_pods["per_node"].items()):
        r, table = _compare_containers(workloads, pod, podns.SHARED, ("mnt",))
        evidence(f"namespaces of pod {pod} on {node}", table)
        rows += r
    require(not rows, "two-container pods", "net/ipc/uts inodes equal and mnt inodes different across containers",
            "; ".join(rows[:3]), "the runtime must join every container to the sandbox's namespaces: check the "
            "containerd/CRI-O version and its CRI config (kubelet --container-runtime-endpoint)", rows=rows)


@pytest.mark.check("POD-002")
def test_share_process_namespace_shares_pid(share_pods: dict, workloads: pods.Workloads) -> None:
    if not share_pods["pid"]:
        checks.skip("no Ready node to run a pod on; NODE-001 reports why", blames="NODE-001")
    rows, table = _compare_containers(workloads, share_pods["pid"], (*podns.SHARED, "pid"), ())
    evidence(f"namespaces of pod {share_pods['pid']} (shareProcessNamespace: true)", table)
    require(not rows, f"pod {workloads.namespace}/{share_pods['pid']}", "pid, net, ipc, uts inodes equal",
            "; ".join(rows), "the runtime must honour shareProcessNamespace (NamespaceMode POD in the CRI); "
            "upgrade containerd/CRI-O", rows=rows)


@pytest.mark.check("POD-003")
def test_pause_container_holds_pod_namespaces(node_host, share_pods: dict, workloads: pods.Workloads) -> None:
    pod = share_pods["per_node"].get(node_host.node or "")
    if not pod:
        checks.skip(f"{node_host.id}: no share pod on this host (not a Ready node at the start of the run); "
                    "NODE-001 reports NotReady nodes", blames="NODE-001")
    res = node_host.run(podns.node_script(workloads.namespace, pod), timeout=timeouts.get("exec"))
    evidence(f"{node_host.id}: crictl pods/inspectp/ps/inspect; readlink /proc/<pid>/ns/*", res.evidence())
    subject = f"pod {workloads.namespace}/{pod} on {node_host.id}"
    if res.rc == 3:
        fail(node_host.id, "crictl on the node (to find the pause container)", "crictl not found",
             "install cri-tools (crictl) and point /etc/crictl.yaml at the runtime socket")
    require(res.rc == 0, subject, "a ready sandbox found with crictl", f"exit {res.rc}: "
            f"{(res.stdout.strip() or res.stderr.strip()).splitlines()[-1:] or ['no output']}",
            "check crictl reaches the runtime (crictl pods; runtime-endpoint in /etc/crictl.yaml) as root")
    pause, containers, pids = podns.parse_node_output(res.stdout)
    if not pause or not containers:
        fail(subject, "the pause process and both containers with their namespaces",
             f"pause {pause or 'not found'}, containers {sorted(containers or {}) or 'none'}",
             "check crictl inspectp/inspect print info.pid (crictl --version; the runtime's CRI debug info)")
    rows = []
    for name, links in sorted(containers.items()):
        for k in podns.compare(pause, links, podns.SHARED):
            rows.append(f"{k}: pause (pid {pids.get('pause')}) {pause.get(k)} vs {name} (pid {pids.get(name)}) "
                        f"{links.get(k)}")
    evidence("pause vs containers", "\n".join(
        f"{n} pid {pids.get(n)}: " + " ".join(f"{k}:[{links.get(k)}]" for k in podns.KINDS)
        for n, links in [("pause", pause), *sorted(containers.items())]))
    require(not rows, subject, "net, ipc, uts of every container equal to the pause container's",
            "; ".join(rows[:3]), "the runtime must start containers in the sandbox's namespaces; check the "
            "runtime's sandbox (pause) image setting and version", rows=rows)
