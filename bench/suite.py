"""Benchmark the whole non-GPU suite against the testbed with -n auto, and a bare hello-python rollout.

    python bench/suite.py [--runs N] [--nodes 2,4,6] [pytest args...]
Prints the wall time of each suite run, the time of a bare rollout of manifests/hello-python (apply ->
4/4 ready, measured in the same run), and their ratio (issue 12's target: the suite within 5x the rollout).
With --nodes, one row per testbed size (`up --nodes N`, the testbed of another size taken down first) and the
growth from the smallest to the largest (target: at most 1.5x from 2 to 6 nodes); the testbed is left at its
default two nodes afterwards.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed.api import Status, Testbed  # noqa: E402
from testbed.paths import bin_dir  # noqa: E402


def testbed_env() -> tuple[Status, dict]:
    """The healthy testbed's status, and this environment plus what the suite needs to run against it."""
    tb = Testbed()
    st = tb.status()
    if not st.healthy:
        sys.exit("the testbed is not healthy: run python -m testbed up")
    return st, dict(os.environ, **tb.env())


def bare_rollout(st: Status) -> float:
    assert st.version, "a testbed that is up knows its version"
    k = [str(bin_dir(st.version) / "kubectl"), "--kubeconfig", str(st.kubeconfig)]
    ns = f"bench-rollout-{os.getpid()}"
    subprocess.run([*k, "create", "namespace", ns], check=True, capture_output=True, timeout=60)
    try:
        t = time.monotonic()
        subprocess.run([*k, "-n", ns, "apply", "-f", str(ROOT / "manifests/hello-python/deployment.yaml")],
                       check=True, capture_output=True, timeout=60)
        subprocess.run([*k, "-n", ns, "rollout", "status", "deploy/hello-python", "--timeout=300s"],
                       check=True, capture_output=True, timeout=320)
        return time.monotonic() - t
    finally:
        subprocess.run([*k, "delete", "namespace", ns, "--wait=true", "--timeout=120s"], capture_output=True,
                       timeout=150)


def suite(env: dict, extra: list[str]) -> tuple[float, int]:
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "suites", "-n", "auto", "--dist", "loadgroup", "-q",
                        "-m", "not gpu",
                        "--junitxml", str(ROOT / "reports/bench-junit.xml"), *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    took = time.monotonic() - t
    last = (r.stdout.strip().splitlines() or ["?"])[-1]
    print(f"  suite exit {r.returncode}: {last}")
    return took, r.returncode


def measure(runs: int, extra: list[str]) -> tuple[float, float, list[float], int]:
    """(bare rollout s, median suite s, every suite run's s, the worst exit status) on the testbed as it is."""
    st, env = testbed_env()
    rollout = bare_rollout(st)
    got = [suite(env, extra) for _ in range(runs)]
    times = [t for t, _ in got]
    return rollout, statistics.median(times), times, max(rc for _, rc in got)


def sizes(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or any(not 1 <= n <= 6 for n in counts):
        sys.exit(f"bench/suite.py: --nodes takes node counts from 1 to 6 separated by commas, not {text!r}")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--nodes", default=None, help="testbed sizes to measure, e.g. 2,4,6 (default: the testbed as is)")
    args, extra = ap.parse_known_args()
    if args.nodes is None:
        rollout, med, times, _ = measure(args.runs, extra)
        print(f"bare hello-python rollout (4 replicas, apply -> ready): {rollout:.1f} s")
        print(f"whole non-GPU suite, -n auto: median {med:.1f} s over {len(times)} run(s) "
              f"{[round(x, 1) for x in times]}")
        print(f"ratio suite/rollout: {med / rollout:.1f}x (target <= 5x)")
        return
    counts = sizes(args.nodes)
    tb = Testbed()
    rows = []
    try:
        for n in counts:
            t = time.monotonic()
            with contextlib.redirect_stdout(io.StringIO()):
                tb.up(n)
            took_up = time.monotonic() - t
            rollout, med, times, rc = measure(args.runs, extra)
            rows.append((n, took_up, rollout, med, rc))
            print(f"{n} node(s): up {took_up:.0f} s, bare rollout {rollout:.1f} s, suite median {med:.1f} s "
                  f"(exit {rc}), ratio {med / rollout:.1f}x", flush=True)
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            tb.up(2)
    print("\n| nodes | up s | bare rollout s | suite s (-n auto, non-GPU) | suite/rollout | suite exit |")
    print("|---|---|---|---|---|---|")
    for n, took_up, rollout, med, rc in rows:
        print(f"| {n} | {took_up:.0f} | {rollout:.1f} | {med:.1f} | {med / rollout:.1f}x | {rc} |")
    first, last = rows[0], rows[-1]
    print(f"\nsuite growth {first[0]} -> {last[0]} nodes: {last[3] / first[3]:.2f}x (target <= 1.5x from 2 to 6)")


if __name__ == "__main__":
    main()
