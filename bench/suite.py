"""Benchmark the whole non-GPU suite against the testbed with -n auto, and a bare hello-python rollout.

    python bench/suite.py [--runs N]
Prints the wall time of each suite run, the time of a bare rollout of manifests/hello-python (apply ->
4/4 ready, measured in the same run), and their ratio (target: suite within 2x the rollout, under 90 s).
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    args, extra = ap.parse_known_args()
    st, env = testbed_env()
    rollout = bare_rollout(st)
    times = [suite(env, extra)[0] for _ in range(args.runs)]
    med = statistics.median(times)
    print(f"bare hello-python rollout (4 replicas, apply -> ready): {rollout:.1f} s")
    print(f"whole non-GPU suite, -n auto: median {med:.1f} s over {len(times)} run(s) {[round(x, 1) for x in times]}")
    print(f"ratio suite/rollout: {med / rollout:.1f}x (target <= 2x and suite < 90 s)")


if __name__ == "__main__":
    main()
