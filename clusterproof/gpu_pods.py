"""GPU probe pods: create them from manifests/gpu, wait until they run, exec the probe, clean up.

Errors are kept on the ProbePod (not raised) so each check reports the part it owns.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import gpu, pods, runid, timeouts
from .checks import evidence
from .wait import Never, WaitTimeout, wait_for

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests" / "gpu"
CONFIGMAP = "clusterproof-gpu-probe"
PROBE = "/clusterproof/probe.py"


@dataclass
class ProbePod:
    """One GPU probe pod and what it showed: the pod, its scheduling, the probe's JSON."""

    name: str
    namespace: str
    plan: gpu.Plan
    pod: Any = None
    error: str | None = None          # why the pod did not run
    exec_error: str | None = None     # why the probe gave no JSON
    output: gpu.ProbeOutput | None = None
    raw: str = ""
    notes: list[str] = field(default_factory=list)
    shell_output: gpu.ProbeOutput | None = None   # the probe again from a kubectl exec shell without LD_PRELOAD
    shell_error: str | None = None

    def runs(self) -> dict[str, gpu.ProbeOutput | None]:
        """Every probe run in the pod by how it was launched: the container's own env, then the exec shell."""
        out: dict[str, gpu.ProbeOutput | None] = {"probe": self.output}
        if self.shell_output is not None or self.shell_error is not None:
            out[gpu.EXEC_SHELL] = self.shell_output
        return out

    def run_errors(self) -> dict[str, str]:
        return {k: v for k, v in (("probe", self.exec_error), (gpu.EXEC_SHELL, self.shell_error)) if v}

    @property
    def annotations(self) -> dict[str, str]:
        return dict((self.pod.metadata.annotations or {}) if self.pod is not None else {})


def pod_body(name: str, image: str, plan: gpu.Plan, run: dict[str, str], annotations: dict[str, str] | None = None,
             resources: dict[str, int] | None = None) -> dict:
    body = yaml.safe_load((MANIFESTS / "probe-pod.yaml").read_text())
    body = copy.deepcopy(body)
    body["metadata"]["name"] = name
    body["metadata"]["labels"].update({runid.LABEL_OWNED: "true", runid.LABEL_RUN: run["run"]})
    if annotations:
        body["metadata"]["annotations"] = annotations
    spec = body["spec"]
    spec["nodeSelector"]["kubernetes.io/hostname"] = plan.node
    ctr = spec["containers"][0]
    ctr["image"] = image
    ctr["resources"] = {"limits": {k: str(v) for k, v in (resources or plan.resources).items()},
                        "requests": {"cpu": "10m", "memory": "32Mi"}}
    return body


def ensure_configmap(core_v1, namespace: str, run: dict[str, str]) -> None:
    from kubernetes.client.exceptions import ApiException

    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "labels": {runid.LABEL_OWNED: "true", runid.LABEL_RUN: run["run"]}},
            "data": {"probe.py": (MANIFESTS / "probe.py").read_text()}}
    try:
        core_v1.create_namespaced_config_map(namespace, body, _request_timeout=timeouts.get("api"))
    except ApiException as exc:
        if exc.status != 409:
            raise


def _pending_reason(core_v1, pod) -> str:
    """The scheduler's or kubelet's latest word on a pod that is not running."""
    for c in pod.status.conditions or []:
        if c.type == "PodScheduled" and c.status != "True":
            return f"not scheduled: {c.reason or ''} {(c.message or '').strip()}".strip()
    try:
        events = core_v1.list_namespaced_event(pod.metadata.namespace,
                                               field_selector=f"involvedObject.name={pod.metadata.name}",
                                               _request_timeout=timeouts.get("api")).items
    except Exception:
        events = []
    warn = [e for e in events if e.type == "Warning"]
    if warn:
        e = warn[-1]
        return f"{e.reason}: {(e.message or '').strip()[:200]}"
    return f"phase {pod.status.phase}"


def start_probe_pods(core_v1, namespace: str, image: str, specs: list[tuple[str, gpu.Plan, dict, dict | None]],
                     run: dict[str, str]) -> list[ProbePod]:
    """Create the pods (name, plan, annotations, resources), wait until Running; errors are kept, not raised."""
    t = timeouts.get("api")
    ensure_configmap(core_v1, namespace, run)
    out = []
    for name, plan, ann, res in specs:
        core_v1.create_namespaced_pod(namespace, pod_body(name, image, plan, run, ann, res), _request_timeout=t)
        out.append(ProbePod(name, namespace, plan))
    for pp in out:
        last: dict[str, Any] = {}
        watch = pods.StartWatch(pods.start_grace(), core_v1=core_v1)

        def running(pp=pp, last=last, watch=watch):
            pod = core_v1.read_namespaced_pod(pp.name, namespace, _request_timeout=t)
            pp.pod = pod
            problem = (watch.check(pod, time.monotonic())
                       or pods.unschedulable(pod, time.time(), timeouts.get("pod_start") / 6))
            if problem:
                raise Never(f"pod {namespace}/{pp.name}: {problem}")
            if pod.status.phase == "Running":
                return True, "Running"
            last["reason"] = _pending_reason(core_v1, pod)
            return False, last["reason"]

        try:
            wait_for(running, f"GPU probe pod {namespace}/{pp.name} to run on {pp.plan.node}",
                     timeouts.get("pod_start"), interval=1.0)
        except WaitTimeout as exc:
            pp.error = str(exc)
    return out


def _exec_probe(core_v1, pp: ProbePod, argv: list[str], what: str, timeout: float
                ) -> tuple[gpu.ProbeOutput | None, str | None]:
    res = pods.exec_in_pod(core_v1, pp.namespace, pp.name, argv, timeout=timeout)
    raw = res.evidence()
    evidence(f"GPU probe ({what}) in {pp.namespace}/{pp.name} on {pp.plan.node}", raw)
    if what == "probe":
        pp.raw = raw
    if res.error:
        return None, f"exec failed: {res.error}"
    try:
        return gpu.parse_probe(res.stdout, res.stderr), None
    except ValueError as exc:
        hint = " (the image has no python3: pass --gpu-probe-image with python3)" if res.rc in (126, 127) else ""
        return None, f"{exc} [exit {res.rc}]{hint}"


def probe_argv(allocs: list[int], extra: list[str] | None = None, label: str = "probe") -> list[str]:
    argv = ["python3", PROBE, "--label", label]
    for mib in allocs:
        argv += ["--alloc-mib", str(mib)]
    return argv + list(extra or [])


def run_probe(core_v1, pp: ProbePod, allocs: list[int], extra: list[str] | None = None, shell: bool = False
              ) -> None:
    """Exec the probe in a running pod; fills pp.output or pp.exec_error.

    shell=True runs it again as a user's kubectl exec shell would without the container's LD_PRELOAD
    (gpu.exec_shell_argv) and fills pp.shell_output or pp.shell_error instead.
    """
    timeout = timeouts.get("exec") * 3 + (timeouts.scaled(gpu.PAIR_LEAD_S + gpu.PAIR_HOLD_S) if extra else 0)
    if shell:
        argv = gpu.exec_shell_argv(probe_argv(allocs, extra, "exec-shell"))
        pp.shell_output, pp.shell_error = _exec_probe(core_v1, pp, argv, gpu.EXEC_SHELL, timeout)
    else:
        pp.output, pp.exec_error = _exec_probe(core_v1, pp, probe_argv(allocs, extra), "probe", timeout)


def run_probes_together(core_v1, pps: list[ProbePod], args: dict[str, list[str]]) -> None:
    """Exec the probe in every pod at once (one thread each), so their holds overlap (GPU-006)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(pps), 1)) as pool:
        futures = [pool.submit(run_probe, core_v1, pp, [], args.get(pp.name, [])) for pp in pps]
        for f in futures:
            f.result()


def refresh(core_v1, pp: ProbePod) -> None:
    try:
        pp.pod = core_v1.read_namespaced_pod(pp.name, pp.namespace, _request_timeout=timeouts.get("api"))
    except Exception as exc:
        pp.notes.append(f"could not re-read the pod: {exc}")


def delete_pods(core_v1, namespace: str, names: list[str]) -> None:
    from kubernetes.client.exceptions import ApiException

    for name in names:
        try:
            core_v1.delete_namespaced_pod(name, namespace, grace_period_seconds=0,
                                          _request_timeout=timeouts.get("api"))
        except ApiException as exc:
            if exc.status != 404:
                raise
