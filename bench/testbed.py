"""Benchmark the testbed: cold build, warm `up` (binaries and images cached) to Ready + CoreDNS, `down`.

    python bench/testbed.py            # warm up/down cycles (takes the testbed down and up again)
    python bench/testbed.py --cold     # also a cold build into an empty Go cache (10-20 min on 2 cores)
Prints one line per measurement.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed.api import Testbed  # noqa: E402
from testbed.errors import TestbedError  # noqa: E402
from testbed.paths import DEFAULT_VERSION, bin_dir  # noqa: E402


def timed(step: Callable[[], object]) -> float:
    """Seconds STEP (a Testbed method) takes; its progress lines are kept out of the measurements' output."""
    t = time.monotonic()
    progress = io.StringIO()
    try:
        with contextlib.redirect_stdout(progress):
            step()
    except TestbedError as exc:
        sys.exit(f"testbed {getattr(step, '__name__', step)} failed ({exc.code}): {exc}\n{progress.getvalue()[-400:]}")
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="Also time a cold build in an empty cache")
    ap.add_argument("--cycles", type=int, default=3)
    args = ap.parse_args()
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="cp-cold-") as tmp:
            env = dict(os.environ, CLUSTERPROOF_CACHE=tmp)
            from testbed import build  # noqa: F401  (same code path as up)

            t = time.monotonic()
            r = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from testbed import build;"
                                f"build.build('{DEFAULT_VERSION}', Path('{tmp}')/'build.log')"],
                               cwd=ROOT, env=env, timeout=7200, check=False)
            if r.returncode != 0:
                sys.exit("cold build failed")
            print(f"cold build (all binaries, empty Go cache, module downloads included): {time.monotonic() - t:.1f} s")
    else:
        rec = bin_dir(DEFAULT_VERSION) / ".cold-build-seconds"
        print(f"cold build (recorded by the last cold build here): "
              f"{rec.read_text().strip() + ' s' if rec.exists() else 'not recorded; run with --cold'}")
    tb = Testbed()
    ups, downs = [], []
    timed(tb.up)
    for _ in range(args.cycles):
        downs.append(timed(tb.down))
        ups.append(timed(tb.up))
    print(f"warm up to nodes Ready + CoreDNS available: median {statistics.median(ups):.1f} s "
          f"(min {min(ups):.1f}, max {max(ups):.1f}, n={len(ups)})")
    print(f"down: median {statistics.median(downs):.1f} s (min {min(downs):.1f}, max {max(downs):.1f}, n={len(downs)})")
    print(f"up on a running testbed (health check only): {timed(tb.up):.1f} s")


if __name__ == "__main__":
    main()
