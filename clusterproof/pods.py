"""Pods the checks run probes from: exec into a pod, a probe pod per node, an HTTP probe.

An HTTP probe has four outcomes, as cilium's connectivity test tells them apart:
`ok` (answered 2xx), `http_error` (answered with an error status), `unreachable` (refused,
timed out, no route: a definite network result) and `inconclusive` (the exec transport
failed, or the probe printed nothing). Only `inconclusive` is retried; a wrong answer never is.
"""
from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import runid, timeouts
from .wait import Never, wait_for

PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
START_ERRORS = PULL_ERRORS | {"CreateContainerError", "CreateContainerConfigError", "RunContainerError",
                              "CrashLoopBackOff"}


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
        ws = stream(core_v1.connect_get_namespaced_pod_exec, pod, namespace, command=argv, stdout=True,
                    stderr=True, stdin=False, tty=False, _preload_content=False,
                    _request_timeout=timeouts.get("api"), **kw)
    except Exception as exc:  # noqa: BLE001 - ApiException, websocket and socket errors alike
        return ExecResult(None, "", "", command, f"{namespace}/{pod}", _one_line(exc))
    try:
        ws.run_forever(timeout=timeout)
        if ws.is_open():
            return ExecResult(None, ws.read_stdout() or "", ws.read_stderr() or "", command, f"{namespace}/{pod}",
                              f"no exit within {timeout:.0f}s")
        out, err = ws.read_stdout() or "", ws.read_stderr() or ""
        rc = ws.returncode
    except Exception as exc:  # noqa: BLE001
        return ExecResult(None, "", "", command, f"{namespace}/{pod}", _one_line(exc))
    finally:
        ws.close()
    return ExecResult(rc, out, err, command, f"{namespace}/{pod}")


def _one_line(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    text = f"{type(exc).__name__} {status} {getattr(exc, 'reason', '')}" if status else f"{type(exc).__name__}: {exc}"
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


# ------------------------------------------------------------------ probe pods

def probe_pod(name: str, node: str, image: str, run: dict[str, str], host_network: bool = False,
              labels: dict[str, str] | None = None) -> dict:
    """A pod that sleeps on one node (placed by nodeName, so it does not depend on the scheduler or taints)."""
    spec: dict = {
        "nodeName": node,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "tolerations": [{"operator": "Exists"}],
        "containers": [{
            "name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}},
        }],
    }
    if host_network:
        # ClusterFirstWithHostNet: a host-network pod still resolves Service names through cluster DNS.
        spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {runid.LABEL_OWNED: "true", runid.LABEL_RUN: run["run"],
                                               "clusterproof.io/probe": "true", **(labels or {})}},
        "spec": spec,
    }


def pod_problem(pod: Any) -> str | None:
    """A reason the pod can never start (image pull, config, crash), or None."""
    for cs in (pod.status.container_statuses or []) + (pod.status.init_container_statuses or []):
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason in START_ERRORS:
            msg = (waiting.message or "").splitlines()[0][:160] if waiting.message else ""
            return f"container {cs.name} ({cs.image}): {waiting.reason} {msg}".strip()
    if pod.status.phase == "Failed":
        return f"phase Failed: {pod.status.reason or ''} {pod.status.message or ''}".strip()
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


def wait_running(core_v1: Any, namespace: str, pods: list[str], timeout: float | None = None) -> None:
    """Wait until every named pod is Running; abort at once on an image pull or start error."""
    __tracebackhide__ = True
    t = timeouts.get("api")

    def running():
        states = {}
        for name in pods:
            pod = core_v1.read_namespaced_pod(name, namespace, _request_timeout=t)
            problem = pod_problem(pod)
            if problem:
                raise Never(f"pod {namespace}/{name} on {pod.spec.node_name}: {problem}")
            states[name] = pod.status.phase
        return all(p == "Running" for p in states.values()), states

    wait_for(running, f"probe pods {', '.join(pods)} in {namespace} to run", timeout or timeouts.get("pod_start"),
             interval=0.5, describe=lambda s: ", ".join(f"{k}: {v}" for k, v in s.items()) if isinstance(s, dict)
             else str(s))


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
    "    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))\n"
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
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    u, host, port = shlex.quote(url), shlex.quote(parts.hostname or ""), parts.port or 80
    ct, mt = max(1, round(connect_timeout)), max(1, round(max_time))
    py = shlex.quote(_PY_GET)
    return (
        f"if command -v curl >/dev/null 2>&1; then out=$(curl -sS --fail --connect-timeout {ct} --max-time {mt} {u} 2>&1);"
        f" rc=$?; elif command -v python3 >/dev/null 2>&1; then T=; command -v timeout >/dev/null 2>&1 && T='timeout {mt}';"
        f" out=$($T python3 -c {py} {u} {ct} 2>&1); rc=$?;"
        f" elif nc -z -w {ct} {host} {port} >/dev/null 2>&1; then out=$(timeout {mt} wget -q -O - {u} 2>&1); rc=$?;"
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
    """One HTTP GET from the machine running the suite, classified like the in-pod probe."""
    import requests

    ct = connect_timeout or timeouts.get("probe_connect")
    mt = max_time or timeouts.get("probe")
    source = "this machine"
    try:
        r = requests.get(url, timeout=(ct, mt))
    except requests.exceptions.ConnectTimeout:
        return HttpResult("unreachable", "", f"connect timed out after {ct:.0f}s", source, url, f"GET {url}: timeout")
    except requests.exceptions.RequestException as exc:
        text = _one_line(exc)
        return HttpResult("unreachable", "", text, source, url, f"GET {url}: {text}")
    evidence = f"GET {url} -> HTTP {r.status_code}\n{r.text[:2000]}"
    if r.status_code >= 400:
        return HttpResult("http_error", r.text, f"HTTP {r.status_code}", source, url, evidence)
    return HttpResult("ok", r.text, "answered", source, url, evidence)


def conclusive(probe: Callable[[], HttpResult], timeout: float | None = None, interval: float = 1.0) -> HttpResult:
    """Repeat `probe` while its result is inconclusive (up to timeout); return the first conclusive result."""
    deadline = time.monotonic() + (timeout or timeouts.get("exec"))
    while True:
        res = probe()
        if res.conclusive or time.monotonic() >= deadline:
            return res
        time.sleep(interval)
