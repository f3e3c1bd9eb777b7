"""Pure judgements about the hello-python app (suites/apps): rollout, endpoints, probe answers, replicas.

The checks deploy and probe; these functions take what they saw (kubernetes client models,
`pods.HttpResult`s, plain sets) and say whether it is right, as a Verdict or a small fact.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .pods import HttpResult, StartWatch, is_ready, pod_problem
from .verdict import Verdict

APP = "hello-python"
REPLICAS = 4
HELLO_RE = re.compile(r"^Hello .+!\s*\nHostname: (\S+)", re.MULTILINE)


# ------------------------------------------------------------------ setup facts

def ready_nodes(nodes: Iterable[Any]) -> tuple[dict[str, str], list[str]]:
    """Ready nodes (name -> InternalIP) of the cluster snapshot (NodeFacts), and a row for each node left out.

    A node NotReady or without an InternalIP (`NodeFacts.problem`) gets no probe pods: the NODE checks
    own that. The rows say why: `n2: Ready=False (KubeletNotReady: ...)`.
    """
    ready, left_out = {}, []
    for n in nodes:
        if n.ready and n.internal_ip:
            ready[n.name] = n.internal_ip
        else:
            left_out.append(f"{n.name}: {n.problem or 'not Ready'}")
    return ready, left_out


def rollout_text(d: Any) -> str:
    st = d.status
    return (f"{st.ready_replicas or 0}/{d.spec.replicas} ready, {st.updated_replicas or 0}/{d.spec.replicas} updated,"
            f" {st.available_replicas or 0} available, {st.replicas or 0} pods")


def rollout_complete(d: Any, replicas: int = REPLICAS) -> bool:
    """The Deployment's controller saw the latest spec and every replica is updated, ready and available."""
    st = d.status
    return ((st.observed_generation or 0) >= (d.metadata.generation or 0)
            and (st.updated_replicas or 0) == (st.replicas or 0) == replicas
            and (st.ready_replicas or 0) == (st.available_replicas or 0) == replicas)


def rollout_dead_end(d: Any, pods: list[Any], watch: StartWatch | None = None, now: float = 0.0) -> str | None:
    """Why the rollout can never finish (a pod that cannot start, the progress deadline passed), or None.

    With a `watch` (one per rollout wait, `now` from time.monotonic()) a pod's start error counts once it has
    lasted the watch's short grace; without one, at once."""
    unseen = watch.unobserved("deployment", d, now) if watch is not None else None
    if unseen:
        return unseen
    for p in pods:
        problem = watch.check(p, now) if watch is not None else pod_problem(p)
        if problem:
            return f"pod {p.metadata.name} on {p.spec.node_name}: {problem}"
    for c in d.status.conditions or []:
        if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded":
            return f"deployment {d.metadata.name}: {c.message}"
    return None


def never_ready(pods: list[Any], now: float, grace: float) -> tuple[Any, float] | None:
    """A pod whose container has run longer than `grace` seconds without the pod getting ready, and for how long."""
    for p in pods:
        if is_ready(p) or p.metadata.deletion_timestamp is not None:
            continue
        for cs in p.status.container_statuses or []:
            started = cs.state.running.started_at if cs.state and cs.state.running else None
            if started and now - started.timestamp() > grace:
                return p, now - started.timestamp()
    return None


def pod_summary(pod: Any) -> str:
    problem = pod_problem(pod)
    if problem:
        return problem
    waiting = [cs.state.waiting.reason for cs in pod.status.container_statuses or [] if cs.state and cs.state.waiting]
    state = ", ready" if is_ready(pod) else ", not ready"
    return f"{pod.status.phase}{', ' + ', '.join(waiting) if waiting else ''}{state}"


def ready_pods(pods: list[Any]) -> dict[str, tuple[str, str]]:
    """pod name -> (pod IP, node) of the ready, not terminating pods with an IP."""
    return {p.metadata.name: (p.status.pod_ip, p.spec.node_name) for p in pods
            if p.metadata.deletion_timestamp is None and p.status.pod_ip and is_ready(p)}


def endpoint_ips(endpoints: Any | None, slices: list[Any]) -> tuple[set[str], set[str], list[str]]:
    """Ready addresses in the Service's Endpoints (None: not found) and in its EndpointSlices, and a text of both."""
    ep_ips: set[str] = set()
    raw = []
    if endpoints is None:
        raw.append("Endpoints: not found")
    else:
        for subset in endpoints.subsets or []:
            ep_ips |= {a.ip for a in subset.addresses or []}
            raw.append(f"Endpoints ready {sorted(a.ip for a in subset.addresses or [])}, not ready "
                       f"{sorted(a.ip for a in subset.not_ready_addresses or [])}")
    slice_ips: set[str] = set()
    for s in slices:
        for e in s.endpoints or []:
            if e.conditions is None or e.conditions.ready is not False:
                slice_ips |= set(e.addresses or [])
        shown = [(e.addresses, e.conditions.ready if e.conditions else None) for e in s.endpoints or []]
        raw.append(f"EndpointSlice {s.metadata.name}: {shown}")
    return ep_ips, slice_ips, raw


def answer(res: HttpResult) -> tuple[bool, str, str | None]:
    """(answered correctly, short text, the answering pod's hostname) for one probe result."""
    if res.outcome != "ok":
        return False, f"{res.outcome}: {res.detail}", None
    m = HELLO_RE.search(res.body)
    if not m:
        return False, f"wrong answer: {res.body.strip()[:80]!r}", None
    return True, f"Hello from {m.group(1)}", m.group(1)


def hostnames(stdout: str) -> list[str]:
    """The hostnames in every hello-python answer printed by a batch of requests."""
    return [m.group(1) for m in HELLO_RE.finditer(stdout)]


# ------------------------------------------------------------------ verdicts

def need_ready(ready: dict[str, Any]) -> Verdict | None:
    """A skip pointing at APP-001 when no hello-python pod is ready; None: go on."""
    if not ready:
        return Verdict.skipped(f"no ready {APP} pod to probe; APP-001 (rollout) reports why", blames="APP-001")
    return None


def need_endpoints(ready: dict[str, Any], endpoints: set[str], service: str) -> Verdict | None:
    """A skip pointing at APP-001 (no ready pod) or APP-006 (no ready endpoint); None: go on."""
    if not ready:
        return need_ready(ready)
    if not endpoints:
        return Verdict.skipped(f"Service {service} has no ready endpoints; APP-006 (endpoints) reports why",
                               blames="APP-006")
    return None


def judge_rollout(deployment: str, error: str | None, ready: dict[str, tuple[str, str]],
                  replicas: int = REPLICAS) -> Verdict:
    """APP-001: the rollout completed (`error` is what the wait for it saw instead)."""
    expected = f"{replicas}/{replicas} replicas updated and ready"
    subject = f"deployment {deployment}"
    if error is not None:
        namespace = deployment.split("/", 1)[0]
        return Verdict.failed(subject, expected, error,
                              f"kubectl -n {namespace} describe pods -l app={APP}: fix the image ({APP} image must "
                              "be pullable on every node, --hello-image), the readiness probe on :5000, or the "
                              "node's capacity")
    return Verdict.passed(subject, expected, f"{len(ready)} ready: " + ", ".join(
        f"{p} on {node}" for p, (_, node) in sorted(ready.items())))


def judge_probes(subject: str, results: list[tuple[str, HttpResult]], expected: str, fix: str,
                 left_out: Iterable[str] = ()) -> Verdict:
    """APP-002/003/004: every probe (a source label and what it saw) got a hello-python answer.

    `left_out`: rows for the nodes that got no probe pod (`ready_nodes`), named when no probe ran.
    """
    bad = []
    for label, res in results:
        ok, text, _ = answer(res)
        if not ok:
            bad.append(f"{label} -> {res.url}: {text}")
    if not results:
        skipped = "; ".join(left_out)
        return Verdict.errored(subject, "no probe ran (no Ready node with a probe pod"
                               + (f"; left out: {skipped})" if skipped else ")"))
    if bad:
        return Verdict.failed(subject, expected, f"{len(bad)} of {len(results)} probes failed", fix, rows=bad)
    return Verdict.passed(subject, expected, f"{len(results)} of {len(results)} probes answered")


def judge_replicas(service: str, ready: set[str], seen: dict[str, int], answered: int,
                   exec_failures: int = 0, last_error: str = "") -> Verdict:
    """APP-005: the Service's answers came from every ready replica (hostname = pod name) and from no other pod."""
    if answered == 0:
        if exec_failures and not seen:
            return Verdict.errored(f"Service {service}", f"no request could be sent: exec into the probe pods failed "
                                   f"{exec_failures} time(s), last: {last_error}")
        return Verdict.skipped("the Service answered no request from any pod; APP-003 (ClusterIP) reports why",
                               blames="APP-003")
    missing, extra = sorted(ready - set(seen)), sorted(set(seen) - ready)
    rows = [f"ready pod {p}: no answer in {answered} answered requests" for p in missing]
    rows += [f"{p}: answered but is not a ready replica" for p in extra]
    expected = f"answers from all {len(ready)} ready replicas ({', '.join(sorted(ready))}) and no other"
    observed = f"answers from {', '.join(f'{k} x{v}' for k, v in sorted(seen.items()))}"
    if rows:
        return Verdict.failed(f"Service {service}", expected, observed,
                              "check the Service's endpoints (APP-006) and kube-proxy's load balancing (session "
                              "affinity off, all endpoints in the rules)", rows=rows)
    return Verdict.passed(f"Service {service}", expected, observed)


def judge_endpoints(service: str, ready: dict[str, tuple[str, str]], ep_ips: set[str], slice_ips: set[str],
                    error: str | None = None) -> Verdict:
    """APP-006: the Service's Endpoints and EndpointSlices list exactly the ready pods' IPs.

    `error` is what the wait for them to match saw (e.g. a selector that matches no pod); it is the
    observation when given.
    """
    skip = need_ready(ready)
    if skip is not None:
        return skip
    want = {ip: pod for pod, (ip, _) in ready.items()}
    rows = []
    for source, got in (("Endpoints", ep_ips), ("EndpointSlices", slice_ips)):
        rows += [f"ready pod {pod} ({ip}) not in the {source}" for ip, pod in sorted(want.items()) if ip not in got]
        rows += [f"{ip} in the {source} but not a ready pod" for ip in sorted(got - set(want))]
    subject = f"Service {service}"
    expected = f"endpoints = the ready pods {sorted(want)}"
    if error or rows:
        namespace, _, name = service.partition("/")
        return Verdict.failed(subject, expected, error or f"Endpoints {sorted(ep_ips)}, EndpointSlices "
                              f"{sorted(slice_ips)}",
                              f"the Service's selector must match the pods' labels (app={APP}): kubectl -n "
                              f"{namespace} get svc {name} -o jsonpath='{{.spec.selector}}'; kubectl get pods "
                              "--show-labels", rows=rows)
    return Verdict.passed(subject, expected, f"Endpoints and EndpointSlices {sorted(ep_ips)}")
