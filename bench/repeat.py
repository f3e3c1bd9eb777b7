"""Run the whole suite N times in a row against the testbed and count failures per check (flakiness).

    python bench/repeat.py [--runs 10] [pytest args]
Prints one line per run (outcome counts, wall time) and then every check that ever failed, with
how often. Exit 0 only when every run passed.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from suite import testbed_env  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args, extra = ap.parse_known_args()
    _, env = testbed_env()
    failed: collections.Counter[str] = collections.Counter()
    bad_runs = 0
    junit = ROOT / "reports" / "repeat-junit.xml"
    for i in range(1, args.runs + 1):
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "pytest", "suites", "-n", "auto", "--dist", "loadgroup", "-q",
                            "--junitxml", str(junit), "--report-dir", str(ROOT / "reports" / "repeat"), *extra],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        took = time.monotonic() - t
        counts: collections.Counter[str] = collections.Counter()
        for case in ET.parse(junit).getroot().iter("testcase"):
            kind = next((tag for tag in ("failure", "error", "skipped") if case.find(tag) is not None), "passed")
            counts[kind] += 1
            if kind in ("failure", "error"):
                failed[f"{case.get('classname')}::{case.get('name')}"] += 1
        bad_runs += r.returncode != 0
        print(f"run {i:2}: exit {r.returncode}, {dict(counts)}, {took:.1f} s", flush=True)
    print(f"{args.runs - bad_runs} of {args.runs} runs passed")
    for name, n in failed.most_common():
        print(f"  failed {n}x: {name}")
    return 0 if bad_runs == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
