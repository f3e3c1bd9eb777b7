"""The fault matrix: every testbed fault the catalog names, injected in turn, the whole suite run against it.

    python -m testbed fault matrix [--json | --markdown] [--fault NAME] [--workers N]

One row per catalog check: the fault that must break it, whether it did (its owner failed), and
the checks that failed without being its owner or a declared dependent of an owner (unexpected:
either a missing `depends_on` in clusterproof/catalog.py or a check that reaches too far). Checks
the catalog names no fault for get a row saying so. The testbed is healed and waited for between
faults. The suite is run exactly as a user runs it (a subprocess, the testbed's kubeconfig).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clusterproof import catalog
from clusterproof.results import BAD, Outcome, RunResult

from . import kube, kube_router, state
from .errors import TestbedError

ROOT = Path(__file__).resolve().parent.parent
SETTLE_TIMEOUT = 120.0
HEAL_TIMEOUT = 240.0


@dataclass
class FaultRun:
    """One fault injected, the suite run once against it."""

    fault: catalog.Fault
    owners: list[str]
    failed: dict[str, str] = field(default_factory=dict)      # check ID -> first failure message
    outcomes: dict[str, str] = field(default_factory=dict)    # check ID -> worst outcome
    sign_off: str = ""
    seconds: float = 0.0
    error: str = ""

    @property
    def allowed(self) -> set[str]:
        """Owners and everything that declares a dependency on one of them."""
        out = set(self.owners)
        for o in self.owners:
            out |= catalog.dependents(o)
        return out

    @property
    def unexpected(self) -> list[str]:
        return sorted(set(self.failed) - self.allowed)


@dataclass
class Row:
    check: str
    fault: str
    owner_failed: bool | None          # None: no fault names this check
    unexpected: list[str]
    outcome: str
    message: str = ""
    seconds: float = 0.0


def plan(only: str | None = None) -> dict[catalog.Fault, list[str]]:
    """Each distinct fault the catalog names -> the checks it must break."""
    out: dict[catalog.Fault, list[str]] = {}
    for c in catalog.CATALOG.values():
        for f in c.faults:
            if only is None or f.name == only:
                out.setdefault(f, []).append(c.id)
    return out


def _node_not_ready(node: str) -> Callable[[], bool]:
    def cond() -> bool:
        out = kube.kubectl("get", "node", node, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                           check=False)
        return out.returncode == 0 and out.stdout.strip() != "True"
    return cond


def _no_gpus(node: str) -> Callable[[], bool]:
    def cond() -> bool:
        out = kube.kubectl("get", "node", node, "-o", "jsonpath={.status.allocatable.nvidia\\.com/gpu}", check=False)
        return out.returncode == 0 and out.stdout.strip() in ("", "0")
    return cond


def _tainted(node: str, key: str) -> Callable[[], bool]:
    def cond() -> bool:
        out = kube.kubectl("get", "node", node, "-o", "jsonpath={.spec.taints[*].key}", check=False)
        return out.returncode == 0 and f"node.kubernetes.io/{key}" in out.stdout.split()
    return cond


def _coredns_gone() -> bool:
    out = kube.kubectl("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o", "name", check=False)
    return out.returncode == 0 and not out.stdout.strip()


def settle(fault: catalog.Fault) -> None:
    """Wait until the fault shows the way it does on a user's broken cluster (steady state, not the first second)."""
    node = fault.node or "tb-node-2"
    if fault.name in ("runtime-stop", "cni-config-remove"):
        kube.wait(f"{node} to report NotReady after {fault}", _node_not_ready(node), SETTLE_TIMEOUT)
    elif fault.name == "runtime-freeze":
        # a hung runtime turns the node NotReady once the kubelet's PLEG has not relisted for 3 minutes
        kube.wait(f"{node} to report NotReady after {fault}", _node_not_ready(node), 300)
    elif fault.name == "coredns-scale-zero":
        kube.wait("CoreDNS pods to be gone", _coredns_gone, SETTLE_TIMEOUT)
    elif fault.name == "gpu-plugin-stop":
        kube.wait(f"{node}'s GPUs to be withdrawn after {fault}", _no_gpus(node), SETTLE_TIMEOUT)
    elif fault.name in ("scheduler-stop", "controller-manager-stop"):
        component = "kube-" + fault.name.removesuffix("-stop")
        kube.wait(f"{component}'s Lease to go stale after {fault}", lambda: not kube.lease_fresh(component),
                  SETTLE_TIMEOUT)
    elif fault.name == "memory-pressure":
        kube.wait(f"{node} to be tainted memory-pressure after {fault}", _tainted(node, "memory-pressure"),
                  SETTLE_TIMEOUT)


def wait_healed() -> None:
    kube.wait("the testbed to be healthy again (nodes Ready and reporting their runtime, CoreDNS available, "
              "scheduler and controller-manager leading)",
              lambda: kube.apiserver_ready() and kube.nodes_ready() and kube.runtimes_reported()
              and kube.coredns_available() and all(kube.lease_fresh(n) for n in kube.CONTROL_LEASES)
              and _cni_agents_ready(), HEAL_TIMEOUT, interval=1.0)


def _cni_agents_ready() -> bool:
    """kube-router ready on every node (where the testbed runs it)."""
    return state.cni_mode() != "kube-router" or not kube_router.not_ready([n.name for n in state.nodes()])


def run_suite(kubeconfig: Path, ssh_key: Path, report_dir: Path, workers: int, timeout: float = 900) -> dict:
    """The whole suite as a user runs it; its summary.json (empty when it wrote none)."""
    cmd = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "-n", str(workers),
           "--dist", "loadgroup", "--kubeconfig", str(kubeconfig), "--ssh-key", str(ssh_key),
           "--report-dir", str(report_dir), "--html", str(report_dir / "report.html"), "--self-contained-html"]
    env = {**os.environ, "CLUSTERPROOF_GPU_PROBE_IMAGE": os.environ.get("CLUSTERPROOF_GPU_PROBE_IMAGE",
                                                                        "localhost/clusterproof/probe:1")}
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    path = report_dir / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


# How much of each failure's message a row keeps: enough for its object, expected, observed and fix.
MESSAGE_CHARS = 4000


def read(run: FaultRun, summary: dict) -> None:
    """Each check's outcome (its worst target, as the result tree folds it) and its first failure's message."""
    run.sign_off = summary.get("verdict", "")
    tree = RunResult.from_doc(summary)
    for c in tree.checks:
        cid = c.id or c.targets[0].nodeid
        run.outcomes[cid] = str(c.outcome)
        # A WARN-severity owner breaks by warning; elsewhere only a failure or error counts (a check that warns on the
        # healthy testbed too, HOST-013 on cgroup v1, is no unexpected failure of every fault).
        broken = (*BAD, Outcome.WARNED) if cid in run.owners else BAD
        bad = next((t for t in c.targets if t.outcome in broken), None)
        if bad is not None:
            v = bad.verdict
            text = v.message if v is not None and bad.outcome == Outcome.WARNED else bad.message
            run.failed[cid] = (text or (v.reason or v.observed if v else "") or str(bad.outcome))[:MESSAGE_CHARS]


def run_matrix(tb, only: str | None = None, workers: int = 2, log: Callable[[str], None] = print) -> list[FaultRun]:
    """Inject each fault, settle, run the suite, heal, wait; FaultRuns in plan order."""
    if not tb.status().healthy:
        raise TestbedError("the testbed is not healthy: run `python -m testbed up` (and heal active faults) first",
                           code=3)
    runs = []
    for fault, owners in plan(only).items():
        run = FaultRun(fault, owners)
        t0 = time.monotonic()
        log(f"matrix: {fault} (owners {', '.join(owners)}) ...")
        marks = [t0]
        with tempfile.TemporaryDirectory(prefix="cp-matrix-") as tmp:
            try:
                with tb.fault(fault.name, fault.node, fault.value):
                    settle(fault)
                    marks.append(time.monotonic())
                    read(run, run_suite(tb.kubeconfig(), tb.ssh_key(), Path(tmp), workers))
                    marks.append(time.monotonic())
            except (TestbedError, subprocess.TimeoutExpired) as exc:
                run.error = str(exc).splitlines()[0][:300]
            finally:
                wait_healed()
        run.seconds = round(time.monotonic() - t0, 1)
        steps = [b - a for a, b in zip(marks, [*marks[1:], t0 + run.seconds])]
        log(f"matrix: {fault}: owners failed {sorted(set(owners) & set(run.failed))}, unexpected {run.unexpected} "
            f"({run.seconds:.0f} s: " + " + ".join(f"{n} {x:.0f}" for n, x in zip(("settle", "suite", "heal"), steps))
            + ")")
        runs.append(run)
    return runs


# The GPU memory checks need CUDA, which the testbed has not: their faults ran on a real GPU (gpu-verify), where each
# verdict name below is the rule that check applies in a pod. A recorded negative control that failed as expected is
# the row: the owner failed on a real fault (and the recording's test holds every other verdict to its expectation).
RECORDED_CHECKS = {"visible memory": "GPU-003", "half the slice allocates": "GPU-004",
                   "over the slice fails": "GPU-005", "each keeps its own limit at the same time": "GPU-006"}
RECORDINGS = ROOT / "gpu-verify" / "recorded"


def recorded_rows(folder: Path = RECORDINGS) -> dict[str, Row]:
    """Check ID -> the newest recorded real-GPU case whose expected failure of that check's rule happened."""
    out: dict[str, Row] = {}
    for rec in sorted(folder.glob("*/verdicts.json")):
        doc = json.loads(rec.read_text())
        for case in [*doc.get("cases", []), *doc.get("pairs", [])]:
            for v in case.get("verdicts", []):
                cid = RECORDED_CHECKS.get(v.get("check", ""))
                if cid and v.get("expect") == "fail" and v.get("status") == "fail":
                    out[cid] = Row(cid, f"real GPU: {rec.parent.name} {case['name']}", True, [], "failed",
                                   v.get("message", "")[:300])
    return out


def rows(runs: list[FaultRun]) -> list[Row]:
    """One row per catalog check: its first fault's run (a check several faults break: one row per fault)."""
    out: list[Row] = []
    recorded = recorded_rows()
    for c in catalog.CATALOG.values():
        mine = [r for r in runs if c.id in r.owners]
        if not mine and c.id in recorded:
            out.append(recorded[c.id])
        elif not mine:
            out.append(Row(c.id, "; ".join(str(f) for f in c.faults) or "-", None, [],
                           "not run" if c.faults else "no fault declared"))
        for r in mine:
            out.append(Row(c.id, str(r.fault), c.id in r.failed, r.unexpected,
                           r.error or r.outcomes.get(c.id, "not run"), r.failed.get(c.id, ""), r.seconds))
    return out


def render_text(table: list[Row]) -> str:
    lines = [f"{'check':<9} {'fault':<48} {'owner failed':<13} unexpected failures"]
    for r in table:
        owner = "-" if r.owner_failed is None else ("yes" if r.owner_failed else f"NO ({r.outcome})")
        lines.append(f"{r.check:<9} {r.fault:<48} {owner:<13} {', '.join(r.unexpected) or '-'}")
    covered = [r for r in table if r.owner_failed]
    clean = [r for r in covered if not r.unexpected]
    ids = {r.check for r in table}
    lines.append(f"{len({r.check for r in covered})}/{len(ids)} checks failed by a fault, "
                 f"{len({r.check for r in clean})} of them with no unexpected failure")
    return "\n".join(lines)


def render_markdown(table: list[Row], date: str) -> str:
    out = [f"Fault matrix run on {date} (`python -m testbed fault matrix --markdown`):", "",
           "| Check | Fault | Owner failed | Unexpected failures | Time |", "|---|---|---|---|---|"]
    for r in table:
        owner = (r.outcome if r.owner_failed is None else "yes" if r.owner_failed else f"**no** ({r.outcome})")
        fault = f"`{r.fault}`" if r.fault != "-" else "none yet"
        took = f"{r.seconds:.0f} s" if r.seconds else "-"
        out.append(f"| {r.check} | {fault} | {owner} | {', '.join(r.unexpected) or '-'} | {took} |")
    covered = {r.check for r in table if r.owner_failed and not r.unexpected}
    out += ["", f"{len(covered)} of {len({r.check for r in table})} checks failed by a fault with no unexpected "
                "failure."]
    return "\n".join(out)


def to_json(runs: list[FaultRun], table: list[Row]) -> dict:
    return {"runs": [{"fault": str(r.fault), "owners": r.owners, "failed": r.failed, "outcomes": r.outcomes,
                      "sign_off": r.sign_off, "unexpected": r.unexpected, "seconds": r.seconds, "error": r.error}
                     for r in runs],
            "rows": [asdict(r) for r in table]}


def load_runs(docs: list[dict]) -> list[FaultRun]:
    """FaultRuns back from to_json documents (several partial runs make one table); the newest run of a fault wins,
    a fault the catalog no longer names is dropped."""
    faults = {str(f): (f, owners) for f, owners in plan().items()}
    out: dict[str, FaultRun] = {}
    for doc in docs:
        for r in doc.get("runs", []):
            if r["fault"] in faults:
                f, owners = faults[r["fault"]]
                out[r["fault"]] = FaultRun(f, owners, dict(r.get("failed", {})), dict(r.get("outcomes", {})),
                                           r.get("sign_off", ""), float(r.get("seconds", 0.0)), r.get("error", ""))
    order = list(faults)
    return sorted(out.values(), key=lambda run: order.index(str(run.fault)))
