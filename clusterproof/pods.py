"""In-cluster workloads for the checks: create, wait (failing fast), exec, probe, explain.

API (keep it small; fixtures/workloads.py wraps it per test module):

- `Workloads(api_client, namespace, run, image_options)`: everything a module creates.
  `create(body_or_manifest)` labels a Pod/Deployment/DaemonSet/Service/ConfigMap/NetworkPolicy (dict, or a path
  relative to manifests/) with the run labels and creates it in the namespace;
  `wait_pods(names, ready=False)`, `wait_deployment(name)`, `wait_daemonset(name)` poll with
  `wait.wait_for` and stop on a start error (image pull, config, crash loop, a sandbox the node's runtime
  cannot create: FailedCreatePodSandBox events) once `StartWatch` has seen it
  last START_GRACE seconds, naming the pod, its node, the image, the reason, the fix and the option that
  sets the image (`--probe-image`); `probe_pods(nodes)` starts one probe pod per node (pinned with
  nodeAffinity on kubernetes.io/hostname) and returns {node: pod}; `snapshot()` is the text of
  pod states and events kept as evidence when a check fails.
- `exec_in_pod(core_v1, ns, pod, argv, timeout)` -> `ExecResult(rc, stdout, stderr, error)`;
  `error` set means the exec transport failed (inconclusive), never raised.
- `http_get_from_pod(...)`, `tcp_from_pod(...)`, `http_get_local(...)` -> `HttpResult`;
  `conclusive(lambda: ...)` repeats a probe only while it is inconclusive.
- `probe_pod(...)` (a manifest), `pod_problem(pod)`, `wait_running(...)`: lower-level pieces.

A probe has four outcomes, as cilium's connectivity test tells them apart:
`ok` (answered 2xx / port open), `http_error` (answered with an error status), `unreachable`
(refused, timed out, no route: a definite network result) and `inconclusive` (the exec transport
failed, the probe printed nothing, the probe tool crashed). Only `inconclusive` is retried; a wrong
answer never is.
"""
from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runid, timeouts
from .wait import Never, wait_for

PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
START_ERRORS = PULL_ERRORS | {"CreateContainerError", "CreateContainerConfigError", "RunContainerError",
                              "CrashLoopBackOff"}
START_GRACE = 15.0   # seconds a start error is watched before a wait gives up (StartWatch)
SANDBOX_ERRORS = frozenset({"FailedCreatePodSandBox"})   # pod events: the runtime cannot make the pod's sandbox
EVENTS_EVERY = 5.0   # seconds between two event listings for one pod (StartWatch)
# Seconds a pod may wait for any scheduler to look at it, or a Deployment for its controller to see it (StartWatch):
# both act within a second or two on a working control plane, also under load.
UNSEEN_GRACE = 30.0


# kubernetes.stream.stream() swaps api_client.request for a websocket call while it connects and puts
# the old one back afterwards; two threads doing that on one ApiClient can leave the websocket call in
# place for good (every later API call then fails with "Handshake status 200 OK"). Connect one at a time.
STREAM_LOCK = threading.Lock()


@dataclass
class ExecResult:
    """One command run in a pod; `error` is set when the exec transport itself failed."""

    rc: int | None
    stdout: str
    stderr: str
    command: str
    pod: str
    error: str = ""

    def evidence(self) -> str:
        text = f"$ kubectl exec {self.pod} -- {self.command}\n{self.stdout}"
        if self.stderr.strip():
            text += f"\n[stderr]\n{self.stderr}"
        if self.error:
            text += f"\n[exec error] {self.error}"
        return text + f"\n[exit {self.rc}]"


def exec_in_pod(core_v1: Any, namespace: str, pod: str, argv: list[str], timeout: float | None = None,
                container: str | None = None) -> ExecResult:
    """Run argv in a pod over the exec stream; transport failures are returned in `error`, never raised."""
    from kubernetes.stream import stream

    timeout = timeout or timeouts.get("exec")
    command = shlex.join(argv)
    kw = {"container": container} if container else {}
    try:
        with STREAM_LOCK:
            ws = stream(core_v1.connect_get_namespaced_pod_exec, pod, namespace, command=argv, stdout=True,
                        stderr=True, stdin=False, tty=False, _preload_content=False,
                        _request_timeout=timeouts.get("api"), **kw)
    except Exception as exc:
        return ExecResult(None, "", "", command, f"{namespace}/{pod}", _one_line(exc))
    try:
        ws.run_forever(timeout=timeout)
        if ws.is_open():
            return ExecResult(None, ws.read_stdout() or "", ws.read_stderr() or "", command, f"{namespace}/{pod}",
                              f"no exit within {timeout:.0f}s")
        out, err = ws.read_stdout() or "", ws.read_stderr() or ""
        rc = ws.returncode
    except Exception as exc:
        return ExecResult(None, "", "", command, f"{namespace}/{pod}", _one_line(exc))
    finally:
        ws.close()
    return ExecResult(rc, out, err, command, f"{namespace}/{pod}")


def _one_line(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    text = f"{type(exc).__name__} {status} {getattr(exc, 'reason', '')}" if status else f"{type(exc).__name__}: {exc}"
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


# ------------------------------------------------------------------ probe pods

SERVE_PORT = 8080


def served_text(pod: str) -> str:
    """What a serving probe pod answers on SERVE_PORT: names the pod, so a wrong answer is told apart."""
    return f"clusterproof-probe {pod}"


def probe_pod(name: str, node: str, image: str, run: dict[str, str], host_network: bool = False,
              labels: dict[str, str] | None = None, pin: str = "nodeName", hostname: str | None = None,
              serve: bool = False) -> dict:
    """A pod that sleeps on one node, tolerating every taint.

    pin="nodeName" places it without the scheduler; pin="affinity" asks the scheduler with a required
    nodeAffinity on kubernetes.io/hostname (`hostname`, default the node name), so the pod goes
    through scheduling and admission like a workload. serve=True also answers HTTP GET on SERVE_PORT
    with `served_text(name)` (busybox httpd, else python3's http.server).
    """
    command = ["sleep", "3600"]
    if serve:
        text = shlex.quote(served_text(name))
        command = ["sh", "-c", (f"mkdir -p /tmp/www && echo {text} > /tmp/www/index.html && "
                                f"(httpd -f -p {SERVE_PORT} -h /tmp/www 2>/dev/null || "
                                f"python3 -m http.server {SERVE_PORT} -d /tmp/www) & exec sleep 3600")]
    spec: dict = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "tolerations": [{"operator": "Exists"}],
        "containers": [{
            "name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": command,
            "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}},
        }],
    }
    if serve:
        spec["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": SERVE_PORT}, "periodSeconds": 1,
                                                   "initialDelaySeconds": 0, "timeoutSeconds": 2}
    if pin == "affinity":
        spec["affinity"] = node_affinity(hostname or node)
    else:
        spec["nodeName"] = node
    if host_network:
        # ClusterFirstWithHostNet: a host-network pod still resolves Service names through cluster DNS.
        spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {runid.LABEL_OWNED: "true", runid.LABEL_RUN: run["run"],
                                               "clusterproof.io/probe": "true", **(labels or {})}},
        "spec": spec,
    }


def node_affinity(hostname: str) -> dict:
    """A required nodeAffinity on the node's kubernetes.io/hostname label."""
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def pod_problem(pod: Any, image_options: dict[str, str] | None = None) -> str | None:
    """A reason the pod cannot start as it stands (image pull, config, crash), or None.

    Names the container, its image, the waiting reason and the fix; an image pull error also names the node
    that cannot pull and, when `image_options` maps the image to the option that sets it (e.g.
    {"localhost/clusterproof/probe:1": "--probe-image"}), that option. `StartWatch` decides when to give up.
    """
    if pod.metadata.deletion_timestamp is not None:
        return None  # going away (a rolling update, a scale-down): its containers stop, that is no start problem
    owners = {o.kind for o in (pod.metadata.owner_references or [])}
    if pod.status.phase == "Failed" and owners & {"ReplicaSet", "DaemonSet"}:
        return None  # evicted or rejected: its controller makes another, which the wait judges
    specs = {c.name: c.image for c in (pod.spec.containers or []) + (pod.spec.init_containers or [])}
    node = pod.spec.node_name or "its node"
    for cs in (pod.status.container_statuses or []) + (pod.status.init_container_statuses or []):
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason in START_ERRORS:
            msg = (waiting.message or "").splitlines()[0][:160] if waiting.message else ""
            image = specs.get(cs.name) or cs.image
            text = f"container {cs.name} ({image}): {waiting.reason} {msg}".strip()
            option = (image_options or {}).get(image)
            how = f"; or pass {option} with an image the nodes have" if option else ""
            if waiting.reason == "ErrImageNeverPull":
                text += (f"; image {image} is not on node {node} and imagePullPolicy is Never: import it on the node "
                         f"(ctr -n k8s.io images import IMAGE.tar){how}")
            elif waiting.reason == "InvalidImageName":
                text += f"; {image!r} is not a valid image reference: fix the name{how}"
            elif waiting.reason in PULL_ERRORS:
                text += (f"; node {node} cannot pull image {image}: check the name and tag exist in the registry, "
                         "that the node reaches the registry (proxy, DNS, TLS) and any imagePullSecrets, or import "
                         f"the image on the node (ctr -n k8s.io images import IMAGE.tar){how}")
            elif waiting.reason == "CrashLoopBackOff":
                last = cs.last_state.terminated if cs.last_state else None
                if last is not None:
                    text += f" (last exit {last.exit_code}{', ' + last.reason if last.reason else ''})"
                text += (f"; read why it exits: kubectl -n {pod.metadata.namespace} logs {pod.metadata.name} "
                         f"-c {cs.name} --previous")
            elif waiting.reason == "CreateContainerConfigError":
                text += (f"; create the ConfigMap/Secret (or key) the container references: kubectl -n "
                         f"{pod.metadata.namespace} describe pod {pod.metadata.name}")
            return text
    if pod.status.phase == "Failed":
        return f"phase Failed: {pod.status.reason or ''} {pod.status.message or ''}".strip()
    return None


def start_grace() -> float:
    """How long a start error is watched before the wait gives up (--timeout-scale applies)."""
    return timeouts.scaled(START_GRACE)


class StartWatch:
    """Fail fast on pods that cannot start, after a short bounded observation.

    A container waiting in a start error (ErrImagePull, ImagePullBackOff, CreateContainerConfigError,
    CrashLoopBackOff, ...) is given up on once the same container has been seen in such a state for
    `grace` seconds (the kubelet's first pull retry comes after 10 s: a registry hiccup heals in that time,
    a missing image does not), an invalid image name or a missing image under imagePullPolicy Never at once,
    and a Failed pod at once. `check` returns the problem then (pod_problem's text and for how long it was
    seen), else None; one StartWatch per wait.

    With `core_v1` it also gives up on a pod whose sandbox the node's runtime cannot create (cgroup driver
    mismatch, broken CNI): the pod only says ContainerCreating, the cause is in its events. Once a pod has sat
    on its node without a sandbox for `grace` seconds its events are listed (field selector on its name, at most
    once per EVENTS_EVERY seconds per pod; a listing error only means no early answer), and a
    FailedCreatePodSandBox that has itself lasted `grace` seconds is the problem (`sandbox_problem`).
    """

    AT_ONCE = frozenset({"InvalidImageName", "ErrImageNeverPull"})

    def __init__(self, grace: float, image_options: dict[str, str] | None = None, core_v1: Any = None):
        self.grace, self.image_options, self.core_v1 = grace, dict(image_options or {}), core_v1
        self.first_seen: dict[tuple[str, str], float] = {}
        self.creating_since: dict[str, float] = {}          # pod -> first seen on its node without a sandbox
        self.sandbox_seen: dict[str, float] = {}            # pod -> first seen with a sandbox error event
        self.events: dict[str, tuple[float, list[Any]]] = {}   # pod -> (listed at, its events)
        self.unseen_since: dict[str, float] = {}   # pod, or KIND/NAME, -> first seen with no scheduler/controller

    def check(self, pod: Any, now: float) -> str | None:
        problem = pod_problem(pod, self.image_options)
        if problem is None:
            self.first_seen = {k: t for k, t in self.first_seen.items() if k[0] != pod.metadata.name}
            return self._unscheduled(pod, now) or self._sandbox(pod, now)
        if pod.status.phase == "Failed" and not problem.startswith("container "):
            return problem
        stuck = [(cs.name, cs.state.waiting.reason)
                 for cs in (pod.status.container_statuses or []) + (pod.status.init_container_statuses or [])
                 if cs.state and cs.state.waiting and cs.state.waiting.reason in START_ERRORS]
        if not stuck or any(reason in self.AT_ONCE for _, reason in stuck):
            return problem
        since = min(self.first_seen.setdefault((pod.metadata.name, name), now) for name, _ in stuck)
        if now - since >= self.grace:
            return f"{problem} (still so after {now - since:.0f}s)"
        return None

    def _unscheduled(self, pod: Any, now: float) -> str | None:
        """A pod no scheduler has looked at (no node, not even a PodScheduled condition) for UNSEEN_GRACE seconds:
        its scheduler is not running. One the scheduler refused has the condition (see `unschedulable`)."""
        name = pod.metadata.name
        st = pod.status
        untouched = (st is not None and st.phase == "Pending" and not pod.spec.node_name
                     and pod.metadata.deletion_timestamp is None
                     and not any(c.type == "PodScheduled" for c in st.conditions or []))
        if not untouched:
            self.unseen_since.pop(name, None)
            return None
        waited = now - self.unseen_since.setdefault(name, now)
        if waited < timeouts.scaled(UNSEEN_GRACE):
            return None
        scheduler = pod.spec.scheduler_name or "default-scheduler"
        return (f"no scheduler has taken it up in {waited:.0f}s (no node, no PodScheduled condition; schedulerName "
                f"{scheduler}): is {'kube-scheduler' if scheduler == 'default-scheduler' else scheduler} running? "
                "(CP-001 checks kube-scheduler's leader Lease)")

    def unobserved(self, kind: str, obj: Any, now: float) -> str | None:
        """A Deployment or DaemonSet whose controller has not seen its latest spec for UNSEEN_GRACE seconds (status
        observedGeneration behind metadata.generation): kube-controller-manager is not running its controllers."""
        key = f"{kind}/{obj.metadata.name}"
        seen = (obj.status.observed_generation if obj.status else None) or 0
        if seen >= (obj.metadata.generation or 0):
            self.unseen_since.pop(key, None)
            return None
        waited = now - self.unseen_since.setdefault(key, now)
        if waited < timeouts.scaled(UNSEEN_GRACE):
            return None
        return (f"{kind} {obj.metadata.namespace}/{obj.metadata.name}: its controller has not seen it in {waited:.0f}s "
                f"(status.observedGeneration {seen}, generation {obj.metadata.generation}): is "
                "kube-controller-manager running? (CP-002 checks its leader Lease)")

    def _sandbox(self, pod: Any, now: float) -> str | None:
        name = pod.metadata.name
        if self.core_v1 is None or not awaiting_sandbox(pod):
            for seen in (self.creating_since, self.sandbox_seen, self.events):
                seen.pop(name, None)
            return None
        waited = now - self.creating_since.setdefault(name, now)
        if waited < self.grace:
            return None
        listed = self.events.get(name)
        if listed is None or now - listed[0] >= EVENTS_EVERY:
            listed = self.events[name] = (now, self._list_events(pod))
        found = sandbox_problem(pod, listed[1], self.grace, now - self.sandbox_seen.get(name, now))
        if found is None:
            self.sandbox_seen.pop(name, None)
            return None
        self.sandbox_seen.setdefault(name, now)
        text, lasted = found
        return f"{text} (no sandbox after {waited:.0f}s)" if lasted else None

    def _list_events(self, pod: Any) -> list[Any]:
        try:
            return list(self.core_v1.list_namespaced_event(
                pod.metadata.namespace, field_selector=f"involvedObject.name={pod.metadata.name}",
                _request_timeout=timeouts.get("api")).items or [])
        except Exception:   # no events, no early answer: the wait goes on to its timeout
            return []


def awaiting_sandbox(pod: Any) -> bool:
    """The pod is on its node, Pending, and nothing shows that its sandbox was made (ContainerCreating)."""
    st = pod.status
    if st is None or st.phase != "Pending" or not pod.spec.node_name or pod.metadata.deletion_timestamp is not None:
        return False
    if any(c.type == "PodReadyToStartContainers" and c.status == "True" for c in st.conditions or []):
        return False
    if st.pod_ip and not pod.spec.host_network:   # a pod IP comes with the sandbox's network
        return False
    for cs in (st.container_statuses or []) + (st.init_container_statuses or []):
        state = cs.state
        if state is not None and (state.running or state.terminated):
            return False
        if state is not None and state.waiting and state.waiting.reason not in ("ContainerCreating",
                                                                                 "PodInitializing"):
            return False
    return True


def _event_span(e: Any) -> tuple[int, Any, Any]:
    series = getattr(e, "series", None)
    count = e.count or (series.count if series is not None else None) or 1
    first = e.first_timestamp or e.event_time or (e.metadata.creation_timestamp if e.metadata else None)
    last = e.last_timestamp or (series.last_observed_time if series is not None else None) or e.event_time or first
    return count, first, last


def sandbox_problem(pod: Any, events: list[Any], grace: float, seen_for: float = 0.0) -> tuple[str, bool] | None:
    """The pod's latest sandbox error event as text, and whether it has lasted `grace` seconds; None without one.

    Lasted: the event's own first..last span (the kubelet's retries, one clock) or `seen_for` (how long the
    caller has seen it) reaches `grace`. The text names the node, the reason, the message's first line, how
    many times it happened and what to check on the node.
    """
    uid = pod.metadata.uid
    mine = [e for e in events
            if e.reason in SANDBOX_ERRORS and (e.type or "Warning") == "Warning"
            and (e.involved_object is None or e.involved_object.kind in (None, "Pod"))
            and (not uid or e.involved_object is None or not e.involved_object.uid or e.involved_object.uid == uid)]
    if not mine:
        return None
    spans = [(_event_span(e), e) for e in mine]
    (count, first, last), e = max(spans, key=lambda s: s[0][2].timestamp() if s[0][2] is not None else 0.0)
    span = (last - first).total_seconds() if first is not None and last is not None else 0.0
    node = pod.spec.node_name
    lines = (e.message or "").strip().splitlines()
    message = lines[0].strip()[:300] if lines else "(no message)"
    times = f"{count} time{'s' if count != 1 else ''}" + (f" over {span:.0f}s" if span >= 1 else "")
    text = (f"{e.reason} on node {node} ({times}): {message}; the container runtime on node {node} cannot create "
            f"the pod's sandbox: check the runtime there (journalctl -u containerd, or -u crio; crictl info), that "
            f"the kubelet's and the runtime's cgroup driver agree (HOST-014) and the CNI config in /etc/cni/net.d "
            f"(CNI-002)")
    return text, max(span, seen_for) >= grace


def unschedulable(pod: Any, now: float, grace: float) -> str | None:
    """The scheduler's reason when it has refused the pod for longer than `grace` seconds, else None.

    A taint nobody tolerates or a node selector nothing matches does not go away while the check waits:
    waiting out the whole rollout timeout only delays the same answer.
    """
    for c in pod.status.conditions or []:
        if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
            since = c.last_transition_time.timestamp() if c.last_transition_time else now
            if now - since >= grace:
                return f"unschedulable for {now - since:.0f}s: {(c.message or '').strip()[:240]}"
    return None


def create_probe_pods(core_v1: Any, namespace: str, nodes: list[str], image: str, run: dict[str, str],
                      host_network: bool = False, prefix: str = "probe") -> dict[str, str]:
    """One probe pod per node (node -> pod name), Running, or Never with the image's name on pull errors."""
    t = timeouts.get("api")
    names = {}
    for i, node in enumerate(nodes):
        name = f"{prefix}-{'host' if host_network else 'pod'}-{i}"
        core_v1.create_namespaced_pod(namespace, probe_pod(name, node, image, run, host_network), _request_timeout=t)
        names[node] = name
    wait_running(core_v1, namespace, list(names.values()))
    return names


def wait_running(core_v1: Any, namespace: str, pods: list[str], timeout: float | None = None,
                 image_options: dict[str, str] | None = None, ready: bool = False) -> dict[str, Any]:
    """Wait until every named pod is Running (and Ready with ready=True); abort on a start error (StartWatch).

    Returns {name: V1Pod} as last read.
    """
    __tracebackhide__ = True
    t = timeouts.get("api")
    seen: dict[str, Any] = {}
    watch = StartWatch(start_grace(), image_options, core_v1)

    def running():
        states = {}
        for name in pods:
            pod = core_v1.read_namespaced_pod(name, namespace, _request_timeout=t)
            seen[name] = pod
            problem = watch.check(pod, time.monotonic())
            if problem:
                raise Never(f"pod {namespace}/{name} on {pod.spec.node_name or 'no node yet'}: {problem}")
            states[name] = pod_state(pod)
        done = all(seen[n].status.phase == "Running" and (not ready or is_ready(seen[n])) for n in pods)
        return done, states

    wait_for(running, f"pods {', '.join(pods)} in {namespace} to {'be ready' if ready else 'run'}",
             timeout or timeouts.get("pod_start"), interval=0.5,
             describe=lambda s: ", ".join(f"{k}: {v}" for k, v in s.items()) if isinstance(s, dict) else str(s))
    return dict(seen)


def is_ready(pod: Any) -> bool:
    """The pod's Ready condition is True."""
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pod_state(pod: Any) -> str:
    """One line: phase, waiting reasons, an unschedulable message, readiness."""
    parts = [pod.status.phase or "Unknown"]
    for c in pod.status.conditions or []:
        if c.type == "PodScheduled" and c.status != "True" and c.message:
            parts.append(f"unschedulable: {c.message[:120]}")
    # an init container that cannot start (a CNI agent's installer: Init:ErrImageNeverPull) holds the pod in Pending
    for cs in pod.status.init_container_statuses or []:
        if cs.state and cs.state.waiting:
            parts.append(f"init container {cs.name} {cs.state.waiting.reason}")
    for cs in pod.status.container_statuses or []:
        if cs.state and cs.state.waiting:
            parts.append(f"{cs.name} {cs.state.waiting.reason}")
    parts.append("ready" if is_ready(pod) else "not ready")
    return ", ".join(parts)


# ------------------------------------------------------------------ HTTP probe

_MARK = "__CLUSTERPROOF_RC="


@dataclass
class HttpResult:
    """What one HTTP probe saw: outcome ok | http_error | unreachable | inconclusive."""

    outcome: str
    body: str
    detail: str
    source: str
    url: str
    evidence: str

    @property
    def conclusive(self) -> bool:
        return self.outcome != "inconclusive"


_PY_GET = (
    "import sys, urllib.error, urllib.request\n"
    "try:\n"
    "    o = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "    r = o.open(sys.argv[1], timeout=float(sys.argv[2]))\n"
    "    sys.stdout.write(r.read().decode('utf-8', 'replace'))\n"
    "except urllib.error.HTTPError as e:\n"
    "    print('server returned error: HTTP %s' % e.code); sys.exit(22)\n"
    "except Exception as e:\n"
    "    print('%s: %s' % (type(e).__name__, getattr(e, 'reason', e))); sys.exit(7)\n"
)


def http_script(url: str, connect_timeout: float, max_time: float) -> str:
    """sh text that GETs url and prints the body, then a marker with the exit code.

    curl when the image has it, else python3, else busybox: `nc -z -w` bounds the connect and
    `timeout` the total (busybox 1.35's `wget -T` segfaults against Flask, see docs/contracts.md).
    A proxy in the pod's environment is ignored: the probe is of the path between pods, not of a proxy.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    u, host, port = shlex.quote(url), shlex.quote(parts.hostname or ""), parts.port or 80
    ct, mt = max(1, round(connect_timeout)), max(1, round(max_time))
    py = shlex.quote(_PY_GET)
    return (
        f"if command -v curl >/dev/null 2>&1; then"
        f" out=$(curl -sS --fail --noproxy '*' --connect-timeout {ct} --max-time {mt} {u} 2>&1);"
        f" rc=$?; elif command -v python3 >/dev/null 2>&1; then"
        f" T=; command -v timeout >/dev/null 2>&1 && T='timeout {mt}';"
        f" out=$($T python3 -c {py} {u} {ct} 2>&1); rc=$?;"
        f" elif nc -z -w {ct} {host} {port} >/dev/null 2>&1; then"
        f" out=$(timeout {mt} wget -Y off -q -O - {u} 2>&1); rc=$?;"
        f" else out='connect failed or timed out'; rc=7; fi;"
        f" printf '%s\\n{_MARK}%s\\n' \"$out\" \"$rc\""
    )


def http_get_from_pod(core_v1: Any, namespace: str, pod: str, url: str, connect_timeout: float | None = None,
                      max_time: float | None = None) -> HttpResult:
    """One HTTP GET run inside a pod, classified."""
    ct = connect_timeout or timeouts.get("probe_connect")
    mt = max_time or timeouts.get("probe")
    res = exec_in_pod(core_v1, namespace, pod, ["sh", "-c", http_script(url, ct, mt)], timeout=mt + 15)
    source = f"pod {namespace}/{pod}"
    if res.error:
        return HttpResult("inconclusive", "", f"exec failed: {res.error}", source, url, res.evidence())
    if _MARK not in res.stdout:
        return HttpResult("inconclusive", "", "the probe printed nothing", source, url, res.evidence())
    body, _, rc_text = res.stdout.rpartition(_MARK)
    body = body.removesuffix("\n")
    rc = rc_text.strip()
    if rc == "0":
        return HttpResult("ok", body, "answered", source, url, res.evidence())
    detail = (body.strip().splitlines() or [f"exit {rc}"])[-1][:200]
    # curl --fail exits 22 and busybox wget says "server returned error" on a 4xx/5xx answer.
    if rc in ("139", "134"):  # the probe tool crashed: says nothing about the network
        return HttpResult("inconclusive", body, f"probe crashed (exit {rc})", source, url, res.evidence())
    outcome = "http_error" if rc == "22" or "server returned error" in body else "unreachable"
    if not body.strip() and rc not in ("22",):
        detail = f"exit {rc} ({'timed out' if rc in ('28', '124', '143') else 'no answer'})"
    return HttpResult(outcome, body, detail, source, url, res.evidence())


def http_get_local(url: str, connect_timeout: float | None = None, max_time: float | None = None) -> HttpResult:
    """One HTTP GET from the machine running the suite, classified like the in-pod probe.

    HTTP(S)_PROXY is ignored (trust_env off): a NodePort answering through a proxy proves the proxy, not the node.
    """
    import requests

    ct = connect_timeout or timeouts.get("probe_connect")
    mt = max_time or timeouts.get("probe")
    source = "this machine"
    try:
        with requests.Session() as session:
            session.trust_env = False
            r = session.get(url, timeout=(ct, mt))
    except requests.exceptions.ConnectTimeout:
        return HttpResult("unreachable", "", f"connect timed out after {ct:.0f}s", source, url, f"GET {url}: timeout")
    except requests.exceptions.RequestException as exc:
        low = str(exc).lower()
        text = next((k for k in ("connection refused", "timed out", "no route to host", "network is unreachable")
                     if k in low), _one_line(exc))
        return HttpResult("unreachable", "", text, source, url, f"GET {url}: {text}")
    evidence = f"GET {url} -> HTTP {r.status_code}\n{r.text[:2000]}"
    if r.status_code >= 400:
        return HttpResult("http_error", r.text, f"HTTP {r.status_code}", source, url, evidence)
    return HttpResult("ok", r.text, "answered", source, url, evidence)


def conclusive(probe: Callable[[], Any], timeout: float | None = None, interval: float = 1.0) -> Any:
    """Repeat `probe` while its result is inconclusive (up to timeout); return the first conclusive result."""
    deadline = time.monotonic() + (timeout or timeouts.get("exec"))
    while True:
        res = probe()
        if res.conclusive or time.monotonic() >= deadline:
            return res
        time.sleep(interval)


def tcp_script(host: str, port: int, connect_timeout: float) -> str:
    """sh text that tries a TCP connect with busybox/BSD `nc -z -w`, bounded by `timeout`, then prints the marker."""
    h, ct = shlex.quote(host), max(1, round(connect_timeout))
    return (f"T=; command -v timeout >/dev/null 2>&1 && T='timeout {ct + 3}';"
            f" out=$($T nc -z -w {ct} {h} {int(port)} 2>&1); rc=$?; printf '%s\\n{_MARK}%s\\n' \"$out\" \"$rc\"")


def tcp_from_pod(core_v1: Any, namespace: str, pod: str, host: str, port: int,
                 connect_timeout: float | None = None) -> HttpResult:
    """One TCP connect from inside a pod: ok (port open), unreachable, or inconclusive."""
    ct = connect_timeout or timeouts.get("probe_connect")
    res = exec_in_pod(core_v1, namespace, pod, ["sh", "-c", tcp_script(host, port, ct)], timeout=ct + 15)
    source, target = f"pod {namespace}/{pod}", f"tcp://{host}:{port}"
    if res.error:
        return HttpResult("inconclusive", "", f"exec failed: {res.error}", source, target, res.evidence())
    if _MARK not in res.stdout:
        return HttpResult("inconclusive", "", "the probe printed nothing", source, target, res.evidence())
    body, _, rc = res.stdout.rpartition(_MARK)
    rc = rc.strip()
    if rc == "0":
        return HttpResult("ok", body, "port open", source, target, res.evidence())
    if rc in ("139", "134", "127"):  # the probe tool crashed or is missing: says nothing about the network
        return HttpResult("inconclusive", body, f"probe tool failed (exit {rc})", source, target, res.evidence())
    lines = body.strip().splitlines() or [f"exit {rc}: refused or no route"]
    detail = "timed out" if rc in ("124", "143") else lines[-1]
    return HttpResult("unreachable", body, detail[:200], source, target, res.evidence())


# ------------------------------------------------------------------ workloads of one test module

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
_POD_TEMPLATE_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}


def load_manifest(path: str | Any) -> list[dict]:
    """The YAML documents of a file (absolute, or relative to manifests/), empty documents dropped."""
    import yaml

    p = Path(path)
    if not p.is_absolute():
        p = MANIFESTS / p
    return [d for d in yaml.safe_load_all(p.read_text()) if d]


def labelled(body: dict, run: dict[str, str]) -> dict:
    """A deep copy of body with the run labels on its metadata and on its pod template."""
    import copy

    body = copy.deepcopy(body)
    run_labels = {runid.LABEL_OWNED: "true", runid.LABEL_RUN: run["run"]}
    body.setdefault("metadata", {}).setdefault("labels", {}).update(run_labels)
    if body.get("kind") in _POD_TEMPLATE_KINDS:
        tmpl = body.setdefault("spec", {}).setdefault("template", {})
        tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(run_labels)
    return body


class Workloads:
    """What one test module creates in its namespace, and how to wait for and explain it."""

    def __init__(self, api_client: Any, namespace: str, run: dict[str, str],
                 image_options: dict[str, str] | None = None):
        from kubernetes import client

        self.api_client, self.namespace, self.run = api_client, namespace, run
        self.core_v1, self.apps_v1 = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        self.networking_v1 = client.NetworkingV1Api(api_client)
        self.image_options = dict(image_options or {})   # image -> the option that sets it
        self.created: list[tuple[str, str]] = []         # (kind, name)

    def create(self, body: dict | str) -> list[dict]:
        """Create a manifest dict (or every document of a manifests/ file) in the namespace, labelled."""
        docs = [body] if isinstance(body, dict) else load_manifest(body)
        t = timeouts.get("api")
        made = []
        for doc in docs:
            doc = labelled(doc, self.run)
            doc["metadata"]["namespace"] = self.namespace
            kind, ns = doc["kind"], self.namespace
            creators: dict[str, Callable[..., Any]] = {
                "Pod": self.core_v1.create_namespaced_pod,
                "Service": self.core_v1.create_namespaced_service,
                "ConfigMap": self.core_v1.create_namespaced_config_map,
                "Deployment": self.apps_v1.create_namespaced_deployment,
                "DaemonSet": self.apps_v1.create_namespaced_daemon_set,
                "NetworkPolicy": self.networking_v1.create_namespaced_network_policy,
            }
            create = creators.get(kind)
            if create is None:
                raise ValueError(f"Workloads.create: kind {kind} is not supported")
            create(ns, doc, _request_timeout=t)
            self.created.append((kind, doc["metadata"]["name"]))
            made.append(doc)
        return made

    def wait_pods(self, names: list[str], ready: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the named pods to run (or be ready); fail fast on image pull errors. {name: V1Pod}."""
        __tracebackhide__ = True
        return wait_running(self.core_v1, self.namespace, names, timeout, self.image_options, ready)

    def _selected_pods(self, selector: dict[str, str]) -> list[Any]:
        sel = ",".join(f"{k}={v}" for k, v in selector.items())
        return self.core_v1.list_namespaced_pod(self.namespace, label_selector=sel,
                                                _request_timeout=timeouts.get("api")).items

    def _check_pods(self, pods: list[Any], watch: StartWatch) -> None:
        for pod in pods:
            problem = watch.check(pod, time.monotonic())
            if problem:
                raise Never(f"pod {self.namespace}/{pod.metadata.name}: {problem}")

    def wait_deployment(self, name: str, timeout: float | None = None) -> Any:
        """Wait until the Deployment has all replicas updated and available; fail fast on pod start errors."""
        __tracebackhide__ = True
        t = timeouts.get("api")
        watch = StartWatch(start_grace(), self.image_options, self.core_v1)

        def rolled():
            d = self.apps_v1.read_namespaced_deployment(name, self.namespace, _request_timeout=t)
            unseen = watch.unobserved("deployment", d, time.monotonic())
            if unseen:
                raise Never(unseen)
            self._check_pods(self._selected_pods(d.spec.selector.match_labels or {}), watch)
            want, st = d.spec.replicas or 0, d.status
            done = (st.observed_generation or 0) >= d.metadata.generation and (st.updated_replicas or 0) == want \
                and (st.available_replicas or 0) == want
            return done, f"{st.available_replicas or 0}/{want} available, {st.updated_replicas or 0} updated"

        return wait_for(rolled, f"deployment {self.namespace}/{name} to roll out", timeout or timeouts.get("rollout"))

    def wait_daemonset(self, name: str, timeout: float | None = None) -> Any:
        """Wait until the DaemonSet has a ready pod on every node it targets; fail fast on pod start errors."""
        __tracebackhide__ = True
        t = timeouts.get("api")
        watch = StartWatch(start_grace(), self.image_options, self.core_v1)

        def ready():
            d = self.apps_v1.read_namespaced_daemon_set(name, self.namespace, _request_timeout=t)
            unseen = watch.unobserved("daemonset", d, time.monotonic())
            if unseen:
                raise Never(unseen)
            self._check_pods(self._selected_pods(d.spec.selector.match_labels or {}), watch)
            st = d.status
            want = st.desired_number_scheduled or 0
            done = want > 0 and (st.number_ready or 0) == want and (st.updated_number_scheduled or 0) == want
            return done, f"{st.number_ready or 0}/{want} ready"

        return wait_for(ready, f"daemonset {self.namespace}/{name} to be ready", timeout or timeouts.get("daemonset"))

    def probe_pods(self, nodes: dict[str, str], image: str, prefix: str = "probe", serve: bool = False,
                   host_network: bool = False) -> dict[str, str]:
        """One probe pod per node ({node name: kubernetes.io/hostname}), pinned by nodeAffinity; {node: pod}."""
        names = {}
        for i, (node, hostname) in enumerate(sorted(nodes.items())):
            name = f"{prefix}-{i}"
            self.create(probe_pod(name, node, image, self.run, host_network=host_network, pin="affinity",
                                  hostname=hostname, serve=serve, labels={"clusterproof.io/node-index": str(i)}))
            names[node] = name
        return names

    def snapshot(self) -> str:
        """Pod states (node, IP, per-container state) and the namespace's events, as text for evidence."""
        return namespace_snapshot(self.core_v1, self.namespace)


def namespace_snapshot(core_v1: Any, namespace: str, max_events: int = 40) -> str:
    """Pod states and recent events of a namespace, as text; API errors become a line, never raised."""
    t = timeouts.get("api")
    lines = [f"# pods in {namespace}"]
    try:
        for pod in core_v1.list_namespaced_pod(namespace, _request_timeout=t).items:
            lines.append(f"{pod.metadata.name} node={pod.spec.node_name or '-'} ip={pod.status.pod_ip or '-'} "
                         f"{pod_state(pod)}")
            for cs in pod.status.container_statuses or []:
                st = cs.state
                what = ("running" if st and st.running else
                        f"waiting {st.waiting.reason}: {(st.waiting.message or '')[:160]}" if st and st.waiting else
                        f"terminated {st.terminated.reason} exit {st.terminated.exit_code}" if st and st.terminated
                        else "unknown")
                lines.append(f"  {cs.name} ({cs.image}) restarts={cs.restart_count}: {what}")
    except Exception as exc:
        lines.append(f"(listing pods failed: {_one_line(exc)})")
    lines.append(f"# events in {namespace}")
    try:
        events = core_v1.list_namespaced_event(namespace, _request_timeout=t).items

        def when(e):
            return str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or "")

        for e in sorted(events, key=when)[-max_events:]:
            obj = e.involved_object
            lines.append(f"{when(e)} {e.type} {e.reason} {obj.kind}/{obj.name}: {(e.message or '').strip()[:200]}")
    except Exception as exc:
        lines.append(f"(listing events failed: {_one_line(exc)})")
    return "\n".join(lines)
