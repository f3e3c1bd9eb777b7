#!/usr/bin/env python3
"""Verify manifests/gpu/probe.py and clusterproof.gpu's verdicts on a real NVIDIA GPU, no cluster.

    python3 gpu-verify/verify.py OUTDIR        (or gpu-verify/verify.sh OUTDIR)

Needs python3 and the NVIDIA driver (libcuda.so.1, nvidia-smi, nvidia-cuda-mps-control); no CUDA
toolkit, no pip. Runs from a checkout (it imports clusterproof.gpu). Cases, each a probe run judged
by the same functions the suite uses:

  no-limit          the probe alone: visible total equals the card; half the card allocates
  mps-2g            an MPS client with CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G: sees ~2 GiB,
                    1 GiB allocates, 3 GiB fails with CUDA_ERROR_OUT_OF_MEMORY
  mps-pair-a/-b     two MPS clients at once on the same GPU, limits 2G and 3G: each keeps its own
                    (a 1G client's context leaves only ~510 MiB free)
  hami-core         only with VGPU_LIB=/path/to/libvgpu.so: LD_PRELOAD + CUDA_DEVICE_MEMORY_LIMIT=2048m

OUTDIR gets <case>.stdout/.stderr (the probe's raw output), verdicts.json (cases, plans, verdicts:
tests/test_gpu_verdicts.py re-judges recordings with it), nvidia-smi.txt, mps-log/ and summary.txt.
Exit 0 when every case that ran passed, 1 when one failed, 2 on bad usage. Finishes in well under
3 minutes (a probe run is limited to 40 s, MPS start/stop to 20 s, and no case starts after 110 s).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterproof import gpu  # noqa: E402 - after the path is set

PROBE = ROOT / "manifests" / "gpu" / "probe.py"
RUN_TIMEOUT = 40          # one probe run
BUDGET_S = 110            # no new case starts after this, so the whole run stays under 3 minutes


def log(msg: str) -> None:
    print(msg, flush=True)


def plan_from(d: dict) -> gpu.Plan:
    return gpu.Plan(node="local", setup=d.get("setup", "nvidia"), sharing=d["sharing"], resources={},
                    slice_mib=d.get("slice_mib"), isolated=d["isolated"], card_mib=d.get("card_mib"),
                    nvml_limited=d.get("nvml_limited", True), note=d.get("note", ""))


def judge(case: dict, out: gpu.ProbeOutput) -> list[dict]:
    """The suite's verdicts for one probe run (also used by the project's tests on recordings)."""
    plan = plan_from(case["plan"])
    checks = [("visible memory", gpu.visible_memory), ("half the slice allocates", gpu.half_slice_allocates)]
    if plan.over_mib:
        checks.append(("over the slice fails", gpu.over_slice_fails))
    res = []
    for name, fn in checks:
        v = fn(out, plan, case["name"])
        # Here a missing CUDA device is a failure (as under --require-gpu): this script exists to use one.
        v = gpu.under_require_gpu(v, require_gpu=True)
        res.append({"check": name, "status": str(v.status), "message": v.message})
    return res


def run_probe(outdir: Path, name: str, allocs: list[int], env: dict[str, str] | None = None,
              hold: float = 0.0) -> subprocess.Popen:
    argv = [sys.executable, str(PROBE)]
    for m in allocs:
        argv += ["--alloc-mib", str(m)]
    if hold:
        argv += ["--hold-s", str(hold)]
    full = dict(os.environ)
    full.update(env or {})
    stdout = (outdir / f"{name}.stdout").open("w")
    stderr = (outdir / f"{name}.stderr").open("w")
    p = subprocess.Popen(argv, env=full, stdout=stdout, stderr=stderr)
    p._files = (stdout, stderr)  # type: ignore[attr-defined]
    return p


def finish(p: subprocess.Popen) -> int | None:
    try:
        rc = p.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        rc = None
    for f in p._files:  # type: ignore[attr-defined]
        f.close()
    return rc


def record(outdir: Path, case: dict, rc: int | None) -> dict:
    name = case["name"]
    case.update(stdout=f"{name}.stdout", stderr=f"{name}.stderr", rc=rc)
    stdout = (outdir / case["stdout"]).read_text()
    stderr = (outdir / case["stderr"]).read_text()
    try:
        out = gpu.parse_probe(stdout, stderr)
    except ValueError as exc:
        case.update(status="ran", verdicts=[{"check": "probe output", "status": "fail", "message": str(exc)}])
        return case
    case["summary"] = out.summary()
    case.update(status="ran", verdicts=judge(case, out))
    return case


def not_run(name: str, why: str, plan: dict) -> dict:
    return {"name": name, "status": "not-run", "reason": why, "plan": plan, "verdicts": []}


def mps_start(outdir: Path) -> tuple[dict[str, str] | None, str]:
    ctl = shutil.which("nvidia-cuda-mps-control")
    if not ctl:
        return None, "nvidia-cuda-mps-control not found (driver utilities not installed)"
    pipe = Path(tempfile.mkdtemp(prefix="cp-mps-pipe-"))
    logd = outdir / "mps-log"
    logd.mkdir(exist_ok=True)
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logd)}
    try:
        r = subprocess.run([ctl, "-d"], env={**os.environ, **env}, capture_output=True, text=True, timeout=20,
                           check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-cuda-mps-control -d: {exc}"
    if r.returncode != 0:
        return None, f"nvidia-cuda-mps-control -d exited {r.returncode}: {(r.stderr or r.stdout).strip()[:300]}"
    time.sleep(1.0)
    return env, ""


def mps_stop(env: dict[str, str]) -> str:
    ctl = shutil.which("nvidia-cuda-mps-control") or "nvidia-cuda-mps-control"
    try:
        r = subprocess.run([ctl], input="quit\n", env={**os.environ, **env},
                           capture_output=True, text=True, timeout=20, check=False)
        msg = f"quit: exit {r.returncode} {r.stdout.strip()} {r.stderr.strip()}".strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"quit failed: {exc}"
    time.sleep(1.0)
    shutil.rmtree(env["CUDA_MPS_PIPE_DIRECTORY"], ignore_errors=True)
    return msg


def smi_text(outdir: Path) -> int | None:
    """nvidia-smi's view for the record; returns the card's memory.total in MiB."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        (outdir / "nvidia-smi.txt").write_text("nvidia-smi not found\n")
        return None
    parts = []
    total = None
    for args in (["-L"], ["--query-gpu=index,name,uuid,driver_version,memory.total,memory.used,compute_mode,"
                          "mig.mode.current", "--format=csv"], []):
        try:
            r = subprocess.run([smi, *args], capture_output=True, text=True, timeout=30, check=False)
            parts.append(f"$ nvidia-smi {' '.join(args)}\n{r.stdout}{r.stderr}")
            if args and args[0].startswith("--query"):
                rows = [ln.split(",") for ln in r.stdout.splitlines()[1:] if ln.strip()]
                if rows:
                    total = int(rows[0][4].strip().split()[0])
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            parts.append(f"$ nvidia-smi {' '.join(args)}\nfailed: {exc}")
    (outdir / "nvidia-smi.txt").write_text("\n".join(parts))
    return total


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    t0 = time.monotonic()
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    card = smi_text(outdir)
    log(f"card memory (nvidia-smi memory.total): {card} MiB")
    cases: list[dict] = []

    # (a) no limit: the whole card is visible; half of it allocates
    p = run_probe(outdir, "no-limit", [card // 2] if card else [1024])
    rc = finish(p)
    try:
        first = gpu.parse_probe((outdir / "no-limit.stdout").read_text())
        card = card or first.cuda.get("device_total_mib")
    except ValueError:
        pass
    plan_a = {"sharing": "none", "slice_mib": card or None, "card_mib": card, "isolated": False,
              "nvml_limited": True, "note": "no limit: the whole card"}
    cases.append(record(outdir, {"name": "no-limit", "plan": plan_a}, rc))

    # (b) and (c): CUDA MPS with a pinned device memory limit per client
    plan_2g = {"sharing": "mps", "slice_mib": 2048, "card_mib": card, "isolated": True, "nvml_limited": False,
               "note": "MPS client limited by CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G"}
    plan_1g = dict(plan_2g, slice_mib=3072, note="MPS client limited by CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G")
    env, why = mps_start(outdir) if time.monotonic() - t0 < BUDGET_S else (None, "time budget spent")
    if env is None:
        cases += [not_run("mps-2g", why, plan_2g), not_run("mps-pair-a", why, plan_2g),
                  not_run("mps-pair-b", why, plan_1g)]
    else:
        try:
            p = run_probe(outdir, "mps-2g", [1024, 3072], {**env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2G"})
            cases.append(record(outdir, {"name": "mps-2g", "plan": plan_2g}, finish(p)))
            pa = run_probe(outdir, "mps-pair-a", [1024, 3072], {**env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2G"},
                           hold=4)
            pb = run_probe(outdir, "mps-pair-b", [1536, 4608], {**env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=3G"},
                           hold=4)
            ra, rb = finish(pa), finish(pb)
            cases.append(record(outdir, {"name": "mps-pair-a", "plan": plan_2g}, ra))
            cases.append(record(outdir, {"name": "mps-pair-b", "plan": plan_1g}, rb))
        finally:
            log("MPS " + mps_stop(env))

    # (d) HAMi-core, where a libvgpu.so was built
    plan_h = {"sharing": "vgpu", "setup": "hami", "slice_mib": 2048, "card_mib": card, "isolated": True,
              "nvml_limited": True, "note": "HAMi-core libvgpu.so with CUDA_DEVICE_MEMORY_LIMIT=2048m"}
    lib = os.environ.get("VGPU_LIB")
    if time.monotonic() - t0 > BUDGET_S:
        cases.append(not_run("hami-core", "time budget spent", plan_h))
    elif not lib or not Path(lib).is_file():
        cases.append(not_run("hami-core", "set VGPU_LIB=/path/to/libvgpu.so (HAMi-core) to run this case", plan_h))
    else:
        Path("/tmp/vgpulock").mkdir(exist_ok=True)
        p = run_probe(outdir, "hami-core", [1024, 3072], {"LD_PRELOAD": lib, "CUDA_DEVICE_MEMORY_LIMIT": "2048m"})
        cases.append(record(outdir, {"name": "hami-core", "plan": plan_h}, finish(p)))

    failed = any(v["status"] == "fail" for c in cases for v in c["verdicts"])
    lines = [f"clusterproof gpu-verify: card {card} MiB, {time.monotonic() - t0:.1f}s"]
    for c in cases:
        if c["status"] != "ran":
            lines.append(f"[NOT RUN] {c['name']}: {c['reason']}")
            continue
        lines.append(f"--- {c['name']} (exit {c['rc']}): {c.get('summary', '')}")
        for v in c["verdicts"]:
            lines.append(f"  [{v['status'].upper()}] {v['check']}: {v['message']}")
    lines.append("RESULT: " + ("FAIL" if failed else "PASS (every case that ran)"))
    summary = "\n".join(lines) + "\n"
    (outdir / "summary.txt").write_text(summary)
    (outdir / "verdicts.json").write_text(json.dumps({"card_mib": card, "seconds": round(time.monotonic() - t0, 1),
                                                      "cases": cases}, indent=1))
    log(summary)
    for c in cases:
        if c["status"] == "ran":
            log(f"=== {c['name']} stdout\n{(outdir / c['stdout']).read_text().strip()}")
            err = (outdir / c["stderr"]).read_text().strip()
            if err:
                log(f"=== {c['name']} stderr\n{err}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
