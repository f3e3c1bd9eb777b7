"""Helpers for the testbed tests of the NODE/CNI/DNS/POD checks: run them and read summary.json."""
from __future__ import annotations

import json
import time
from collections.abc import Callable

from conftest import ROOT, run_suite

SUITES = ("suites/nodes", "suites/network", "suites/pods")


class Run:
    """One run of the checks: outcome per test node id, and the failed ones' check IDs and messages."""

    def __init__(self, summary: dict, stdout: str, seconds: float):
        self.summary, self.stdout, self.seconds = summary, stdout, seconds
        self.checks = summary.get("checks", [])
        self.failed = {c["nodeid"]: c for c in self.checks if c["outcome"] in ("failed", "error")}

    @property
    def failed_ids(self) -> set[str]:
        return {c["id"] for c in self.failed.values()}

    def outcome(self, check_id: str) -> set[str]:
        return {c["outcome"] for c in self.checks if c["id"] == check_id}

    def message(self, check_id: str) -> str:
        return "\n".join(c["message"] or "" for c in self.failed.values() if c["id"] == check_id)

    def explain(self) -> str:
        return "\n".join(f"{k}: {c['outcome']}: {(c['message'] or '')[:300]}" for k, c in sorted(self.failed.items())) \
            or self.stdout[-3000:]


def run_checks(pytester, testbed: dict, *paths: str, workers: str = "2") -> Run:
    """Run the checks (default: nodes, network, pods) against the testbed under xdist; summary.json parsed."""
    report_dir = pytester.path / f"reports-{time.monotonic_ns()}"
    t0 = time.monotonic()
    targets = [str(ROOT / p) for p in (paths or SUITES)]
    res = run_suite(pytester, *targets, "-n", workers, "--report-dir", str(report_dir), testbed=testbed)
    seconds = time.monotonic() - t0
    path = report_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    return Run(summary, "\n".join(res.outlines + res.errlines), seconds)


def run_until(pytester, testbed: dict, ok: Callable[[Run], bool], tries: int = 2) -> Run:
    """Run the checks; once more when the result is a surprise (another engineer may break the testbed meanwhile)."""
    run = run_checks(pytester, testbed)
    for _ in range(tries - 1):
        if ok(run):
            break
        run = run_checks(pytester, testbed)
    return run
