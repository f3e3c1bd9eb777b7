"""CNI detection, config parsing, CIDR agreement and pod-IP rules (clusterproof.cni) on real-shaped objects."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from kubernetes import client

from clusterproof import cni, linux, netpol, pods
from clusterproof.verdict import Status


def ds(name: str, namespace: str, *images: str, containers: tuple[str, ...] = ()) -> client.V1DaemonSet:
    cs = [client.V1Container(name=containers[i] if i < len(containers) else f"c{i}", image=img)
          for i, img in enumerate(images)]
    return client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        spec=client.V1DaemonSetSpec(selector=client.V1LabelSelector(match_labels={"k8s-app": name}),
                                    template=client.V1PodTemplateSpec(spec=client.V1PodSpec(containers=cs))))


KUBE_PROXY = ds("kube-proxy", "kube-system", "registry.k8s.io/kube-proxy:v1.35.0", containers=("kube-proxy",))


@pytest.mark.parametrize(("objs", "name", "agents"), [
    ([KUBE_PROXY, ds("calico-node", "calico-system", "docker.io/calico/node:v3.28.0")], "calico",
     ["calico-system/calico-node"]),
    ([KUBE_PROXY, ds("kube-flannel-ds", "kube-flannel", "docker.io/flannel/flannel:v0.25.1")], "flannel",
     ["kube-flannel/kube-flannel-ds"]),
    ([ds("cilium", "kube-system", "quay.io/cilium/cilium:v1.16.0")], "cilium", ["kube-system/cilium"]),
    ([ds("canal", "kube-system", "calico/node:v3.26", "flannel/flannel:v0.22")], "canal", ["kube-system/canal"]),
    ([ds("weave-net", "kube-system", "ghcr.io/weaveworks/launcher/weave-kube:2.8.1")], "weave",
     ["kube-system/weave-net"]),
    ([ds("kube-router", "kube-system", "docker.io/cloudnativelabs/kube-router:v2.1")], "kube-router",
     ["kube-system/kube-router"]),
    ([KUBE_PROXY], "unknown", []),
    ([], "unknown", []),
], ids=["calico", "flannel", "cilium", "canal", "weave", "kube-router", "kube-proxy-only", "nothing"])
def test_detect_from_daemonsets(objs, name, agents) -> None:
    got = cni.detect(objs)
    assert (got.name, got.agents) == (name, agents)


@pytest.mark.parametrize(("image", "title"), [
    ("docker.io/cloudnativelabs/kube-router:v2.1.0", "kube-router v2.1.0"),
    ("localhost:5000/cloudnativelabs/kube-router", "kube-router"),        # a registry port is no tag
    ("docker.io/cloudnativelabs/kube-router:latest", "kube-router"),
    ("docker.io/cloudnativelabs/kube-router@sha256:" + "0" * 64, "kube-router"),
    ("docker.io/cloudnativelabs/kube-router:v2.1.0@sha256:" + "0" * 64, "kube-router v2.1.0"),
])
def test_detected_cni_names_its_agent_image_version(image, title) -> None:
    """The report's fingerprint shows the CNI with the tag of its agent's image, where it has one."""
    got = cni.detect([KUBE_PROXY, ds("kube-router", "kube-system", "busybox:1.36", image)])
    assert got.title == title


BRIDGE = json.dumps({"cniVersion": "1.0.0", "name": "tb", "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.1.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]})


def test_config_dir_picks_first_valid_file_and_names_bridge() -> None:
    cfg = cni.parse_config_dir({"/etc/cni/net.d/05-broken.conf": "{not json",
                                "/etc/cni/net.d/10-bridge.conflist": BRIDGE,
                                "/etc/cni/net.d/99-loopback.conf": json.dumps({"type": "loopback"})})
    assert cfg.loaded == "/etc/cni/net.d/10-bridge.conflist"
    assert (cfg.cni, cfg.plugins) == ("bridge", ["bridge", "portmap"])
    assert cfg.problems and "05-broken.conf" in cfg.problems[0]
    # a config-file CNI is named from the hosts when no agent DaemonSet exists
    assert cni.detect([KUBE_PROXY], {"tb-node-1": cfg}).name == "bridge"


@pytest.mark.parametrize("files", [
    {"/etc/cni/net.d/05-broken.conf": "{not json", "/etc/cni/net.d/10-bridge.conflist": BRIDGE},
    {"/etc/cni/net.d/05-calico.conflist": json.dumps({"name": "k8s-pod-network", "plugins": [{"type": "calico"}]}),
     "/etc/cni/net.d/10-bridge.conflist": BRIDGE},
    {"/etc/cni/net.d/10-flannel.conflist": json.dumps({"name": "cbr0", "plugins": [{"type": "flannel"}]})},
], ids=["broken-then-bridge", "calico-then-bridge", "flannel"])
def test_host_bridge_check_reads_the_config_cni_002_reads(files) -> None:
    """HOST-002/006 (linux.cni_uses_bridge) judge the same file CNI-002 (cni.parse_config_dir) says is loaded."""
    loaded = cni.parse_config_dir(files).loaded
    bridged, why = linux.cni_uses_bridge(files)
    assert loaded is not None and why.startswith(f"{loaded} uses ")
    assert bridged is (cni.parse_config_dir(files).cni in ("bridge", "flannel"))


def test_config_dir_empty_or_missing() -> None:
    assert cni.parse_config_dir({}).loaded is None
    assert cni.parse_config_dir({}).problems == ["no files in /etc/cni/net.d"]
    dump = "=== /etc/cni/net.d/10-bridge.conflist\n" + BRIDGE + "\n"
    assert cni.split_config_dump(dump) == {"/etc/cni/net.d/10-bridge.conflist": BRIDGE + "\n"}
    assert cni.split_config_dump("=== MISSING-DIR\n") is None
    assert cni.split_config_dump("") == {}


KUBEADM = """apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.35.0
networking:
  dnsDomain: cluster.local
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
"""


def kcm_pod(cidr: str) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name="kube-controller-manager-cp", namespace="kube-system"),
                        spec=client.V1PodSpec(containers=[client.V1Container(
                            name="kube-controller-manager", command=["kube-controller-manager",
                                                                     "--allocate-node-cidrs=true",
                                                                     f"--cluster-cidr={cidr}"])]))


def test_cidr_sources_parse() -> None:
    assert cni.kubeadm_pod_subnet(KUBEADM) == ["10.244.0.0/16"]
    assert cni.kubeadm_pod_subnet(None) == []
    assert cni.controller_manager_cidr([kcm_pod("10.244.0.0/16,fd00::/56")]) == ["10.244.0.0/16", "fd00::/56"]
    pools: list[dict] = [{"spec": {"cidr": "192.168.0.0/16"}}, {"spec": {"cidr": "10.9.0.0/16", "disabled": True}}]
    assert cni.calico_pools(pools) == ["192.168.0.0/16"]
    n = client.V1Node(metadata=client.V1ObjectMeta(name="a"), spec=client.V1NodeSpec(pod_cidr="10.244.1.0/24"))
    assert cni.node_pod_cidrs(n) == ["10.244.1.0/24"]


def test_cidr_sources_agree_and_disagree() -> None:
    nodes_ok = {"a": ["10.244.0.0/24"], "b": ["10.244.1.0/24"]}
    assert cni.cidr_disagreements({"kubeadm-config podSubnet": ["10.244.0.0/16"],
                                   "kube-controller-manager --cluster-cidr": ["10.244.0.0/16"]}, nodes_ok) == []
    assert cni.cidr_disagreements({}, nodes_ok) == []
    # the course's classic mistake: kubeadm init --pod-network-cidr 10.244.0.0/16 but Calico's default pool
    rows = cni.cidr_disagreements({"kubeadm-config podSubnet": ["10.244.0.0/16"],
                                   "Calico IPPool": ["192.168.0.0/16"]}, nodes_ok)
    assert rows == ["Calico IPPool 192.168.0.0/16 is outside kubeadm-config podSubnet 10.244.0.0/16"]
    rows = cni.cidr_disagreements({"kubeadm-config podSubnet": ["10.244.0.0/16"],
                                   "kube-controller-manager --cluster-cidr": ["10.100.0.0/16"]},
                                  {"a": ["10.100.0.0/24"]})
    assert any("differs" in r for r in rows)
    assert "node a podCIDR 10.100.0.0/24 is outside kubeadm-config podSubnet 10.244.0.0/16" in rows
    rows = cni.cidr_disagreements({}, {"a": ["10.244.0.0/23"], "b": ["10.244.1.0/24"]})
    assert rows == ["node b podCIDR 10.244.1.0/24 overlaps node a podCIDR 10.244.0.0/23"]


def pod(name: str, node: str, ip: str | None, host_network: bool = False) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name, namespace="ns"),
                        spec=client.V1PodSpec(node_name=node, host_network=host_network,
                                              containers=[client.V1Container(name="c")]),
                        status=client.V1PodStatus(pod_ip=ip, pod_ips=[client.V1PodIP(ip=ip)] if ip else None))


def test_pod_ips_per_node_and_cluster_wide() -> None:
    nodes = {"a": ["198.18.1.0/24"], "b": ["198.18.0.0/24"]}
    pods = [pod("ok-a", "a", "198.18.1.5"), pod("wrong-node", "a", "198.18.0.7"),
            pod("host", "a", "198.19.0.11", host_network=True), pod("pending", "b", None)]
    rows, rule, judged = cni.pod_ip_violations(pods, "bridge", {}, nodes)
    assert rule == "each pod's IP inside its node's podCIDR" and judged == 2
    assert rows == ["pod ns/wrong-node on a: IP 198.18.0.7 outside 198.18.1.0/24"]
    # unknown CNI: only the union of node podCIDRs is known
    rows, rule, _ = cni.pod_ip_violations(pods, "unknown", {}, nodes)
    assert rows == [] and "node podCIDRs" in rule
    # Calico with its own IPAM: the IPPool decides, node podCIDRs do not
    rows, rule, _ = cni.pod_ip_violations([pod("c", "a", "192.168.3.4"), pod("d", "a", "10.0.0.1")], "calico",
                                          {"Calico IPPool": ["192.168.0.0/16"]}, nodes)
    assert rows == ["pod ns/d on a: IP 10.0.0.1 outside 192.168.0.0/16"] and "Calico IPPool" in rule
    assert cni.pod_ip_violations(pods, "unknown", {}, {}) == ([], "", 0)


# ------------------------------------------------------------------ CIDR sources against a real HTTP API

class _Api:
    """A local HTTP server answering the CIDR sources' paths with fixed statuses, spoken to by the real client."""

    def __init__(self, statuses: dict[str, int]) -> None:
        import http.server
        import threading

        routes = statuses

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                code = next((c for prefix, c in routes.items() if path.startswith(prefix)), 404)
                body = json.dumps({"kind": "PodList" if "pods" in path else "Status", "apiVersion": "v1",
                                   "items": [], "metadata": {}} if code == 200 else
                                  {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                   "reason": "Forbidden" if code == 403 else "NotFound"}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        cfg = client.Configuration()
        cfg.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        cfg.proxy = None
        self.client = client.ApiClient(cfg)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PODS = "/api/v1/namespaces/kube-system/pods"
KUBEADM_CM = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config"
CALICO = "/apis/crd.projectcalico.org/v1/ippools"


def test_cidr_sources_absent_on_404_only() -> None:
    api = _Api({PODS: 200})
    try:
        sources, node_cidrs, ev = cni.gather_cidr_sources(api.client, [])
    finally:
        api.close()
    assert sources == {} and node_cidrs == {}
    assert any("404" in line and "kubeadm-config" in line for line in ev)


@pytest.mark.parametrize("path", [KUBEADM_CM, CALICO], ids=["kubeadm-config", "calico-ippools"])
@pytest.mark.parametrize("status", [403, 500])
def test_cidr_source_api_error_is_an_error_not_absence(path: str, status: int) -> None:
    from kubernetes.client.exceptions import ApiException

    api = _Api({PODS: 200, path: status})
    try:
        with pytest.raises(ApiException) as exc:
            cni.gather_cidr_sources(api.client, [])
    finally:
        api.close()
    assert exc.value.status == status


def test_node_pairs_all_up_to_ten_then_a_linear_seeded_cover() -> None:
    small = [f"n{i}" for i in range(6)]
    pairs, said = cni.node_pairs(small)
    assert len(pairs) == 30 and len(set(pairs)) == 30 and "every ordered pair of the 6 Ready nodes" in said
    big = [f"node-{i:03}" for i in range(500)]
    pairs, said = cni.node_pairs(big)
    assert len(pairs) == 500 + 2 * 500 and len(set(pairs)) == len(pairs)     # linear, not 249500
    assert all(a != b for a, b in pairs)
    assert {a for a, _ in pairs} == set(big) and {b for _, b in pairs} == set(big)   # every node both ways
    # the same cluster gets the same pairs in every run, whatever order its nodes were listed in; another differs
    assert cni.node_pairs(list(reversed(big))) == (pairs, said)
    assert cni.node_pairs(big[:-1] + ["node-x"])[0][500:] != pairs[500:]
    assert "1500 of the 249500 ordered pairs" in said and "seed" in said


# ------------------------------------------------------------------ CNI-006: NetworkPolicy enforced

def test_every_cni_detection_can_name_has_a_known_policy_support() -> None:
    names = {n for n, _ in cni.KNOWN} | {n for n, _ in cni.NODE_HINTS} | set(cni.CONFIG_TYPES.values())
    assert {n: cni.policy_support(n) for n in names if cni.policy_support(n) == "unknown"} == {}
    assert cni.policy_support("bridge") == cni.policy_support("flannel") == "no"
    assert {cni.policy_support(n) for n in ("calico", "canal", "cilium", "kube-router", "weave", "antrea")} == {"yes"}
    assert cni.policy_support("aws-vpc-cni") == "optional" and cni.policy_support("unknown") == "unknown"


def test_policy_manifests_select_the_roles_and_the_served_port() -> None:
    deny, = pods.load_manifest(netpol.DENY_POLICY)
    allow, = pods.load_manifest(netpol.ALLOW_POLICY)
    server = {netpol.ROLE: netpol.SERVER}
    assert deny["spec"]["podSelector"]["matchLabels"] == server and deny["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny["spec"]                                   # no rule: nothing is let in
    assert allow["spec"]["podSelector"]["matchLabels"] == server
    rule, = allow["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {netpol.ROLE: netpol.ALLOWED}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": pods.SERVE_PORT}]


@pytest.mark.parametrize(("outcome", "body", "detail", "state"), [
    ("ok", "clusterproof-probe np-server\n", "answered", netpol.CONNECTED),
    ("ok", "<html>someone else</html>", "answered", netpol.ANSWERED),
    ("http_error", "server returned error: HTTP 403", "HTTP 403", netpol.ANSWERED),
    ("unreachable", "", "exit 143 (timed out)", netpol.BLOCKED),
    ("unreachable", "URLError: [Errno 111] Connection refused", "URLError: [Errno 111] Connection refused",
     netpol.BLOCKED),
    ("inconclusive", "", "exec failed: ApiException 500", netpol.INCONCLUSIVE),
], ids=["server", "other-answer", "http-error", "timeout", "refused", "exec-failed"])
def test_classify_a_probe(outcome: str, body: str, detail: str, state: str) -> None:
    got, why = netpol.classify(outcome, body, detail, pods.served_text("np-server"))
    assert got == state
    if state == netpol.BLOCKED:
        assert why == detail


def test_place_clients_and_server_on_two_workers_when_there_are_two() -> None:
    assert netpol.place([("cp-1", True), ("w-2", False), ("w-1", False)]) == ("w-1", "w-2")
    assert netpol.place([("cp-1", True), ("w-1", False)]) == ("w-1", "cp-1")
    assert netpol.place([("solo", True)]) == ("solo", "solo")
    assert netpol.place([]) is None


SETUP = netpol.Setup("cp-netpol-abc-gw0", "np-server", "tb-node-2", "tb-node-1", "198.18.2.7:8080", "bridge", (),
                     10.0)


def seen(allowed: str, denied: str, detail: str = "") -> tuple[netpol.Seen, ...]:
    return (netpol.Seen(netpol.ALLOWED, "np-allowed", allowed, detail),
            netpol.Seen(netpol.DENIED, "np-denied", denied, detail))


C, B, A, X = netpol.CONNECTED, netpol.BLOCKED, netpol.ANSWERED, netpol.INCONCLUSIVE   # X: the probe did not run
BASE = seen(C, C)
DENY_OK = netpol.Step("clusterproof-deny-ingress", 1.3, 1.3, 2, seen(B, B, "exit 143 (timed out)"))
DENY_IGNORED = netpol.Step("clusterproof-deny-ingress", None, 10.4, 14, seen(C, C))
ALLOW_OK = netpol.Step("clusterproof-allow-from-allowed", 0.8, 0.8, 1, (seen(C, B)))


def test_policies_enforced_pass_with_the_times_they_took() -> None:
    v = netpol.judge(replace(SETUP, cni="calico"), BASE, DENY_OK, ALLOW_OK)
    assert v.status == Status.PASS
    assert "deny-all enforced 1.3s after it was created" in v.observed and "allow rule 0.8s after" in v.observed
    # a CNI without a policy engine of its own, whose policies something else enforces, passes too, and says so
    v = netpol.judge(SETUP, BASE, DENY_OK, ALLOW_OK)
    assert v.status == Status.PASS and "another component enforces the policies" in v.observed


def test_deny_ignored_by_a_cni_without_policy_support_warns_naming_it() -> None:
    for name in ("bridge", "flannel"):
        v = netpol.judge(replace(SETUP, cni=name), BASE, DENY_IGNORED)
        assert v.status == Status.WARN, v.message
        assert f"CNI {cni.TITLES[name]} does not enforce NetworkPolicy" in v.observed
        assert "np-allowed, np-denied still reached the server 10.4s after the policy" in v.observed
        assert "within 10s of the default-deny ingress policy cp-netpol-abc-gw0/clusterproof-deny-ingress" in v.expected
        assert "install a policy-capable CNI" in v.fix
        assert "np-denied (denied) -> np-server (198.18.2.7:8080): connected, expected blocked" in v.rows
    v = netpol.judge(replace(SETUP, cni="aws-vpc-cni"), BASE, DENY_IGNORED)
    assert v.status == Status.WARN and "enableNetworkPolicy=true" in v.fix


def test_deny_ignored_by_a_policy_capable_cni_fails_naming_it_and_its_agent() -> None:
    setup = replace(SETUP, cni="kube-router", agents=("kube-system/kube-router",))
    v = netpol.judge(setup, BASE, DENY_IGNORED)
    assert v.status == Status.FAIL
    assert "CNI kube-router enforces NetworkPolicy, but not here" in v.observed
    assert "--run-firewall=true" in v.fix and "kubectl -n kube-system logs ds/kube-router" in v.fix
    # half enforced (only one client blocked) is not enforced
    half = replace(DENY_IGNORED, last=seen(B, C))
    v = netpol.judge(replace(SETUP, cni="cilium"), BASE, half)
    assert v.status == Status.FAIL and v.observed.startswith("CNI Cilium enforces NetworkPolicy, but not here: "
                                                             "np-denied still reached")
    assert "enable-policy" in v.fix


def test_deny_ignored_by_an_unknown_cni_fails() -> None:
    v = netpol.judge(replace(SETUP, cni="unknown"), BASE, DENY_IGNORED)
    assert v.status == Status.FAIL
    assert "the API server accepted the policy and nothing enforced it" in v.observed
    assert "/etc/cni/net.d on the server's node tb-node-2" in v.fix and "the CNI was not identified" in v.observed
    v = netpol.judge(replace(SETUP, cni="romana"), BASE, DENY_IGNORED)
    assert v.status == Status.FAIL and "CNI romana is not known to CNI-006" in v.observed


@pytest.mark.parametrize(("last", "says"), [
    (seen(B, B), "was not honoured: the client it selects did not connect"),
    (seen(C, C), "let in a client it does not select"),
    (seen(A, C), "was not honoured"),
], ids=["allowed-blocked", "denied-let-in", "both"])
def test_allow_rule_not_honoured_fails(last, says) -> None:
    allow = netpol.Step("clusterproof-allow-from-allowed", None, 10.2, 4, last)
    for name in ("calico", "bridge"):    # whatever the CNI: it enforced the deny, so it must enforce the rule
        v = netpol.judge(replace(SETUP, cni=name), BASE, DENY_OK, allow)
        assert v.status == Status.FAIL, v.message
        assert says in v.observed and "(4 probe rounds over 10.2s)" in v.observed
        assert "the client labelled clusterproof.io/netpol-role=allowed connects" in v.expected


def test_no_connection_before_any_policy_blames_pod_to_pod_or_fails_on_one_node() -> None:
    v = netpol.judge(SETUP, seen(C, B, "exit 143 (timed out)"))
    assert v.status == Status.SKIP and v.blames == "CNI-005"
    assert "clients on tb-node-1 could not reach the server on tb-node-2" in v.reason
    assert "np-denied (denied) -> np-server (198.18.2.7:8080): blocked, expected connected" in v.reason
    one = replace(SETUP, client_node="solo", server_node="solo")
    v = netpol.judge(one, seen(B, B))
    assert v.status == Status.FAIL and v.observed == "2 of 2 could not" and "GlobalNetworkPolicy" in v.fix


@pytest.mark.parametrize(("baseline", "deny", "allow"), [
    (seen(X, C), None, None),
    (BASE, replace(DENY_IGNORED, last=seen(B, X)), None),
    (BASE, DENY_OK, netpol.Step("clusterproof-allow-from-allowed", None, 10.0, 3, seen(X, B))),
    (BASE, replace(DENY_IGNORED, last=()), None),
], ids=["baseline", "deny", "allow", "no-round"])
def test_a_probe_that_could_not_run_is_an_error_never_a_verdict(baseline, deny, allow) -> None:
    v = netpol.judge(SETUP, baseline, deny, allow)
    assert v.status == Status.ERROR, v.message


def test_a_policy_that_did_not_hold_while_the_agent_was_down_blames_cni_001() -> None:
    down = ("kube-system/kube-router-9gpfs on tb-node-2: Pending, kube-router PodInitializing, not ready",)
    setup = replace(SETUP, cni="kube-router", agents=("kube-system/kube-router",))
    v = netpol.judge(setup, BASE, DENY_IGNORED, unready_agents=down)
    assert v.status == Status.SKIP and v.blames == "CNI-001"
    assert "the deny-all policy did not hold" in v.reason and "kube-router-9gpfs on tb-node-2" in v.reason
    allow = netpol.Step("clusterproof-allow-from-allowed", None, 10.2, 4, seen(B, B))
    v = netpol.judge(setup, BASE, DENY_OK, allow, unready_agents=down)
    assert v.status == Status.SKIP and v.blames == "CNI-001" and "the allow rule did not hold" in v.reason
    # with every agent ready the same observation is the CNI's failure
    assert netpol.judge(setup, BASE, DENY_IGNORED, unready_agents=()).status == Status.FAIL
