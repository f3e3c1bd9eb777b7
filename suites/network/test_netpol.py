"""NetworkPolicy enforced (CNI-006): a default-deny ingress policy really blocks pod-to-pod traffic, and an allow
rule really lets in the client it selects and no other.

Three probe pods in this module's namespace (--probe-image): a server answering HTTP on pods.SERVE_PORT and two
clients labelled `clusterproof.io/netpol-role=allowed|denied`, the clients on another Ready node than the server
where there are two. Both clients probe the server (HTTP, 2 s to connect) in rounds, the two at once: before any
policy, after manifests/network/netpol-deny-ingress.yaml (every round until both are blocked) and after
netpol-allow-from-allowed.yaml (until the allowed one connects and the denied one is still blocked). A policy is
programmed asynchronously, so each step polls up to the "policy" timeout (clusterproof/timeouts.py); the time
each took is the pass's evidence. clusterproof/netpol.py judges; the namespace and its policies go with the module.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import yaml

from clusterproof import cni, netpol, pods, timeouts
from clusterproof.checks import apply, evidence, skip
from clusterproof.facts import ClusterFacts
from clusterproof.wait import WaitTimeout, wait_for
from fixtures.workloads import unready_owner

pytestmark = pytest.mark.slow

POD_NAMES = {netpol.SERVER: "np-server", netpol.ALLOWED: "np-allowed", netpol.DENIED: "np-denied"}


@pytest.fixture(scope="module")
def netpol_pods(workloads: pods.Workloads, cluster: ClusterFacts,
                pytestconfig: pytest.Config) -> tuple[dict[str, Any], str, str] | None:
    """The server and the two clients, ready ({role: V1Pod}, client node, server node); None without a Ready node."""
    placed = netpol.place((n.name, n.is_control_plane) for n in cluster.ready_nodes)
    if placed is None:
        return None
    client_node, server_node = placed
    hostnames = {n.name: n.hostname for n in cluster.ready_nodes}
    image = pytestconfig.getoption("probe_image")
    for role, name in POD_NAMES.items():
        node = server_node if role == netpol.SERVER else client_node
        workloads.create(pods.probe_pod(name, node, image, workloads.run, pin="affinity", hostname=hostnames[node],
                                        serve=role == netpol.SERVER, labels={netpol.ROLE: role}))
    got = workloads.wait_pods(list(POD_NAMES.values()), ready=True)
    return {role: got[name] for role, name in POD_NAMES.items()}, client_node, server_node


@pytest.fixture(scope="module")
def detection(cluster: ClusterFacts) -> cni.Detection:
    """The CNI the run's snapshot detected."""
    return cluster.cni_detection


def _url(ip: str) -> str:
    return f"http://[{ip}]:{pods.SERVE_PORT}/" if ":" in ip else f"http://{ip}:{pods.SERVE_PORT}/"


class Prober:
    """Rounds of probes of the server from both clients at once, each classified; the last round's exec output kept."""

    def __init__(self, workloads: pods.Workloads, clients: dict[str, str], url: str, want: str):
        self.workloads, self.clients, self.url, self.want = workloads, clients, url, want
        self.connect = timeouts.get("probe_connect")
        self.last_evidence: dict[str, str] = {}

    def _one(self, role: str) -> tuple[netpol.Seen, str]:
        pod = self.clients[role]
        res = pods.http_get_from_pod(self.workloads.core_v1, self.workloads.namespace, pod, self.url,
                                     connect_timeout=self.connect, max_time=self.connect + timeouts.scaled(1.0))
        state, detail = netpol.classify(res.outcome, res.body, res.detail, self.want)
        return netpol.Seen(role, pod, state, detail), res.evidence

    def round(self) -> tuple[netpol.Seen, ...]:
        with ThreadPoolExecutor(max_workers=len(self.clients)) as pool:   # evidence attached here, in this thread
            done = list(pool.map(self._one, netpol.CLIENTS))
        self.last_evidence = {seen.pod: text for seen, text in done}
        return tuple(seen for seen, _ in done)

    def until(self, wants: dict[str, str], policy: str, step: str) -> netpol.Step:
        """Probe rounds until every client is as `wants` says or the policy deadline passes; the timeline and the
        last round's probes go to the evidence."""
        t0 = time.monotonic()
        timeline: list[str] = []
        rounds: list[tuple[netpol.Seen, ...]] = []

        def observe() -> tuple[bool, tuple[netpol.Seen, ...]]:
            seen = self.round()
            rounds.append(seen)
            timeline.append(f"+{time.monotonic() - t0:4.1f}s " + "; ".join(s.line() for s in seen))
            return netpol.held(seen, wants), seen

        try:
            wait_for(observe, f"{step} to show", timeouts.get("policy"), interval=0.5)
            after: float | None = time.monotonic() - t0
        except WaitTimeout:
            after = None
        evidence(f"{step}: probe rounds after {policy} was created (expected: "
                 + ", ".join(f"{role} {state}" for role, state in wants.items()) + ")", "\n".join(timeline))
        for pod, text in self.last_evidence.items():
            evidence(f"{step}: last probe from {pod}", text)
        return netpol.Step(policy, after, time.monotonic() - t0, len(rounds), rounds[-1] if rounds else ())


def _unready_agents(workloads: pods.Workloads, detection: cni.Detection, nodes: set[str]) -> tuple[str, ...]:
    """The CNI's agent pods on `nodes` that are not ready now (best effort: a read error is evidence, not a finding)."""
    if not detection.agents:
        return ()
    t = timeouts.get("api")
    found: list[str] = []
    try:
        for ref in detection.agents:
            ns, name = ref.split("/", 1)
            ds = workloads.apps_v1.read_namespaced_daemon_set(name, ns, _request_timeout=t)
            sel = ",".join(f"{k}={v}" for k, v in (ds.spec.selector.match_labels or {}).items())
            agent_pods: list[Any] = workloads.core_v1.list_namespaced_pod(ns, label_selector=sel,
                                                                          _request_timeout=t).items
            for p in agent_pods:
                if p.spec.node_name in nodes and not pods.is_ready(p):
                    found.append(f"{ns}/{p.metadata.name} on {p.spec.node_name}: {pods.pod_state(p)}")
    except Exception as exc:   # the verdict stands on the probes; this only tells whether the agent was down
        evidence("the CNI's agent pods (kubectl get pods -l ...)", f"not read: {type(exc).__name__}: {exc}"[:300])
        return ()
    evidence("the CNI's agent pods on the nodes involved that are not ready", "\n".join(found) or "none")
    return tuple(found)


def _config_cni(request: pytest.FixtureRequest, node: str) -> str:
    """The CNI named by the config the runtime loads from /etc/cni/net.d on the node ("unknown" when unreadable): a
    config-file CNI such as bridge runs no agent and writes no node annotation, so only its host names it."""
    from clusterproof.hosts import HostUnreachable
    from fixtures.hosts import node_host_of

    try:
        host = node_host_of(request, node)
        res = host.run(cni.CONFIG_DIR_SCRIPT)
    except HostUnreachable as exc:
        evidence(f"{node}: {cni.CONFIG_DIR} (to name a CNI without agents)", f"host not reached: {exc}"[:400])
        return "unknown"
    evidence(f"{host.id}: ls {cni.CONFIG_DIR}; cat {cni.CONFIG_DIR}/*", res.evidence())
    files = cni.split_config_dump(res.stdout)
    cfg = cni.parse_config_dir(files) if files is not None else None
    return cfg.cni if cfg is not None and cfg.cni else "unknown"


def _create_policy(workloads: pods.Workloads, manifest: str) -> str:
    doc = workloads.create(manifest)[0]
    evidence(f"kubectl -n {workloads.namespace} create -f manifests/{manifest}",
             yaml.safe_dump(doc, sort_keys=False))
    return str(doc["metadata"]["name"])


@pytest.mark.check("CNI-006")
def test_network_policy_enforced(netpol_pods, workloads: pods.Workloads, cluster: ClusterFacts,
                                 detection: cni.Detection, request: pytest.FixtureRequest) -> None:
    """Both clients reach the server; after a default-deny ingress policy neither does; after an allow rule for the
    `allowed` label only that one does. The CNI's policy support (clusterproof.cni) decides WARN or FAIL when the
    deny is not enforced."""
    evidence("kubectl get daemonsets -A; kubectl get nodes (CNI detection)",
             detection.text() + f"\nNetworkPolicy support: {cni.policy_support(detection.name)}")
    if netpol_pods is None:
        owner = unready_owner(cluster.not_ready_nodes)
        skip(f"NetworkPolicy needs a Ready node for its probe pods, found none; {owner} reports why", blames=owner)
    objs, client_node, server_node = netpol_pods
    server = objs[netpol.SERVER]
    address = f"{server.status.pod_ip}:{pods.SERVE_PORT}"
    evidence("probe pods (kubectl get pods -o wide)", "\n".join(
        f"{p.metadata.name} role={role} node={p.spec.node_name} ip={p.status.pod_ip}" for role, p in objs.items()))
    setup = netpol.Setup(workloads.namespace, server.metadata.name, server_node, client_node, address,
                         detection.name, tuple(detection.agents), timeouts.get("policy"))
    prober = Prober(workloads, {role: objs[role].metadata.name for role in netpol.CLIENTS},
                    _url(server.status.pod_ip), pods.served_text(server.metadata.name))

    baseline = prober.round()
    evidence("before any policy", "\n".join(s.line() for s in baseline))
    for pod, text in prober.last_evidence.items():
        evidence(f"before any policy: probe from {pod}", text)
    if not netpol.held(baseline, netpol.BASELINE_WANTS):
        apply(netpol.judge(setup, baseline))
        return

    deny = prober.until(netpol.DENY_WANTS, _create_policy(workloads, netpol.DENY_POLICY), "deny-all")
    involved = {client_node, server_node}
    if deny.held_after is None:   # a CNI without policy support warns: the allow step has nothing to show
        if not detection.known:   # no agent, no annotation: a config-file CNI is named by the server node's config
            setup = replace(setup, cni=_config_cni(request, server_node))
        apply(netpol.judge(setup, baseline, deny, unready_agents=_unready_agents(workloads, detection, involved)))
        return

    allow = prober.until(netpol.ALLOW_WANTS, _create_policy(workloads, netpol.ALLOW_POLICY), "allow rule")
    unready = _unready_agents(workloads, detection, involved) if allow.held_after is None else ()
    apply(netpol.judge(setup, baseline, deny, allow, unready_agents=unready))
