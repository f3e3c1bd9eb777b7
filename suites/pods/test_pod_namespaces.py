"""A pod's containers share the pause container's net, ipc and uts namespaces (the course's `ls -l /proc/<pid>/ns`).

The module starts, on every Ready node, a two-container pod (manifests/pods/two-containers.yaml),
and one more with `shareProcessNamespace: true`. Inside the pod each container reads
`readlink /proc/self/ns/*`; from the node (host transport: SSH or the probe DaemonSet) crictl finds
the pod's sandbox and containers and their PIDs, and `/proc/<pid>/ns` gives the namespace inodes.
"""
from __future__ import annotations

import copy

import pytest

from clusterproof import checks, cri, podns, pods, timeouts
from clusterproof.checks import apply, evidence, fail, require

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
def test_pause_container_holds_pod_namespaces(node_host, host_node, share_pods: dict,
                                              workloads: pods.Workloads) -> None:
    """From the node, crictl on the CRI socket CRI-001 judges (the node's cri-socket annotation, else the
    runtime socket found at a known path) finds the pod's sandbox and both containers and their PIDs."""
    pod = share_pods["per_node"].get(node_host.node or "")
    if not pod:
        checks.skip(f"{node_host.id}: no share pod on this host (not a Ready node at the start of the run); "
                    "NODE-001 reports NotReady nodes", blames="NODE-001")
    named = host_node.cri_socket if host_node else None
    sock, types = cri.find_socket(named, node_host.file_types)
    evidence(f"{node_host.id}: {'type of ' + next(iter(types)) if named else 'known CRI socket paths'}", types)
    stop = cri.judge_usable(node_host.id, sock, sock.kind == "socket" and node_host.run("command -v crictl").rc == 0)
    if stop is not None:
        apply(stop)
    res = node_host.run(podns.node_script(workloads.namespace, pod, sock.path or ""), timeout=timeouts.get("exec"))
    evidence(f"{node_host.id}: crictl --runtime-endpoint unix://{sock.path} pods/inspectp/ps/inspect; "
             "readlink /proc/<pid>/ns/*", res.evidence())
    subject = f"pod {workloads.namespace}/{pod} on {node_host.id}"
    require(res.rc == 0, subject, f"a ready sandbox found with crictl on {sock.path}", f"exit {res.rc}: "
            f"{(res.stdout.strip() or res.stderr.strip()).splitlines()[-1:] or ['no output']}",
            f"check crictl reaches the runtime as root: crictl --runtime-endpoint unix://{sock.path} pods")
    pause, containers, pids = podns.parse_node_output(res.stdout)
    evidence("pause vs containers", "\n".join(
        f"{n} pid {pids.get(n)}: " + " ".join(f"{k}:[{links.get(k)}]" for k in podns.KINDS)
        for n, links in [("pause", pause or {}), *sorted(containers.items())]))
    apply(podns.judge_pause(subject, pause, containers, pids, CONTAINERS))
