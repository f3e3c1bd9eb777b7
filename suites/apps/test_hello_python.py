"""hello-python, the course's app: rollout, Pod IP, Service ClusterIP and DNS name, NodePort, replicas, Endpoints.

The module deploys manifests/hello-python into its own namespace, plus one probe pod and one
host-network probe pod per Ready node (placed by nodeName, so they do not depend on the scheduler).
The Ready nodes come from the run's cluster snapshot (the `cluster` fixture). Each check owns one
behaviour; a check whose precondition is owned by another check (no ready pod: APP-001; no
endpoints: APP-006) is skipped with a pointer instead of failing twice. The judgements (rollout,
endpoints vs ready pods, which replicas answered) are clusterproof.apps; this module deploys and probes.

Probes (clusterproof.pods) use a connect and a total timeout. Only inconclusive results (the exec
transport failed, the probe printed nothing) are retried; a wrong answer or a refused connection is
final. Right after the Service gets its endpoints, each path waits until *some* source gets a correct
answer (kube-proxy programs rules a moment after Endpoints change, as cilium waits with `nc -z`
before NodePort tests); then every source is probed once.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import yaml

from clusterproof import apps, pods, runid, timeouts
from clusterproof.apps import APP, REPLICAS
from clusterproof.checks import apply, evidence
from clusterproof.wait import Never, WaitTimeout, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("apps-hello-python")]

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "hello-python"
PORT, TARGET_PORT, NODE_PORT = 6000, 5000, 31000
SPREAD_BATCH, SPREAD_MAX = 16, 96  # requests per exec, and in all, to see every replica answer


@dataclass
class Hello:
    """The deployed app and what the module found out about it."""

    namespace: str
    deployment: str
    service: str
    node_port: int
    node_port_note: str
    nodes: dict[str, str]                       # Ready node name -> InternalIP
    skipped_nodes: list[str]                    # "node: why" for each node without probe pods
    probe_pods: dict[str, str] = field(default_factory=dict)   # node -> pod
    host_pods: dict[str, str] = field(default_factory=dict)    # node -> host-network pod
    rollout_error: str | None = None
    ready: dict[str, tuple[str, str]] = field(default_factory=dict)  # pod -> (ip, node)
    cluster_ip: str = ""
    endpoints_error: str | None = None
    endpoint_ips: set[str] = field(default_factory=set)        # in both the Endpoints and the EndpointSlices
    ep_ips: set[str] = field(default_factory=set)
    slice_ips: set[str] = field(default_factory=set)
    image_options: dict[str, str] = field(default_factory=dict)  # image -> the option that sets it

    @property
    def service_name(self) -> str:
        return f"{self.namespace}/{self.service}"


def _load(name: str) -> dict:
    return yaml.safe_load((MANIFESTS / name).read_text())


def _labels(run: dict[str, str]) -> dict[str, str]:
    return {runid.LABEL_OWNED: "true", runid.LABEL_RUN: run["run"]}


def _create_service(core_v1, namespace: str, body: dict) -> tuple[int, str]:
    """Create the Service with nodePort 31000, or let the cluster pick one when 31000 is taken."""
    from kubernetes.client.exceptions import ApiException

    t = timeouts.get("api")
    try:
        svc = core_v1.create_namespaced_service(namespace, body, _request_timeout=t)
        return svc.spec.ports[0].node_port, ""
    except ApiException as exc:
        if exc.status != 422 or "allocated" not in (exc.body or ""):
            raise
    owner = "another Service"
    for other in core_v1.list_service_for_all_namespaces(_request_timeout=t).items:
        if any(p.node_port == NODE_PORT for p in other.spec.ports or []):
            owner = f"Service {other.metadata.namespace}/{other.metadata.name}"
    body = copy.deepcopy(body)
    del body["spec"]["ports"][0]["nodePort"]
    svc = core_v1.create_namespaced_service(namespace, body, _request_timeout=t)
    port = svc.spec.ports[0].node_port
    return port, f"nodePort {NODE_PORT} is taken by {owner}; the checks use nodePort {port} instead"


@pytest.fixture(scope="module")
def hello(namespace, core_v1, apps_v1, cluster, pytestconfig) -> Hello:
    """hello-python's Deployment and Service plus the probe pods, created in the module's namespace (no waiting)."""
    run = runid.get(pytestconfig)
    t = timeouts.get("api")
    dep = _load("deployment.yaml")
    dep["metadata"].setdefault("labels", {}).update(_labels(run))
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = pytestconfig.getoption("hello_image")
    svc = _load("service.yaml")
    svc["metadata"].setdefault("labels", {}).update(_labels(run))
    apps_v1.create_namespaced_deployment(namespace, dep, _request_timeout=t)
    node_port, note = _create_service(core_v1, namespace, svc)
    nodes, skipped = apps.ready_nodes(cluster.nodes)
    state = Hello(namespace, dep["metadata"]["name"], svc["metadata"]["name"], node_port, note, nodes, skipped)
    state.image_options = {pytestconfig.getoption("hello_image"): "--hello-image"}
    image = pytestconfig.getoption("probe_image")
    for i, node in enumerate(nodes):
        for host_network, names in ((False, state.probe_pods), (True, state.host_pods)):
            name = f"probe-{'host' if host_network else 'pod'}-{i}"
            core_v1.create_namespaced_pod(namespace, pods.probe_pod(name, node, image, run, host_network),
                                          _request_timeout=t)
            names[node] = name
    return state


def _unready_reason(core_v1, namespace: str, pod: str) -> str:
    events = core_v1.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}",
                                           _request_timeout=timeouts.get("api")).items
    unhealthy = [e for e in events if e.reason == "Unhealthy"]
    if unhealthy:
        last = max(unhealthy, key=lambda e: (e.last_timestamp or e.event_time or e.metadata.creation_timestamp))
        return (last.message or "").splitlines()[0][:200]
    return "no readiness probe event"


def _wait_rollout(core_v1, apps_v1, h: Hello) -> None:
    """Wait for the rollout; stop early on pull/start errors or a container that runs but never gets ready."""
    __tracebackhide__ = True
    t = timeouts.get("api")
    grace = timeouts.get("pod_start") / 2
    watch = pods.StartWatch(pods.start_grace(), h.image_options, core_v1)   # no image, no sandbox: seconds

    def rolled_out():
        d = apps_v1.read_namespaced_deployment(h.deployment, h.namespace, _request_timeout=t)
        plist = core_v1.list_namespaced_pod(h.namespace, label_selector=f"app={APP}", _request_timeout=t).items
        dead = apps.rollout_dead_end(d, plist, watch, time.monotonic())
        if dead:
            raise Never(dead)
        refused = next(((p, why) for p in plist if (why := pods.unschedulable(p, time.time(), grace / 3))), None)
        if refused:
            raise Never(f"pod {refused[0].metadata.name}: {refused[1]}; deployment: {apps.rollout_text(d)}")
        stuck = apps.never_ready(plist, time.time(), grace)
        if stuck:
            p, seconds = stuck
            raise Never(f"pod {p.metadata.name} on {p.spec.node_name} has run {seconds:.0f}s without becoming ready"
                        f" ({_unready_reason(core_v1, h.namespace, p.metadata.name)});"
                        f" deployment: {apps.rollout_text(d)}")
        return apps.rollout_complete(d, REPLICAS), {"deployment": apps.rollout_text(d),
                                                    "pods": {p.metadata.name: apps.pod_summary(p) for p in plist}}

    def describe(obs) -> str:
        if not isinstance(obs, dict):
            return str(obs)
        shown = "; ".join(f"pod {k}: {v}" for k, v in list(obs["pods"].items())[:6])
        return f"{obs['deployment']}; {shown}"

    wait_for(rolled_out, f"deployment {h.namespace}/{h.deployment} to have {REPLICAS} updated, ready replicas",
             timeouts.get("rollout"), interval=1.0, describe=describe)


def _ready_pods(core_v1, h: Hello) -> dict[str, tuple[str, str]]:
    plist = core_v1.list_namespaced_pod(h.namespace, label_selector=f"app={APP}",
                                        _request_timeout=timeouts.get("api")).items
    return apps.ready_pods(plist)


@pytest.fixture(scope="module")
def rolled(hello: Hello, core_v1, apps_v1) -> Hello:
    """hello-python after its rollout (or after the rollout was seen to fail: APP-001 reports it)."""
    try:
        _wait_rollout(core_v1, apps_v1, hello)
    except WaitTimeout as exc:
        hello.rollout_error = str(exc)
    hello.ready = _ready_pods(core_v1, hello)
    return hello


def _endpoint_ips(core_v1, discovery, h: Hello) -> tuple[set[str], set[str], list[str]]:
    """Ready addresses in the Service's Endpoints and in its EndpointSlices, and the raw evidence."""
    t = timeouts.get("api")
    from kubernetes.client.exceptions import ApiException

    try:
        ep = core_v1.read_namespaced_endpoints(h.service, h.namespace, _request_timeout=t)
    except ApiException as exc:
        if exc.status != 404:
            raise
        ep = None
    slices = discovery.list_namespaced_endpoint_slice(
        h.namespace, label_selector=f"kubernetes.io/service-name={h.service}", _request_timeout=t).items
    return apps.endpoint_ips(ep, slices)


@pytest.fixture(scope="module")
def served(rolled: Hello, core_v1, api_client) -> Hello:
    """hello-python once its Service's Endpoints list the ready pods (or that was seen to fail: APP-006)."""
    from kubernetes import client

    discovery = client.DiscoveryV1Api(api_client)
    t = timeouts.get("api")
    svc = core_v1.read_namespaced_service(rolled.service, rolled.namespace, _request_timeout=t)
    rolled.cluster_ip = svc.spec.cluster_ip
    want = {ip for ip, _ in rolled.ready.values()}

    def matches():
        ep_ips, slice_ips, raw = _endpoint_ips(core_v1, discovery, rolled)
        if want and not ep_ips and not slice_ips:
            selector = svc.spec.selector or {}
            sel = ",".join(f"{k}={v}" for k, v in selector.items())
            matched = core_v1.list_namespaced_pod(rolled.namespace, label_selector=sel, _request_timeout=t).items \
                if sel else []
            if not matched:
                raise Never(f"selector {sel or '(none)'} of Service {rolled.service} matches no pod")
        return ep_ips == want and slice_ips == want, {"endpoints": sorted(ep_ips), "slices": sorted(slice_ips),
                                                      "raw": raw}

    try:
        obs = wait_for(matches, f"Service {rolled.namespace}/{rolled.service} endpoints to list the ready pods "
                       f"{sorted(want)}", timeouts.get("endpoints"), interval=0.5,
                       describe=lambda o: f"Endpoints {o['endpoints']}, EndpointSlices {o['slices']}"
                       if isinstance(o, dict) else str(o))
        rolled.ep_ips, rolled.slice_ips = set(obs["endpoints"]), set(obs["slices"])
    except WaitTimeout as exc:
        rolled.endpoints_error = str(exc)
        rolled.ep_ips, rolled.slice_ips, _ = _endpoint_ips(core_v1, discovery, rolled)
    rolled.endpoint_ips = rolled.ep_ips & rolled.slice_ips
    return rolled


@pytest.fixture(scope="module")
def probes(hello: Hello, core_v1) -> Hello:
    """The probe pods (one normal, one host-network per Ready node) once Running."""
    pods.wait_running(core_v1, hello.namespace, [*hello.probe_pods.values(), *hello.host_pods.values()])
    return hello


def _need_ready(h: Hello) -> None:
    """Skip, pointing at APP-001, when no hello-python pod is ready."""
    skip = apps.need_ready(h.ready)
    if skip is not None:
        apply(skip)


def _need_endpoints(h: Hello) -> None:
    """Skip, pointing at APP-001 or APP-006, when there is no ready pod or no ready endpoint."""
    skip = apps.need_endpoints(h.ready, h.endpoint_ips, h.service_name)
    if skip is not None:
        apply(skip)


def _probe_pod(core_v1, h: Hello, pod: str, url: str) -> pods.HttpResult:
    return pods.conclusive(lambda: pods.http_get_from_pod(core_v1, h.namespace, pod, url))


def _in_parallel(jobs: Sequence[tuple[str, Callable[[], pods.HttpResult]]]) -> list[tuple[str, pods.HttpResult]]:
    """Run (label, probe function) pairs concurrently: a timed-out path costs its timeout once, not per probe."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [(label, pool.submit(fn)) for label, fn in jobs]
        return [(label, f.result()) for label, f in futures]


def _gate(probe_fns: list, what: str) -> None:
    """Wait (bounded) until every source has answered correctly once: lets each node's kube-proxy catch up with the
    new endpoints (a rule that lags on one node is what this waits out, not only the first rule anywhere)."""
    limit = timeouts.get("endpoints") / 3
    t0 = time.monotonic()
    waiting = list(probe_fns)
    with ThreadPoolExecutor(max_workers=8) as pool:
        while waiting:
            answered = [apps.answer(r)[0] for r in pool.map(lambda fn: fn(), waiting)]
            waiting = [fn for fn, ok in zip(waiting, answered) if not ok]
            if not waiting or time.monotonic() - t0 >= limit:
                break
            time.sleep(1)
    took = time.monotonic() - t0
    if waiting:
        evidence(f"{what}: {len(waiting)} of {len(probe_fns)} sources did not answer within {limit:.0f}s",
                 "every source is probed once more below")
    elif took >= 2:
        evidence(f"{what}: every source answered", f"after {took:.1f}s (kube-proxy catching up)")


def _report(subject: str, results: list[tuple[str, pods.HttpResult]], fix: str, expected: str,
            left_out: Sequence[str] = ()) -> None:
    __tracebackhide__ = True
    rows = [f"{label} -> {res.url}: {apps.answer(res)[1]}" for label, res in results]
    if left_out:
        evidence("nodes without probe pods (the NODE checks own them)", "\n".join(left_out))
    evidence("probes", "\n".join(rows) + "\n\n" + "\n\n".join(r.evidence for _, r in results[:20]))
    apply(apps.judge_probes(subject, results, expected, fix, left_out))


@pytest.mark.check("APP-001")
def test_rollout_completes(rolled: Hello):
    """Waits for the rollout, stopping early on a pod that cannot start or runs but never gets ready."""
    evidence("ready pods", {k: {"ip": ip, "node": node} for k, (ip, node) in rolled.ready.items()})
    apply(apps.judge_rollout(f"{rolled.namespace}/{rolled.deployment}", rolled.rollout_error, rolled.ready))


@pytest.mark.check("APP-002")
def test_pod_ip_answers_from_another_pod(rolled: Hello, probes: Hello, core_v1):
    """The source is a probe pod on another node; on a single-node cluster it runs on the same node."""
    _need_ready(rolled)
    jobs = []
    for pod, (ip, node) in sorted(rolled.ready.items()):
        others = [n for n in probes.probe_pods if n != node] or list(probes.probe_pods)
        source = probes.probe_pods[others[0]]
        url = f"http://{_host(ip)}:{TARGET_PORT}/"
        jobs.append((f"pod {source} on {others[0]} to {pod} on {node}",
                     partial(_probe_pod, core_v1, rolled, source, url)))
    results = _in_parallel(jobs)
    _report(f"{APP} pods by Pod IP", results, "pod-to-pod traffic between nodes is broken: check the CNI (routes "
            "between the nodes' pod CIDRs, the CNI pods, bridge-nf-call-iptables) and that the app listens on "
            "0.0.0.0:5000", "every ready pod answers 'Hello ...!' on <pod IP>:5000", probes.skipped_nodes)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


@pytest.mark.check("APP-003")
def test_service_answers_on_cluster_ip_and_dns_name(served: Hello, probes: Hello, core_v1):
    """"From every node" is a host-network probe pod on that node (no SSH needed)."""
    _need_endpoints(served)
    name = f"{served.service}.{served.namespace}.svc"
    targets = [f"http://{_host(served.cluster_ip)}:{PORT}/", f"http://{name}:{PORT}/"]
    sources = [(f"pod {p} on {n}", p) for n, p in probes.probe_pods.items()]
    sources += [(f"node {n} (host network pod {p})", p) for n, p in probes.host_pods.items()]
    _gate([lambda p=p: _probe_pod(core_v1, served, p, targets[0]) for _, p in sources], "ClusterIP")
    results = _in_parallel([(label, partial(_probe_pod, core_v1, served, pod, u))
                            for u in targets for label, pod in sources])
    _report(f"Service {served.namespace}/{served.service} ({served.cluster_ip}:{PORT}, {name})", results,
            "kube-proxy (or the CNI's service implementation) must run on every node and program the "
            "Service rules: check `kubectl -n kube-system get pods -o wide` and kube-proxy's logs on the nodes "
            "that fail; a failing DNS name with a working ClusterIP points at CoreDNS",
            "'Hello ...!' from every source", probes.skipped_nodes)


@pytest.mark.check("APP-004")
def test_nodeport_answers_on_every_node(served: Hello):
    """nodePort 31000, or the one the cluster picked when 31000 is taken (said in the evidence)."""
    _need_endpoints(served)
    if served.node_port_note:
        evidence("nodePort", served.node_port_note)
    urls = {n: f"http://{_host(ip)}:{served.node_port}/" for n, ip in served.nodes.items()}
    _gate([lambda u=u: pods.http_get_local(u) for u in urls.values()], "NodePort")
    results = _in_parallel([(f"this machine to node {n}", partial(pods.conclusive, partial(pods.http_get_local, u)))
                            for n, u in urls.items()])
    note = f" ({served.node_port_note})" if served.node_port_note else ""
    _report(f"NodePort {served.node_port} of Service {served.namespace}/{served.service}{note}", results,
            f"kube-proxy must run on every node; a firewall (cloud security group, iptables INPUT) must allow "
            f"TCP {served.node_port} (range 30000-32767) from this machine",
            "'Hello ...!' from every node's InternalIP", served.skipped_nodes)


@pytest.mark.check("APP-005")
def test_every_ready_replica_answers(served: Hello, probes: Hello, core_v1):
    """Batches of concurrent requests to the ClusterIP from the probe pods in turn, until every ready replica answered.

    Bounded by SPREAD_MAX requests and a deadline; an exec that fails is counted, waited after, retried.
    """
    _need_endpoints(served)
    url = f"http://{_host(served.cluster_ip)}:{PORT}/"
    want = set(served.ready)
    seen: dict[str, int] = {}
    answered = sent = failures = 0
    last_error = ""
    sources = list(probes.probe_pods.values())
    one = pods.http_script(url, timeouts.get("probe_connect"), timeouts.get("probe"))
    # the batch's requests at once (each prints its answer with one write): a replica that does not answer costs
    # the batch one connect timeout, not one per request sent its way
    loop = f"for i in $(seq {SPREAD_BATCH}); do ( {one} ) & done; wait"
    deadline = time.monotonic() + timeouts.get("rollout")  # healthy: a second or two; slow paths: a few batches
    i = 0
    while sources and sent < SPREAD_MAX and not want <= set(seen) and time.monotonic() < deadline:
        pod = sources[i % len(sources)]
        i += 1
        res = pods.exec_in_pod(core_v1, served.namespace, pod, ["sh", "-c", loop], timeout=SPREAD_BATCH * 12)
        if res.error:  # inconclusive: the exec transport failed; says nothing about the Service
            failures += 1
            last_error = f"pod {pod}: {res.error}"
            time.sleep(1)
            continue
        sent += SPREAD_BATCH
        for name in apps.hostnames(res.stdout):
            seen[name] = seen.get(name, 0) + 1
            answered += 1
    evidence("hostnames seen", {"requests": sent, "answered": answered, "by_hostname": seen,
                                "ready_pods": sorted(want), "exec_failures": failures, "last_exec_error": last_error})
    apply(apps.judge_replicas(served.service_name, want, seen, answered, failures, last_error))


@pytest.mark.check("APP-006")
def test_endpoints_match_ready_pods(served: Hello):
    """Waits (bounded) for the endpoint controller, stopping early when the selector matches no pod."""
    evidence("endpoints", {"Endpoints": sorted(served.ep_ips), "EndpointSlices": sorted(served.slice_ips)})
    apply(apps.judge_endpoints(served.service_name, served.ready, served.ep_ips, served.slice_ips,
                               served.endpoints_error))
