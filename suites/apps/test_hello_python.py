"""hello-python, the course's app: rollout, Pod IP, Service ClusterIP and DNS name, NodePort, replicas, Endpoints.

The module deploys manifests/hello-python into its own namespace, plus one probe pod and one
host-network probe pod per Ready node (placed by nodeName, so they do not depend on the scheduler).
Each check owns one behaviour; a check whose precondition is owned by another check (no ready
pod: APP-001; no endpoints: APP-006) is skipped with a pointer instead of failing twice.

Probes (clusterproof.pods) use a connect and a total timeout. Only inconclusive results (the exec
transport failed, the probe printed nothing) are retried; a wrong answer or a refused connection is
final. Right after the Service gets its endpoints, each path waits until *some* source gets a correct
answer (kube-proxy programs rules a moment after Endpoints change, as cilium waits with `nc -z`
before NodePort tests); then every source is probed once.
"""
from __future__ import annotations

import copy
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from clusterproof import pods, runid, timeouts
from clusterproof.checks import evidence, fail, require
from clusterproof.wait import Never, WaitTimeout, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("apps-hello-python")]

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "hello-python"
APP = "hello-python"
REPLICAS = 4
PORT, TARGET_PORT, NODE_PORT = 6000, 5000, 31000
HELLO_RE = re.compile(r"^Hello .+!\s*\nHostname: (\S+)", re.MULTILINE)
# For the project's own tests only: break the app in a known way (selector-mismatch, unready-replica).
FAULT = os.environ.get("CLUSTERPROOF_SELFTEST_HELLO_FAULT", "")
UNREADY_PATH = "/clusterproof-never-ready"
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
    skipped_nodes: list[str]
    probe_pods: dict[str, str] = field(default_factory=dict)   # node -> pod
    host_pods: dict[str, str] = field(default_factory=dict)    # node -> host-network pod
    rollout_error: str | None = None
    ready: dict[str, tuple[str, str]] = field(default_factory=dict)  # pod -> (ip, node)
    cluster_ip: str = ""
    endpoints_error: str | None = None
    endpoint_ips: set[str] = field(default_factory=set)


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


def _ready_nodes(core_v1) -> tuple[dict[str, str], list[str]]:
    """Ready nodes (name -> InternalIP) and the names of the others (the NODE checks own those)."""
    ready, skipped = {}, []
    for n in core_v1.list_node(_request_timeout=timeouts.get("api")).items:
        conds = {c.type: c.status for c in n.status.conditions or []}
        ip = next((a.address for a in n.status.addresses or [] if a.type == "InternalIP"), None)
        if conds.get("Ready") == "True" and ip:
            ready[n.metadata.name] = ip
        else:
            skipped.append(n.metadata.name)
    return ready, skipped


@pytest.fixture(scope="module")
def hello(namespace, core_v1, apps_v1, pytestconfig) -> Hello:
    """hello-python's Deployment and Service plus the probe pods, created in the module's namespace (no waiting)."""
    run = runid.get(pytestconfig)
    t = timeouts.get("api")
    dep = _load("deployment.yaml")
    dep["metadata"].setdefault("labels", {}).update(_labels(run))
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = pytestconfig.getoption("hello_image")
    if FAULT == "unready-replica":
        dep["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    svc = _load("service.yaml")
    svc["metadata"].setdefault("labels", {}).update(_labels(run))
    if FAULT == "selector-mismatch":
        svc["spec"]["selector"] = {"app": f"{APP}-matches-nothing"}
    apps_v1.create_namespaced_deployment(namespace, dep, _request_timeout=t)
    node_port, note = _create_service(core_v1, namespace, svc)
    nodes, skipped = _ready_nodes(core_v1)
    state = Hello(namespace, dep["metadata"]["name"], svc["metadata"]["name"], node_port, note, nodes, skipped)
    image = pytestconfig.getoption("probe_image")
    for i, node in enumerate(nodes):
        for host_network, names in ((False, state.probe_pods), (True, state.host_pods)):
            name = f"probe-{'host' if host_network else 'pod'}-{i}"
            core_v1.create_namespaced_pod(namespace, pods.probe_pod(name, node, image, run, host_network),
                                          _request_timeout=t)
            names[node] = name
    return state


def _pod_summary(pod) -> str:
    problem = pods.pod_problem(pod)
    if problem:
        return problem
    waiting = [cs.state.waiting.reason for cs in pod.status.container_statuses or [] if cs.state and cs.state.waiting]
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return f"{pod.status.phase}{', ' + ', '.join(waiting) if waiting else ''}{', ready' if ready else ', not ready'}"


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

    def rolled_out():
        d = apps_v1.read_namespaced_deployment(h.deployment, h.namespace, _request_timeout=t)
        st = d.status
        plist = core_v1.list_namespaced_pod(h.namespace, label_selector=f"app={APP}", _request_timeout=t).items
        now = time.time()
        for p in plist:
            problem = pods.pod_problem(p)
            if problem:
                raise Never(f"pod {p.metadata.name} on {p.spec.node_name}: {problem}")
            ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            for cs in p.status.container_statuses or []:
                started = cs.state.running.started_at if cs.state and cs.state.running else None
                if started and not ready and p.metadata.deletion_timestamp is None \
                        and now - started.timestamp() > grace:
                    raise Never(f"pod {p.metadata.name} on {p.spec.node_name} has run {now - started.timestamp():.0f}s"
                                f" without becoming ready ({_unready_reason(core_v1, h.namespace, p.metadata.name)});"
                                f" deployment: {_rollout_text(d)}")
        for c in st.conditions or []:
            if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded":
                raise Never(f"deployment {h.deployment}: {c.message}")
        done = ((st.observed_generation or 0) >= d.metadata.generation
                and (st.updated_replicas or 0) == (st.replicas or 0) == REPLICAS
                and (st.ready_replicas or 0) == (st.available_replicas or 0) == REPLICAS)
        return done, {"deployment": _rollout_text(d),
                      "pods": {p.metadata.name: _pod_summary(p) for p in plist}}

    def describe(obs) -> str:
        if not isinstance(obs, dict):
            return str(obs)
        shown = "; ".join(f"pod {k}: {v}" for k, v in list(obs["pods"].items())[:6])
        return f"{obs['deployment']}; {shown}"

    wait_for(rolled_out, f"deployment {h.namespace}/{h.deployment} to have {REPLICAS} updated, ready replicas",
             timeouts.get("rollout"), interval=1.0, describe=describe)


def _rollout_text(d) -> str:
    st = d.status
    return (f"{st.ready_replicas or 0}/{d.spec.replicas} ready, {st.updated_replicas or 0}/{d.spec.replicas} updated,"
            f" {st.available_replicas or 0} available, {st.replicas or 0} pods")


def _ready_pods(core_v1, h: Hello) -> dict[str, tuple[str, str]]:
    plist = core_v1.list_namespaced_pod(h.namespace, label_selector=f"app={APP}",
                                        _request_timeout=timeouts.get("api")).items
    return {p.metadata.name: (p.status.pod_ip, p.spec.node_name) for p in plist
            if p.metadata.deletion_timestamp is None and p.status.pod_ip
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}


@pytest.fixture(scope="module")
def rolled(hello: Hello, core_v1, apps_v1) -> Hello:
    """hello-python after its rollout (or after the rollout was seen to fail: APP-001 reports it)."""
    try:
        _wait_rollout(core_v1, apps_v1, hello)
        if FAULT == "unready-replica":
            # One more replica that never gets ready: a template whose readiness probe path does not exist.
            patch = {"spec": {"template": {
                "metadata": {"annotations": {"clusterproof.io/selftest-fault": "unready-replica"}},
                "spec": {"containers": [{"name": APP, "readinessProbe": {"httpGet": {"path": UNREADY_PATH,
                                                                                     "port": TARGET_PORT}}}]}}}}
            apps_v1.patch_namespaced_deployment(hello.deployment, hello.namespace, patch,
                                                _request_timeout=timeouts.get("api"))
            _wait_rollout(core_v1, apps_v1, hello)
    except WaitTimeout as exc:
        hello.rollout_error = str(exc)
    hello.ready = _ready_pods(core_v1, hello)
    return hello


def _endpoint_ips(core_v1, discovery, h: Hello) -> tuple[set[str], set[str], list[str]]:
    """Ready addresses in the Service's Endpoints and in its EndpointSlices, and the raw evidence."""
    t = timeouts.get("api")
    from kubernetes.client.exceptions import ApiException

    ep_ips: set[str] = set()
    raw = []
    try:
        ep = core_v1.read_namespaced_endpoints(h.service, h.namespace, _request_timeout=t)
        for subset in ep.subsets or []:
            ep_ips |= {a.ip for a in subset.addresses or []}
            raw.append(f"Endpoints ready {sorted(a.ip for a in subset.addresses or [])}, not ready "
                       f"{sorted(a.ip for a in subset.not_ready_addresses or [])}")
    except ApiException as exc:
        if exc.status != 404:
            raise
        raw.append("Endpoints: not found")
    slice_ips: set[str] = set()
    slices = discovery.list_namespaced_endpoint_slice(
        h.namespace, label_selector=f"kubernetes.io/service-name={h.service}", _request_timeout=t).items
    for s in slices:
        for e in s.endpoints or []:
            if e.conditions is None or e.conditions.ready is not False:
                slice_ips |= set(e.addresses or [])
        shown = [(e.addresses, e.conditions.ready if e.conditions else None) for e in s.endpoints or []]
        raw.append(f"EndpointSlice {s.metadata.name}: {shown}")
    return ep_ips, slice_ips, raw


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
        rolled.endpoint_ips = set(obs["endpoints"])
    except WaitTimeout as exc:
        rolled.endpoints_error = str(exc)
        ep_ips, slice_ips, _ = _endpoint_ips(core_v1, discovery, rolled)
        rolled.endpoint_ips = ep_ips & slice_ips
    return rolled


@pytest.fixture(scope="module")
def probes(hello: Hello, core_v1) -> Hello:
    """The probe pods (one normal, one host-network per Ready node) once Running."""
    pods.wait_running(core_v1, hello.namespace, [*hello.probe_pods.values(), *hello.host_pods.values()])
    return hello


def _need_ready(h: Hello) -> None:
    if not h.ready:
        pytest.skip(f"no ready {APP} pod to probe; APP-001 (rollout) reports why")


def _need_endpoints(h: Hello) -> None:
    _need_ready(h)
    if not h.endpoint_ips:
        pytest.skip(f"Service {h.namespace}/{h.service} has no ready endpoints; APP-006 (endpoints) reports why")


def _verdict(res: pods.HttpResult) -> tuple[bool, str, str | None]:
    """(answered correctly, short text, hostname) for one probe result."""
    if res.outcome != "ok":
        return False, f"{res.outcome}: {res.detail}", None
    m = HELLO_RE.search(res.body)
    if not m:
        return False, f"wrong answer: {res.body.strip()[:80]!r}", None
    return True, f"Hello from {m.group(1)}", m.group(1)


def _probe_pod(core_v1, h: Hello, pod: str, url: str) -> pods.HttpResult:
    return pods.conclusive(lambda: pods.http_get_from_pod(core_v1, h.namespace, pod, url))


def _in_parallel(jobs: list[tuple[str, object]]) -> list[tuple[str, pods.HttpResult]]:
    """Run (label, probe function) pairs concurrently: a timed-out path costs its timeout once, not per probe."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [(label, pool.submit(fn)) for label, fn in jobs]
        return [(label, f.result()) for label, f in futures]


def _gate(probe_fns: list, what: str) -> None:
    """Wait (bounded) until at least one source answers correctly: lets kube-proxy catch up with new endpoints."""
    limit = timeouts.get("endpoints") / 3
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for fn in probe_fns:
            if _verdict(fn())[0]:
                return
        time.sleep(1)
    evidence(f"{what}: no source answered within {limit:.0f}s", "every source is still probed once below")


def _report(subject: str, results: list[tuple[str, pods.HttpResult]], fix: str, expected: str) -> None:
    __tracebackhide__ = True
    rows, bad = [], []
    for label, res in results:
        ok, text, _ = _verdict(res)
        rows.append(f"{label} -> {res.url}: {text}")
        if not ok:
            bad.append(f"{label} -> {res.url}: {text}")
    evidence("probes", "\n".join(rows) + "\n\n" + "\n\n".join(r.evidence for _, r in results[:20]))
    require(not bad, subject, expected, f"{len(bad)} of {len(results)} probes failed", fix, rows=bad)


@pytest.mark.check("APP-001")
def test_rollout_completes(rolled: Hello):
    """The hello-python Deployment MUST roll out completely: 4 of 4 replicas updated, ready and available."""
    evidence("ready pods", {k: {"ip": ip, "node": node} for k, (ip, node) in rolled.ready.items()})
    require(rolled.rollout_error is None, f"deployment {rolled.namespace}/{rolled.deployment}",
            f"{REPLICAS}/{REPLICAS} replicas updated and ready", rolled.rollout_error,
            f"kubectl -n {rolled.namespace} describe pods -l app={APP}: fix the image ({APP} image must be "
            "pullable on every node, --hello-image), the readiness probe on :5000, or the node's capacity")


@pytest.mark.check("APP-002")
def test_pod_ip_answers_from_another_pod(rolled: Hello, probes: Hello, core_v1):
    """Every ready hello-python pod MUST answer on its Pod IP port 5000 from a pod on another node.

    On a single-node cluster the probe pod runs on the same node.
    """
    _need_ready(rolled)
    jobs = []
    for pod, (ip, node) in sorted(rolled.ready.items()):
        others = [n for n in probes.probe_pods if n != node] or list(probes.probe_pods)
        source = probes.probe_pods[others[0]]
        url = f"http://{_host(ip)}:{TARGET_PORT}/"
        jobs.append((f"pod {source} on {others[0]} to {pod} on {node}",
                     lambda s=source, u=url: _probe_pod(core_v1, rolled, s, u)))
    results = _in_parallel(jobs)
    _report(f"{APP} pods by Pod IP", results, "pod-to-pod traffic between nodes is broken: check the CNI (routes "
            "between the nodes' pod CIDRs, the CNI pods, bridge-nf-call-iptables) and that the app listens on "
            "0.0.0.0:5000", "every ready pod answers 'Hello ...!' on <pod IP>:5000")


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


@pytest.mark.check("APP-003")
def test_service_answers_on_cluster_ip_and_dns_name(served: Hello, probes: Hello, core_v1):
    """The hello-python Service MUST answer on ClusterIP:6000 and its DNS name from a pod on every node and every node.

    "From every node" is a host-network probe pod on that node (no SSH needed).
    """
    _need_endpoints(served)
    name = f"{served.service}.{served.namespace}.svc"
    targets = [f"http://{_host(served.cluster_ip)}:{PORT}/", f"http://{name}:{PORT}/"]
    sources = [(f"pod {p} on {n}", p) for n, p in probes.probe_pods.items()]
    sources += [(f"node {n} (host network pod {p})", p) for n, p in probes.host_pods.items()]
    _gate([lambda p=p: _probe_pod(core_v1, served, p, targets[0]) for _, p in sources], "ClusterIP")
    results = _in_parallel([(label, lambda p=pod, u=u: _probe_pod(core_v1, served, p, u))
                            for u in targets for label, pod in sources])
    _report(f"Service {served.namespace}/{served.service} ({served.cluster_ip}:{PORT}, {name})", results,
            "kube-proxy (or the CNI's service implementation) must run on every node and program the "
            "Service rules: check `kubectl -n kube-system get pods -o wide` and kube-proxy's logs on the nodes "
            "that fail; a failing DNS name with a working ClusterIP points at CoreDNS",
            "'Hello ...!' from every source")


@pytest.mark.check("APP-004")
def test_nodeport_answers_on_every_node(served: Hello):
    """The hello-python NodePort MUST answer on every node's InternalIP from the machine running the suite."""
    _need_endpoints(served)
    if served.node_port_note:
        evidence("nodePort", served.node_port_note)
    urls = {n: f"http://{_host(ip)}:{served.node_port}/" for n, ip in served.nodes.items()}
    _gate([lambda u=u: pods.http_get_local(u) for u in urls.values()], "NodePort")
    results = _in_parallel([(f"this machine to node {n}", lambda u=u: pods.conclusive(lambda: pods.http_get_local(u)))
                            for n, u in urls.items()])
    note = f" ({served.node_port_note})" if served.node_port_note else ""
    _report(f"NodePort {served.node_port} of Service {served.namespace}/{served.service}{note}", results,
            f"kube-proxy must run on every node; a firewall (cloud security group, iptables INPUT) must allow "
            f"TCP {served.node_port} (range 30000-32767) from this machine",
            "'Hello ...!' from every node's InternalIP")


@pytest.mark.check("APP-005")
def test_every_ready_replica_answers(served: Hello, probes: Hello, core_v1):
    """Requests to the hello-python Service MUST be answered by every ready replica, and by ready replicas only."""
    _need_endpoints(served)
    url = f"http://{_host(served.cluster_ip)}:{PORT}/"
    want = set(served.ready)
    seen: dict[str, int] = {}
    answered, sent = 0, 0
    sources = list(probes.probe_pods.values())
    one = pods.http_script(url, timeouts.get("probe_connect"), timeouts.get("probe"))
    loop = f"for i in $(seq {SPREAD_BATCH}); do {one}; done"
    i = 0
    while sent < SPREAD_MAX and not want <= set(seen):
        pod = sources[i % len(sources)]
        i += 1
        res = pods.exec_in_pod(core_v1, served.namespace, pod, ["sh", "-c", loop], timeout=SPREAD_BATCH * 12)
        if res.error:
            continue  # inconclusive: the exec transport failed
        sent += SPREAD_BATCH
        for m in HELLO_RE.finditer(res.stdout):
            seen[m.group(1)] = seen.get(m.group(1), 0) + 1
            answered += 1
    evidence("hostnames seen", {"requests": sent, "answered": answered, "by_hostname": seen,
                                "ready_pods": sorted(want)})
    if answered == 0:
        pytest.skip("the Service answered no request from any pod; APP-003 (ClusterIP) reports why")
    missing, extra = sorted(want - set(seen)), sorted(set(seen) - want)
    rows = [f"ready pod {p}: no answer in {answered} answered requests" for p in missing]
    rows += [f"{p}: answered but is not a ready replica" for p in extra]
    require(not rows, f"Service {served.namespace}/{served.service}",
            f"answers from all {len(want)} ready replicas ({', '.join(sorted(want))}) and no other",
            f"answers from {', '.join(f'{k} x{v}' for k, v in sorted(seen.items()))}",
            "check the Service's endpoints (APP-006) and kube-proxy's load balancing (session affinity off, "
            "all endpoints in the rules)", rows=rows)


@pytest.mark.check("APP-006")
def test_endpoints_match_ready_pods(served: Hello):
    """The hello-python Service's Endpoints and EndpointSlices MUST list exactly the ready pods' IPs."""
    _need_ready(served)
    want = {ip: pod for pod, (ip, _) in served.ready.items()}
    if served.endpoints_error:
        fail(f"Service {served.namespace}/{served.service}", f"endpoints = the ready pods {sorted(want)}",
             served.endpoints_error,
             f"the Service's selector must match the pods' labels (app={APP}): kubectl -n {served.namespace} "
             f"get svc {served.service} -o jsonpath='{{.spec.selector}}'; kubectl get pods --show-labels",
             rows=[f"ready pod {pod} ({ip}) not in the endpoints" for ip, pod in sorted(want.items())
                   if ip not in served.endpoint_ips]
             + [f"{ip} in the endpoints but not a ready pod" for ip in sorted(served.endpoint_ips - set(want))])
    evidence("endpoints", sorted(served.endpoint_ips))
