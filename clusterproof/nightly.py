"""Nightly runs of the suite inside the cluster, their kept reports, and getting them out again.

    python -m clusterproof.nightly run [--reports /reports] [--keep 30] [-- PYTEST ARGS]   (in the CronJob's pod)
    python -m clusterproof.nightly pull [--last N] [--out DIR] [--kubeconfig K] [--context C]
    python -m clusterproof.nightly metrics SUMMARY.json                                     (Prometheus text)

`run` writes REPORTS/<UTC stamp>/{report.html,junit.xml,summary.json,metrics.prom}, compares the run
with the newest earlier run that left a summary.json (--compare: newly failing, fixed, still failing),
points REPORTS/latest at it, and keeps the newest KEEP runs. `pull` copies runs off the volume through
a short-lived pod that mounts the claim read-only (the suite image: busybox tar and base64).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, timeouts
from .results import Outcome, RunResult

ROOT = Path(__file__).resolve().parent.parent
SUITE_IMAGE = f"localhost/clusterproof/suite:{__version__}"
NAMESPACE = "clusterproof"
CRONJOB = "clusterproof-nightly"
CLAIM = "clusterproof-reports"
REPORTS = Path("/reports")
LATEST = "latest"
METRICS = "metrics.prom"
DEFAULT_KEEP = 30
STAMP_RE = re.compile(r"^\d{8}T\d{6}Z(?:-\d+)?$")
REPORT_FILES = ("report.html", "junit.xml", "summary.json", METRICS)
# clusterproof_check_status values; an alert on `>= 3` fires on a failed or errored check.
STATUS_CODE = {Outcome.PASSED: 0, Outcome.XFAILED: 0, Outcome.WARNED: 1, Outcome.SKIPPED: 2, Outcome.FAILED: 3,
               Outcome.XPASSED: 3, Outcome.ERROR: 4}
VERDICTS = ("PASS", "FAIL", "INCOMPLETE")


# ------------------------------------------------------------------ the reports folder

def new_stamp(reports: Path, now: dt.datetime | None = None) -> str:
    """A UTC stamp (20261128T023000Z) that sorts after every run in REPORTS started in the same second (-1, -2 ...)."""
    base = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    taken = [_order(p.name)[1] for p in runs(reports) if _order(p.name)[0] == base]
    if (reports / base).exists():
        taken.append(0)
    return f"{base}-{max(taken) + 1}" if taken else base


def _order(stamp: str) -> tuple[str, int]:
    base, _, n = stamp.partition("-")
    return base, int(n or 0)


def runs(reports: Path) -> list[Path]:
    """The run folders in REPORTS, oldest first (only names that are stamps; `latest` and strays are not runs)."""
    if not reports.is_dir():
        return []
    found = [p for p in reports.iterdir() if STAMP_RE.match(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: _order(p.name))


def read_summary(path: Path) -> dict | None:
    """A summary.json as a dict, or None when it is missing, unreadable or not a clusterproof summary."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("checks"), list) else None


def previous_summary(reports: Path, before: str | None = None) -> Path | None:
    """The summary.json of the newest run (older than stamp BEFORE, when given) that left a readable one."""
    for run in reversed(runs(reports)):
        if before is not None and _order(run.name) >= _order(before):
            continue
        if read_summary(run / "summary.json") is not None:
            return run / "summary.json"
    return None


def prune(reports: Path, keep: int) -> list[Path]:
    """Delete all but the newest KEEP runs; returns what was deleted."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    doomed = runs(reports)[:-keep]
    for run in doomed:
        _rmtree(run)
    return doomed


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def point_latest(reports: Path, stamp: str) -> None:
    """REPORTS/latest -> STAMP (relative, replaced atomically so a reader never sees it missing)."""
    tmp = reports / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stamp)
    os.replace(tmp, reports / LATEST)


# ------------------------------------------------------------------ metrics

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _seconds(started: str, finished: str) -> float | None:
    try:
        return (dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)).total_seconds()
    except (TypeError, ValueError):
        return None


def render_metrics(doc: dict) -> str:
    """The Prometheus text format (node_exporter's textfile collector, a Pushgateway) of one summary.json."""
    run = RunResult.from_doc(doc)
    verdict, _why = run.verdict()
    verdict = doc.get("verdict") or verdict
    worst: dict[tuple[str, str, str], int] = {}
    for check, target in run.leaves():
        key = (check.id or target.nodeid, check.area, target.target or "cluster")
        worst[key] = max(worst.get(key, -1), STATUS_CODE.get(target.outcome, 4))
    lines = [
        "# HELP clusterproof_check_status Outcome of one check on one target in the run: 0 passed, 1 warned, "
        "2 skipped, 3 failed, 4 error (alert on >= 3).",
        "# TYPE clusterproof_check_status gauge",
    ]
    lines += [f"clusterproof_check_status{_labels(id=i, area=a, target=t)} {v}"
              for (i, a, t), v in sorted(worst.items())]
    lines += ["# HELP clusterproof_run_verdict The run's sign-off: 1 for its verdict, 0 for the others.",
              "# TYPE clusterproof_run_verdict gauge"]
    lines += [f"clusterproof_run_verdict{_labels(verdict=v)} {int(v == verdict)}" for v in VERDICTS]
    duration = _seconds(run.started, run.finished)
    if duration is not None:
        lines += ["# HELP clusterproof_run_duration_seconds How long the run took.",
                  "# TYPE clusterproof_run_duration_seconds gauge",
                  f"clusterproof_run_duration_seconds {duration:.3f}"]
    try:
        finished = dt.datetime.fromisoformat(run.finished).timestamp()
    except (TypeError, ValueError):
        finished = None
    if finished is not None:
        lines += ["# HELP clusterproof_run_finished_timestamp_seconds When the run finished (alert when too old).",
                  "# TYPE clusterproof_run_finished_timestamp_seconds gauge",
                  f"clusterproof_run_finished_timestamp_seconds {finished:.0f}"]
    counts = {str(o): 0 for o in Outcome}
    for _check, target in run.leaves():
        counts[str(target.outcome)] += 1
    lines += ["# HELP clusterproof_run_targets Checked targets in the run, by outcome.",
              "# TYPE clusterproof_run_targets gauge"]
    lines += [f"clusterproof_run_targets{_labels(outcome=o)} {n}" for o, n in counts.items()]
    compare = doc.get("compare") or {}
    if compare:
        lines += ["# HELP clusterproof_run_compared Targets by change against the previous run.",
                  "# TYPE clusterproof_run_compared gauge"]
        lines += [f"clusterproof_run_compared{_labels(change=k)} {len(compare.get(k) or [])}"
                  for k in ("newly_failing", "fixed", "still_failing")]
    return "\n".join(lines) + "\n"


def push_metrics(url: str, text: str, timeout: float = 10) -> None:
    """PUT the metrics to a Prometheus Pushgateway under job=clusterproof (replaces the previous push)."""
    target = url.rstrip("/") + "/metrics/job/clusterproof"
    req = urllib.request.Request(target, data=text.encode(), method="PUT",
                                 headers={"Content-Type": "text/plain; version=0.0.4"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if resp.status >= 300:
            raise OSError(f"Pushgateway {target} answered HTTP {resp.status}")


# ------------------------------------------------------------------ run (in the pod)

@dataclass
class RunOutcome:
    """What one nightly run left: its folder, the previous summary it compared with, pytest's exit status."""

    folder: Path
    previous: Path | None
    exitstatus: int
    summary: dict | None


def pytest_command(out: Path, kubeconfig: str, previous: Path | None, extra: list[str]) -> list[str]:
    """The suite run: the pod transport (no SSH keys in the cluster), reports into OUT, compared with PREVIOUS."""
    cmd = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT),
           f"--kubeconfig={kubeconfig}", "--host-transport=pod", f"--report-dir={out}"]
    if previous is not None:
        cmd.append(f"--compare={previous}")
    return cmd + extra


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(reports: Path, keep: int, extra: list[str], kubeconfig: str | None = None,
        pushgateway: str | None = None, echo=print) -> RunOutcome:
    """One nightly run: reports into a new stamped folder, compared with the previous one; metrics; keep KEEP."""
    if keep < 1:
        raise ValueError(f"--keep {keep}: keep at least the run itself (1)")
    reports.mkdir(parents=True, exist_ok=True)
    if kubeconfig is None:
        from .rbac import in_cluster_kubeconfig

        kubeconfig = str(in_cluster_kubeconfig(Path(tempfile.gettempdir()) / "clusterproof-kubeconfig"))
    stamp = new_stamp(reports)
    out = reports / stamp
    out.mkdir()
    previous = previous_summary(reports, before=stamp)
    cmd = pytest_command(out, kubeconfig, previous, extra)
    echo(f"clusterproof nightly: run {stamp}, compared with {previous.parent.name if previous else 'nothing'}")
    echo("$ " + shlex.join(cmd))
    # SIGINT at its default in the child, so that pytest takes the forwarded one as Ctrl-C even when this runner was
    # started with SIGINT ignored (a shell's background job), which a child would inherit
    child = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_default_sigint)

    def forward(_signum, _frame):
        # The Job's deadline or a delete (SIGTERM, then terminationGracePeriodSeconds): pytest takes SIGINT as
        # Ctrl-C, deletes the namespaces it made and writes an INCOMPLETE report.
        child.send_signal(signal.SIGINT)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    summary = read_summary(out / "summary.json")
    if summary is not None:
        text = render_metrics(summary)
        (out / METRICS).write_text(text, encoding="utf-8")
        point_latest(reports, stamp)
        if pushgateway:
            try:
                push_metrics(pushgateway, text)
            except OSError as exc:
                echo(f"clusterproof nightly: pushing metrics to {pushgateway} failed: {exc}")
        echo(f"clusterproof nightly: {summary.get('verdict')} ({summary.get('verdict_reason')}); reports in {out}")
    else:
        echo(f"clusterproof nightly: the run left no summary.json in {out} (pytest exit {rc})")
    for gone in prune(reports, keep):
        echo(f"clusterproof nightly: removed {gone.name} (keeping the newest {keep})")
    return RunOutcome(out, previous, rc, summary)


# ------------------------------------------------------------------ pull (from a workstation)

def reader_pod(name: str, image: str, claim: str, pull_secrets: list[str] | None = None) -> dict:
    """A pod that mounts the claim read-only and sleeps; fits the namespace's `restricted` Pod Security level."""
    pod: dict = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "clusterproof",
                                              "app.kubernetes.io/component": "pull"}},
        "spec": {
            "restartPolicy": "Never", "activeDeadlineSeconds": 900, "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False, "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "reader", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "900"],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "reports", "mountPath": str(REPORTS), "readOnly": True}],
            }],
            "volumes": [{"name": "reports", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        },
    }
    if pull_secrets:
        pod["spec"]["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    return pod


def cronjob_image(batch_v1: Any, namespace: str, name: str) -> tuple[str | None, list[str]]:
    """The image the CronJob runs (what the nodes can get) and its imagePullSecrets; (None, []) without it."""
    from kubernetes.client.exceptions import ApiException

    try:
        cj = batch_v1.read_namespaced_cron_job(name, namespace, _request_timeout=timeouts.get("api"))
    except ApiException as exc:
        if exc.status == 404:
            return None, []
        raise
    spec = cj.spec.job_template.spec.template.spec
    return str(spec.containers[0].image), [s.name for s in spec.image_pull_secrets or []]


def extract(data: bytes, dest: Path) -> list[str]:
    """Unpack a tar.gz of run folders into DEST (members outside DEST, links and devices refused)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
        return sorted({m.name.split("/", 1)[0] for m in tar.getmembers()})


def pull(api_client: Any, out: Path, last: int | None = None, namespace: str = NAMESPACE, claim: str = CLAIM,
         image: str | None = None, echo=print) -> list[Path]:
    """Copy the newest LAST runs (all without LAST) from the claim into OUT; returns the run folders written."""
    from kubernetes import client

    from . import pods
    from .wait import Never, wait_for

    core: Any = client.CoreV1Api(api_client)
    cron_image, pull_secrets = cronjob_image(client.BatchV1Api(api_client), namespace, CRONJOB)
    image = image or cron_image or SUITE_IMAGE
    name = f"clusterproof-pull-{secrets.token_hex(3)}"
    core.create_namespaced_pod(namespace, reader_pod(name, image, claim, pull_secrets),
                               _request_timeout=timeouts.get("api"))
    try:
        def running() -> tuple[bool, Any]:
            pod = core.read_namespaced_pod(name, namespace, _request_timeout=timeouts.get("api"))
            problem = pods.pod_problem(pod)
            if problem:
                raise Never(problem)
            return pod.status.phase == "Running", pods.pod_state(pod)

        wait_for(running, f"pod {namespace}/{name} (mounting claim {claim}) to run", timeouts.get("pod_start"))
        listing = pods.exec_in_pod(core, namespace, name, ["ls", "-1", str(REPORTS)])
        if listing.rc != 0:
            raise RuntimeError(f"listing {REPORTS} in {namespace}/{name} failed: {listing.error or listing.stderr}")
        stamps = sorted((s for s in listing.stdout.split() if STAMP_RE.match(s)), key=_order)
        if last is not None:
            stamps = stamps[-last:] if last > 0 else []
        if not stamps:
            echo(f"no runs on claim {namespace}/{claim} yet")
            return []
        script = f"cd {REPORTS} && tar -czf - {' '.join(stamps)} | base64"
        packed = pods.exec_in_pod(core, namespace, name, ["sh", "-c", script], timeout=timeouts.scaled(300))
        if packed.rc != 0:
            raise RuntimeError(f"packing the runs in {namespace}/{name} failed: {packed.error or packed.stderr}")
        got = extract(base64.b64decode("".join(packed.stdout.split())), out)
    finally:
        try:
            core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, _request_timeout=timeouts.get("api"))
        except Exception as exc:  # the pod ends itself (activeDeadlineSeconds); say so and go on
            echo(f"could not delete pod {namespace}/{name}: {type(exc).__name__}; it ends itself within 15 min")
    folders = [out / s for s in got if STAMP_RE.match(s)]
    newest = next((f for f in reversed(folders) if read_summary(f / "summary.json")), None)
    if newest is not None:
        point_latest(out, newest.name)
    for f in folders:
        doc = read_summary(f / "summary.json")
        echo(f"{f}  {doc.get('verdict') if doc else 'no summary.json (the run did not finish)'}")
    return folders


# ------------------------------------------------------------------ command line

def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m clusterproof.nightly", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="Run the suite in the cluster and keep its reports (the CronJob's command)")
    r.add_argument("--reports", type=Path, default=REPORTS, help=f"Folder of the kept runs (default {REPORTS})")
    r.add_argument("--keep", type=int, default=int(os.environ.get("CLUSTERPROOF_KEEP_RUNS", DEFAULT_KEEP)),
                   help=f"How many runs to keep (default {DEFAULT_KEEP})")
    r.add_argument("--kubeconfig", default=None,
                   help="Kubeconfig (default: the pod's ServiceAccount token, as `clusterproof.rbac in-cluster`)")
    r.add_argument("--pushgateway", default=os.environ.get("CLUSTERPROOF_PUSHGATEWAY") or None,
                   help="Also PUT each run's metrics to this Prometheus Pushgateway URL")
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="Arguments for pytest after --, e.g. -- -m 'not gpu'")
    p = sub.add_parser("pull", help="Copy kept runs from the reports volume to this machine")
    p.add_argument("--kubeconfig", default=None, help="Kubeconfig (default: $KUBECONFIG, then ~/.kube/config)")
    p.add_argument("--context", default=None, help="Kubeconfig context (default: its current-context)")
    p.add_argument("--last", type=int, default=None, help="Only the newest N runs (default: all kept)")
    p.add_argument("--out", type=Path, default=Path("nightly"), help="Where the run folders go (default ./nightly)")
    p.add_argument("--namespace", default=NAMESPACE, help=f"Namespace of the CronJob and claim (default {NAMESPACE})")
    p.add_argument("--claim", default=CLAIM, help=f"The reports PersistentVolumeClaim (default {CLAIM})")
    p.add_argument("--image", default=None, help="Image of the reader pod (default: the CronJob's image)")
    m = sub.add_parser("metrics", help="Print the Prometheus text format of a summary.json")
    m.add_argument("summary", type=Path)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "metrics":
        doc = read_summary(args.summary)
        if doc is None:
            print(f"error: {args.summary} is not a clusterproof summary.json", file=sys.stderr)
            return 2
        sys.stdout.write(render_metrics(doc))
        return 0
    if args.cmd == "run":
        extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
        try:
            result = run(args.reports, args.keep, extra, args.kubeconfig, args.pushgateway)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return result.exitstatus
    from . import kube

    try:
        api = kube.new_client(kube.resolve_kubeconfig(args.kubeconfig), args.context)
    except kube.InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    t0 = time.monotonic()
    try:
        folders = pull(api, args.out, args.last, args.namespace, args.claim, args.image)
    except Exception as exc:
        from .wait import WaitTimeout

        if not isinstance(exc, WaitTimeout | RuntimeError) and getattr(exc, "status", None) is None:
            raise
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"pulled {len(folders)} run(s) into {args.out} in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
