"""The CNI: detected, its agents ready on every node, a config on every host, pod IPs in the pod CIDR,
pod-to-pod traffic between every pair of nodes.

Detection (clusterproof.cni) reads agent DaemonSets in every namespace; a config-file CNI such as
the reference `bridge` plugin has no agents and is named from the hosts' /etc/cni/net.d.
CNI-002 runs once per host (`ssh://NODE` or `pod://NODE`): it reads the node's Ready condition from
the API (the runtime reports NetworkReady=false when it has loaded no CNI config) and, when the host
transport answers, the config folder itself; an unreachable host leaves only the API half.
The pod-to-pod check uses one probe pod per Ready node (fixtures/workloads.py `node_probes`).
"""
from __future__ import annotations

import itertools

import pytest

from clusterproof import cni, pods, timeouts
from clusterproof import nodes as rules
from clusterproof.checks import evidence, fail, require
from clusterproof.hosts import HostSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemonsets(apps_v1) -> list:
    """Every DaemonSet in the cluster (CNI agents live in kube-system, calico-system, kube-flannel, ...)."""
    return apps_v1.list_daemon_set_for_all_namespaces(_request_timeout=timeouts.get("api")).items


@pytest.fixture(scope="module")
def detection(daemonsets) -> cni.Detection:
    """The CNI detected from agent DaemonSets."""
    return cni.detect(daemonsets)


@pytest.mark.check("CNI-001")
def test_cni_agents_ready_on_every_node(detection: cni.Detection, daemonsets, core_v1) -> None:
    """The CNI's agent pods MUST be ready on every node their DaemonSet targets."""
    evidence("kubectl get daemonsets -A (CNI detection)", f"detected: {detection.name}\n" + "\n".join(
        detection.evidence) + (f"\nalso seen: {detection.others}" if detection.others else ""))
    if not detection.agents:
        pytest.skip(f"no CNI agent DaemonSet found (CNI: {detection.name}); a config-file CNI such as bridge has no "
                    "pods to be ready: CNI-002 checks its config on every host")
    t = timeouts.get("api")
    all_nodes = core_v1.list_node(_request_timeout=t).items
    rows, fixes = [], []
    for ref in detection.agents:
        ns, name = ref.split("/", 1)
        ds = next(d for d in daemonsets if d.metadata.namespace == ns and d.metadata.name == name)
        sel = ",".join(f"{k}={v}" for k, v in (ds.spec.selector.match_labels or {}).items())
        agent_pods = core_v1.list_namespaced_pod(ns, label_selector=sel, _request_timeout=t).items
        by_node = {p.spec.node_name: p for p in agent_pods if p.spec.node_name}
        node_sel = ds.spec.template.spec.node_selector or {}
        st = ds.status
        evidence(f"kubectl -n {ns} get daemonset {name}; kubectl -n {ns} get pods -l {sel} -o wide",
                 f"desired={st.desired_number_scheduled} ready={st.number_ready} available={st.number_available}\n"
                 + "\n".join(f"{p.metadata.name} node={p.spec.node_name} {pods.pod_state(p)}" for p in agent_pods))
        for node in all_nodes:
            labels = node.metadata.labels or {}
            if any(labels.get(k) != v for k, v in node_sel.items()):
                continue
            pod = by_node.get(node.metadata.name)
            if pod is None:
                rows.append(f"{ref}: no agent pod on node {node.metadata.name}")
            elif not pods.is_ready(pod):
                rows.append(f"{ref}: pod {pod.metadata.name} on {node.metadata.name}: {pods.pod_state(pod)}")
                fixes.append(f"kubectl -n {ns} describe pod {pod.metadata.name}; "
                             f"kubectl -n {ns} logs {pod.metadata.name}")
    require(not rows, f"CNI {detection.name} agents ({', '.join(detection.agents)})", "a ready agent pod on every node",
            f"{len(rows)} node(s) without a ready agent", "; ".join(fixes[:2]) or
            "check the DaemonSet's tolerations and nodeSelector, then the agent's logs", rows=rows)


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
                                  core_v1) -> None:
    """Every node MUST have a valid CNI network config in /etc/cni/net.d that its runtime has loaded (NetworkReady)."""
    spec = _clusterproof_host
    node = None
    if spec.node:
        node = core_v1.read_node(spec.node, _request_timeout=timeouts.get("api"))
        evidence(f"kubectl get node {spec.node} (Ready condition)", rules.not_ready_text(node))
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
    if node is not None and rules.network_not_ready(node):
        fail(subject, "the runtime reports its network ready (NetworkReady=true)",
             rules.not_ready_text(node), fix)
    if cfg is None and node is None:
        pytest.skip(f"{spec.id}: host not reachable and not a known node; pass --ssh-key or --host-transport=pod")


@pytest.mark.check("CNI-003")
def test_pod_cidr_sources_agree(api_client) -> None:
    """The pod CIDR sources (kubeadm-config podSubnet, --cluster-cidr, Calico IPPools, node podCIDRs) MUST agree."""
    sources, node_cidrs, ev = cni.gather_cidr_sources(api_client)
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
def test_pod_ips_in_pod_cidr(api_client, core_v1, detection: cni.Detection) -> None:
    """Every pod's IP (hostNetwork pods aside) MUST lie inside the cluster's pod CIDR."""
    sources, node_cidrs, ev = cni.gather_cidr_sources(api_client)
    all_pods = core_v1.list_pod_for_all_namespaces(_request_timeout=timeouts.get("api")).items
    rows, rule, judged = cni.pod_ip_violations(all_pods, detection.name, sources, node_cidrs)
    evidence("kubectl get pods -A -o wide (pod IPs)", "\n".join(ev) + f"\nCNI: {detection.name}\nrule: {rule}\n"
             f"pods judged: {judged}\n" + "\n".join(
                 f"{p.metadata.namespace}/{p.metadata.name} {p.spec.node_name} {p.status.pod_ip}"
                 for p in all_pods if not p.spec.host_network)[:8000])
    if not rule:
        pytest.skip("no pod CIDR known (no kubeadm-config podSubnet, --cluster-cidr, IPPool or node podCIDR)")
    require(not rows, "pod IPs", rule, f"{len(rows)} pod IP(s) outside", "pods created before the CNI or pod CIDR "
            "changed keep old IPs: delete them so they are recreated; otherwise align the CNI's IPAM range "
            "with the pod CIDR (CNI-003)", rows=rows)


def _url(ip: str) -> str:
    return f"http://[{ip}]:{pods.SERVE_PORT}/" if ":" in ip else f"http://{ip}:{pods.SERVE_PORT}/"


@pytest.mark.check("CNI-005")
def test_pod_to_pod_between_every_node_pair(node_probes: dict[str, str], workloads: pods.Workloads) -> None:
    """A pod on every node MUST reach a pod on every other node at its pod IP (HTTP, answered by that pod)."""
    if len(node_probes) < 2:
        pytest.skip(f"pod-to-pod across nodes needs two Ready nodes, found {len(node_probes)} "
                    "(NODE-001 reports NotReady nodes)")
    t = timeouts.get("api")
    objs = {node: workloads.core_v1.read_namespaced_pod(name, workloads.namespace, _request_timeout=t)
            for node, name in node_probes.items()}
    ns = workloads.namespace
    rows, lines = [], []
    for src, dst in itertools.permutations(sorted(node_probes), 2):
        src_pod, dst_pod = node_probes[src], objs[dst]
        url = _url(dst_pod.status.pod_ip)
        res = pods.conclusive(lambda s=src_pod, u=url: pods.http_get_from_pod(workloads.core_v1, ns, s, u))
        want = pods.served_text(dst_pod.metadata.name)
        ok = res.outcome == "ok" and res.body.strip() == want
        seen = f"answered {res.body.strip()[:80]!r}" if res.outcome == "ok" else f"{res.outcome}: {res.detail}"
        lines.append(f"{src} ({src_pod}) -> {dst} ({dst_pod.metadata.name} {url}): {'ok' if ok else seen}")
        evidence(f"{src} -> {dst}", res.evidence)
        if not ok:
            rows.append(f"{src} -> {dst} ({url}): {seen}" + (f", expected {want!r}" if res.outcome == "ok" else ""))
    evidence("pod-to-pod matrix", "\n".join(lines))
    require(not rows, "pod-to-pod traffic", f"every ordered pair of the {len(node_probes)} nodes to connect",
            f"{len(rows)} of {len(lines)} pair(s) failed", "check routes between nodes for each podCIDR "
            "(ip route on each node), the CNI agent logs, and that forwarding is allowed "
            "(sysctl net.ipv4.ip_forward=1; iptables -P FORWARD ACCEPT or the CNI's rules)", rows=rows)
