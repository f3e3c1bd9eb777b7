"""The CNI: detected, its agents ready on every node, a config on every host, pod IPs in the pod CIDR,
pod-to-pod traffic between every pair of nodes.

Detection is in the run's snapshot (`cluster.cni_detection`, clusterproof.cni.detect): agent
DaemonSets in every namespace, then the nodes' CNI annotations; a config-file CNI such as the
reference `bridge` plugin has no agents and is named from the hosts' /etc/cni/net.d. CNI-002 runs
once per host (`ssh://NODE` or `pod://NODE`): it reads the node's Ready condition from the snapshot
(the runtime reports NetworkReady=false when it has loaded no CNI config) and, when the host
transport answers, the config folder itself; an unreachable host leaves only the API half. The
pod-to-pod check uses one probe pod per Ready node (fixtures/workloads.py `node_probes`); the
nodes left out are named.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from clusterproof import cni, pods, timeouts
from clusterproof.checks import apply, evidence, fail, require, skip
from clusterproof.facts import ClusterFacts
from clusterproof.hosts import HostSpec
from clusterproof.verdict import Verdict
from fixtures.workloads import unready_owner

PROBES_AT_ONCE = 8   # pod-to-pod probes in flight (one exec each)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detection(cluster: ClusterFacts) -> cni.Detection:
    """The CNI the run's snapshot detected."""
    return cluster.cni_detection


def _judged(rows: list[str], subject: str, expected: str, observed: str, fix: str, checked: str,
            left_out: list[str]) -> Verdict:
    """Fail with the rows, else pass saying what was checked and which nodes were not (and why)."""
    if rows:
        return Verdict.failed(subject, expected, observed, fix, rows)
    return Verdict.passed(subject, expected, checked + (f"; not checked: {'; '.join(left_out)}" if left_out else ""))


@pytest.mark.check("CNI-001")
def test_cni_agents_ready_on_every_node(detection: cni.Detection, cluster: ClusterFacts, apps_v1, core_v1) -> None:
    """Reads each agent DaemonSet and its pods now, and matches them against the nodes its nodeSelector targets.

    A node NotReady for a reason other than its network is NODE-001's finding and is not judged here.
    """
    evidence("kubectl get daemonsets -A; kubectl get nodes (CNI detection)", detection.text())
    if not detection.agents:
        skip(f"no CNI agent DaemonSet found (CNI: {detection.name}); a config-file CNI such as bridge has no "
             "pods to be ready: CNI-002 checks its config on every host")
    t = timeouts.get("api")
    rows, fixes, left_out, judged = [], [], [], 0
    for ref in detection.agents:
        ns, name = ref.split("/", 1)
        ds = apps_v1.read_namespaced_daemon_set(name, ns, _request_timeout=t)
        sel = ",".join(f"{k}={v}" for k, v in (ds.spec.selector.match_labels or {}).items())
        agent_pods = core_v1.list_namespaced_pod(ns, label_selector=sel, _request_timeout=t).items
        by_node = {p.spec.node_name: p for p in agent_pods if p.spec.node_name}
        node_sel = ds.spec.template.spec.node_selector or {}
        st = ds.status
        evidence(f"kubectl -n {ns} get daemonset {name}; kubectl -n {ns} get pods -l {sel} -o wide",
                 f"desired={st.desired_number_scheduled} ready={st.number_ready} available={st.number_available}\n"
                 + "\n".join(f"{p.metadata.name} node={p.spec.node_name} {pods.pod_state(p)}" for p in agent_pods))
        for node in cluster.nodes:
            if any(node.labels.get(k) != v for k, v in node_sel.items()):
                continue
            if not node.ready and not node.network_not_ready:
                left_out.append(f"{node.name} ({node.ready_text}; NODE-001)")
                continue
            judged += 1
            pod = by_node.get(node.name)
            if pod is None:
                rows.append(f"{ref}: no agent pod on node {node.name}")
            elif not pods.is_ready(pod):
                rows.append(f"{ref}: pod {pod.metadata.name} on {node.name}: {pods.pod_state(pod)}")
                fixes.append(f"kubectl -n {ns} describe pod {pod.metadata.name}; "
                             f"kubectl -n {ns} logs {pod.metadata.name}")
    left_out = list(dict.fromkeys(left_out))
    if left_out:
        evidence("nodes not judged (NotReady: NODE-001 reports them)", "\n".join(left_out))
    apply(_judged(rows, f"CNI {detection.name} agents ({', '.join(detection.agents)})",
                  "a ready agent pod on every node", f"{len(rows)} node(s) without a ready agent",
                  "; ".join(fixes[:2]) or "check the DaemonSet's tolerations and nodeSelector, then the agent's logs",
                  f"{judged} agent pod(s) ready", left_out))


def _host_config(request: pytest.FixtureRequest) -> tuple[cni.ConfigDir | None, str]:
    """The host's CNI config folder, or (None, why) when the host transport cannot reach it."""
    from fixtures.hosts import HostDown

    try:
        host = request.getfixturevalue("node_host")
    except HostDown as exc:
        return None, f"host not reachable ({str(exc).splitlines()[0][:200]}); config folder not read"
    res = host.run(cni.CONFIG_DIR_SCRIPT)
    evidence(f"{host.id}: ls {cni.CONFIG_DIR}; cat {cni.CONFIG_DIR}/*", res.evidence())
    files = cni.split_config_dump(res.stdout)
    if files is None:
        return cni.ConfigDir({}, problems=[f"{cni.CONFIG_DIR} does not exist"]), ""
    return cni.parse_config_dir(files), ""


@pytest.mark.check("CNI-002")
def test_cni_config_on_every_host(_clusterproof_host: HostSpec, request: pytest.FixtureRequest,  # noqa: PT019
                                  cluster: ClusterFacts) -> None:
    """Reads /etc/cni/net.d on the host (the first valid file by name is the one the runtime loads) and the
    node's Ready condition in the run's snapshot (NetworkReady=false names a missing or broken config)."""
    spec = _clusterproof_host
    node = cluster.node(spec.node) if spec.node else None
    if node is not None:
        evidence(f"kubectl get node {node.name} (Ready condition)", node.ready_text)
    cfg, unread = _host_config(request)
    if unread:
        evidence(f"{spec.id}: {cni.CONFIG_DIR}", unread)
    subject = f"node {spec.node or spec.id}"
    fix = (f"write the CNI's config into {cni.CONFIG_DIR} on {spec.node or spec.id} (reinstall or restart the CNI "
           "agent on that node; for the bridge plugin copy the .conflist from a healthy node with this node's "
           "podCIDR), then the runtime picks it up (systemctl restart containerd if it does not)")
    if cfg is not None:
        require(cfg.loaded is not None, subject, f"a valid CNI config (*.conf/*.conflist) in {cni.CONFIG_DIR}",
                "; ".join(cfg.problems) or "none", fix)
        evidence(f"{spec.id}: the config the runtime loads", f"{cfg.loaded}: plugins {cfg.plugins} (CNI {cfg.cni})")
    if node is not None and node.network_not_ready:
        fail(subject, "the runtime reports its network ready (NetworkReady=true)", node.ready_text, fix)
    if cfg is None and node is None:
        skip(f"{spec.id}: host not reachable and not a known node; pass --ssh-key or --host-transport=pod")


@pytest.mark.check("CNI-003")
def test_pod_cidr_sources_agree(api_client, cluster: ClusterFacts) -> None:
    """Reads kubeadm-config, the kube-controller-manager pods, Calico IPPools and the nodes' podCIDRs."""
    sources, node_cidrs, ev = cni.gather_cidr_sources(api_client, cluster.nodes)
    evidence("kubectl -n kube-system get cm kubeadm-config; kubectl get nodes -o jsonpath={..podCIDRs}; "
             "kubectl get ippools", "\n".join(ev))
    rows = cni.cidr_disagreements(sources, node_cidrs)
    missing = [n for n, c in node_cidrs.items() if not c]
    if sources and missing and any(k != "Calico IPPool" for k in sources):
        rows += [f"node {n} has no podCIDR although the cluster allocates them" for n in missing]
    require(not rows, "pod CIDR configuration", "every source to agree (node podCIDRs inside the cluster CIDR, "
            "pools inside podSubnet, no overlapping node podCIDRs)", f"{len(rows)} disagreement(s)",
            "make kubeadm-config networking.podSubnet, kube-controller-manager --cluster-cidr and the CNI's pool "
            "the same range (kubeadm init --pod-network-cidr=<range> and the CNI installed with that range)", rows=rows)


@pytest.mark.check("CNI-004")
def test_pod_ips_in_pod_cidr(api_client, core_v1, cluster: ClusterFacts, detection: cni.Detection) -> None:
    """A per-node IPAM CNI (bridge, flannel, ...) is judged against each pod's node podCIDR, any other against
    the cluster-wide range (Calico IPPool, else kubeadm podSubnet, else --cluster-cidr)."""
    sources, node_cidrs, ev = cni.gather_cidr_sources(api_client, cluster.nodes)
    all_pods = core_v1.list_pod_for_all_namespaces(_request_timeout=timeouts.get("api")).items
    rows, rule, judged = cni.pod_ip_violations(all_pods, detection.name, sources, node_cidrs)
    evidence("kubectl get pods -A -o wide (pod IPs)", "\n".join(ev) + f"\nCNI: {detection.name}\nrule: {rule}\n"
             f"pods judged: {judged}\n" + "\n".join(
                 f"{p.metadata.namespace}/{p.metadata.name} {p.spec.node_name} {p.status.pod_ip}"
                 for p in all_pods if not p.spec.host_network)[:8000])
    if not rule:
        skip("no pod CIDR known (no kubeadm-config podSubnet, --cluster-cidr, IPPool or node podCIDR)")
    require(not rows, "pod IPs", rule, f"{len(rows)} pod IP(s) outside", "pods created before the CNI or pod CIDR "
            "changed keep old IPs: delete them so they are recreated; otherwise align the CNI's IPAM range "
            "with the pod CIDR (CNI-003)", rows=rows)


def _url(ip: str) -> str:
    return f"http://[{ip}]:{pods.SERVE_PORT}/" if ":" in ip else f"http://{ip}:{pods.SERVE_PORT}/"


@pytest.mark.check("CNI-005")
def test_pod_to_pod_between_every_node_pair(node_probes: dict[str, str], workloads: pods.Workloads,
                                            cluster: ClusterFacts) -> None:
    """HTTP from one probe pod per Ready node to every other one's pod IP; the answer must name the pod asked."""
    left_out = cluster.left_out(node_probes)
    if left_out:
        evidence("nodes without a probe pod (NotReady: NODE-001 reports them)", "\n".join(left_out))
    if len(node_probes) < 2:
        if len(cluster.nodes) < 2:
            skip(f"pod-to-pod across nodes needs two nodes; the cluster has {len(cluster.nodes)}")
        owner = unready_owner(cluster.not_ready_nodes)
        skip(f"pod-to-pod across nodes needs two Ready nodes, found {len(node_probes)} "
             f"(not Ready: {'; '.join(left_out)}); {owner} reports why", blames=owner)
    t = timeouts.get("api")
    objs: dict[str, Any] = {node: workloads.core_v1.read_namespaced_pod(name, workloads.namespace, _request_timeout=t)
            for node, name in node_probes.items()}
    ns = workloads.namespace
    pairs, chosen = cni.node_pairs(list(node_probes))
    evidence("pairs probed", chosen)

    def probe(pair: tuple[str, str]) -> pods.HttpResult:
        src, dst = pair
        url = _url(objs[dst].status.pod_ip)
        return pods.conclusive(functools.partial(pods.http_get_from_pod, workloads.core_v1, ns, node_probes[src], url))

    with ThreadPoolExecutor(max_workers=PROBES_AT_ONCE) as pool:   # evidence is attached below, in this thread
        results = list(pool.map(probe, pairs))
    rows, lines = [], []
    for (src, dst), res in zip(pairs, results):
        src_pod, dst_pod = node_probes[src], objs[dst]
        url = _url(dst_pod.status.pod_ip)
        want = pods.served_text(dst_pod.metadata.name)
        ok = res.outcome == "ok" and res.body.strip() == want
        seen = f"answered {res.body.strip()[:80]!r}" if res.outcome == "ok" else f"{res.outcome}: {res.detail}"
        lines.append(f"{src} ({src_pod}) -> {dst} ({dst_pod.metadata.name} {url}): {'ok' if ok else seen}")
        evidence(f"{src} -> {dst}", res.evidence)
        if not ok:
            rows.append(f"{src} -> {dst} ({url}): {seen}" + (f", expected {want!r}" if res.outcome == "ok" else ""))
    evidence("pod-to-pod matrix", "\n".join(lines))
    apply(_judged(rows, "pod-to-pod traffic", f"{chosen} to connect",
                  f"{len(rows)} of {len(lines)} pair(s) failed", "check routes between nodes for each podCIDR "
                  "(ip route on each node), the CNI agent logs, and that forwarding is allowed "
                  "(sysctl net.ipv4.ip_forward=1; iptables -P FORWARD ACCEPT or the CNI's rules)",
                  f"{len(lines)} pair(s) connected", left_out))
