#!/usr/bin/env python3
"""Verify manifests/gpu/probe.py and clusterproof.gpu's verdicts on a real NVIDIA GPU, no cluster.

    gpu-verify/verify.sh [OUTDIR] [--vgpu-lib LIB | --build-hami] [--require-hami] [--archive-to DIR]

Needs python3 and the NVIDIA driver (libcuda.so.1, nvidia-smi, nvidia-cuda-mps-control); for the
HAMi-core cases a libvgpu.so built by gpu-verify/hami_core.py (found as --vgpu-lib, $VGPU_LIB,
gpu-verify/.build/libvgpu.so or the build cache; --build-hami builds it, which needs the network or
a warm cache) and, for the exec-shell cases, root and unshare(1). No CUDA toolkit, no pip. Runs
from a checkout (it imports clusterproof.gpu). Every case is probe runs judged by the functions the
suite uses, each verdict compared with what the case expects (a negative control expects a failure):

  no-limit            the probe alone: visible total equals the card; half the card allocates
  mps-2g              an MPS client with CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G: ~2 GiB free,
                      1 GiB allocates, 3 GiB fails with CUDA_ERROR_OUT_OF_MEMORY
  mps-pair-a/-b       two MPS clients at once on the same GPU, limits 2G and 3G: each keeps its own
  mps-no-limit        an MPS client with no pinned limit judged as one of 4 replicas: must FAIL
  busy-card           a process holds most of the card; a probe with no limit, judged as a 4 GiB
                      MPS slice, sees about 4 GiB free: must NOT pass (a busy card is no limit)
  hami-<N>m           HAMi-core (LD_PRELOAD, CUDA_DEVICE_MEMORY_LIMIT_0) with limits 600m, 1024m,
                      2048m and 8192m: the slice seen by CUDA and nvidia-smi, the within-slice
                      allocation (half, or what is left beside a CUDA context; 600m is too small:
                      GPU-004 must FAIL saying so) and the over-slice one failing
  hami-pair-a/-b      two HAMi-core processes with 2048m and 3072m limits (each its own shared
                      region, as two containers) holding memory at the same time on the same GPU
  hami-pair-nolimit   the same pair where the second process's library has no limit: the pair
                      verdict must FAIL (and that member's GPU-003/005 verdicts)
  hami-no-limit       the library preloaded but no limit in the environment: must FAIL
  hami-no-lib         the limit in the environment but no library: must FAIL
  hami-exec-shell     /etc/ld.so.preload names the library (private mount namespace); the probe
                      runs from `sh -c` with LD_PRELOAD unset, as in a kubectl exec shell: limited
  hami-exec-env-only  the same shell where only the container's LD_PRELOAD carried the library:
                      must FAIL naming /etc/ld.so.preload

OUTDIR (default gpu-verify/recorded/<date>-<gpu>) gets <case>.stdout/.stderr (the probe's raw
output), verdicts.json (cases, plans, expectations, verdicts, the library's provenance:
tests/test_gpu_verdicts.py re-judges recordings with it), nvidia-smi.txt, mps-log/ and summary.txt;
--archive-to DIR also writes DIR/<OUTDIR name>.tar.gz (one file, for machines that return few).
Exit 0 when every verdict is what its case expects (with --require-hami, the HAMi-core cases other
than the exec-shell ones must also have run), 1 otherwise, 2 on bad usage. Finishes in about 3
minutes on an H200 (a probe run is limited to 60 s, MPS start/stop to 20 s, and no case starts
after 300 s).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterproof import gpu  # noqa: E402 - after the path is set

PROBE = ROOT / "manifests" / "gpu" / "probe.py"
RUN_TIMEOUT = 60          # one probe run
BUDGET_S = 300            # no new case starts after this
HAMI_SIZES = (600, 1024, 2048, 8192)
# GPU_VERIFY_TIME_SCALE shortens the waits (the project's tests run this script against a stand-in driver).
SCALE = float(os.environ.get("GPU_VERIFY_TIME_SCALE", "1"))
PAIR_LEAD_S, PAIR_HOLD_S = 8.0 * SCALE, 4.0 * SCALE
BUSY_HOLD_S, BUSY_WAIT_S = 20.0 * SCALE, 8.0 * SCALE
BUSY_SLICE_MIB = 4096
# Environment a case must not inherit from the machine running the script.
SCRUB = ("LD_PRELOAD", "CUDA_DEVICE_MEMORY_LIMIT", "CUDA_DEVICE_MEMORY_SHARED_CACHE", "CUDA_DEVICE_SM_LIMIT",
         "CUDA_MPS_", "CUDA_REDIRECT", "CUDA_OVERSUBSCRIBE", "CUDA_VISIBLE_DEVICES")
CHECKS = {"visible memory": gpu.visible_memory, "half the slice allocates": gpu.half_slice_allocates,
          "over the slice fails": gpu.over_slice_fails}


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ judging (also used on recordings)

def plan_from(d: dict) -> gpu.Plan:
    return gpu.Plan(node="local", setup=d.get("setup", "nvidia"), sharing=d["sharing"], resources={},
                    slice_mib=d.get("slice_mib"), isolated=d["isolated"], card_mib=d.get("card_mib"),
                    nvml_limited=d.get("nvml_limited", True), note=d.get("note", ""), replicas=d.get("replicas"),
                    limit_source=d.get("limit_source", ""))


def _entry(name: str, v, expect: dict) -> dict:
    # Here a missing CUDA device is a failure (as under --require-gpu): this script exists to use one.
    v = gpu.under_require_gpu(v, require_gpu=True)
    want = expect.get(name, "pass")
    return {"check": name, "status": str(v.status), "expect": want, "as_expected": matches(str(v.status), want),
            "message": v.message}


def matches(status: str, want: str) -> bool:
    return want == "any" or status == want or (want == "not-pass" and status in ("fail", "skip"))


def judge(case: dict, out: gpu.ProbeOutput) -> list[dict]:
    """The suite's verdicts for one probe run, as GPU-003..005 reach them for a pod's process."""
    plan = plan_from(case["plan"])
    expect = case.get("expect") or {}
    names = ["visible memory", "half the slice allocates"]
    if plan.over_mib:
        names.append("over the slice fails")
    res = []
    for name in names:
        fn = CHECKS[name]
        if case.get("kind") == "shell" and name != "half the slice allocates":
            v = gpu.every_process(fn, {gpu.EXEC_SHELL: out}, plan, case["name"])
        else:
            v = fn(out, plan, case["name"])
        res.append(_entry(name, v, expect))
    return res


def judge_pair(pair: dict, outs: dict[str, gpu.ProbeOutput], plans: dict[str, dict]) -> list[dict]:
    """GPU-006's verdict for processes that ran at once: same GPU by UUID, overlap by time stamps, own limits."""
    same, gpus = gpu.same_gpu(dict(outs))
    v = gpu.pair_keeps_limits(outs, {n: plan_from(plans[n]) for n in outs}, same, gpus)
    return [_entry("each keeps its own limit at the same time", v, pair.get("expect") or {})]


def rejudge(path: Path) -> list[str]:
    """Judge a recording's raw probe outputs again with today's logic: where a verdict's status changed."""
    rec = json.loads(path.read_text())
    outs: dict[str, gpu.ProbeOutput] = {}
    diffs = []
    for case in rec["cases"]:
        if case.get("status") != "ran":
            continue
        stdout = (path.parent / case["stdout"]).read_text()
        err = path.parent / case.get("stderr", "")
        try:
            out = gpu.parse_probe(stdout, err.read_text() if err.is_file() else "")
        except ValueError:
            continue
        outs[case["name"]] = out
        now = [v["status"] for v in judge(case, out)]
        then = [v["status"] for v in case["verdicts"]]
        if now != then:
            diffs.append(f"{path.parent.name}/{case['name']}: recorded {then}, now {now}")
    plans = {c["name"]: c["plan"] for c in rec["cases"]}
    for pair in rec.get("pairs", []):
        if pair.get("status") != "ran" or not all(m in outs for m in pair["members"]):
            continue
        now = [v["status"] for v in judge_pair(pair, {m: outs[m] for m in pair["members"]}, plans)]
        then = [v["status"] for v in pair["verdicts"]]
        if now != then:
            diffs.append(f"{path.parent.name}/{pair['name']}: recorded {then}, now {now}")
    return diffs


# ------------------------------------------------------------------ running probes

def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}


def run_probe(outdir: Path, name: str, args: list[str], env: dict[str, str] | None = None, shell: bool = False,
              preload_file: Path | None = None) -> subprocess.Popen:
    """Start the probe as one case's process: its env on top of a scrubbed one; shell=True as from a
    kubectl exec shell (sh -c, LD_PRELOAD unset); preload_file bound over /etc/ld.so.preload in a private
    mount namespace (root and unshare needed)."""
    argv = [sys.executable, str(PROBE), "--label", name, *args]
    if shell:
        argv = gpu.exec_shell_argv(argv)
    if preload_file is not None:
        argv = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                'mount --bind "$0" /etc/ld.so.preload && exec "$@"', str(preload_file), *argv]
    full = {**base_env(), **(env or {})}
    stdout = (outdir / f"{name}.stdout").open("w")
    stderr = (outdir / f"{name}.stderr").open("w")
    p = subprocess.Popen(argv, env=full, stdout=stdout, stderr=stderr)
    p._files = (stdout, stderr)  # type: ignore[attr-defined]
    return p


def finish(p: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> int | None:
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        rc = None
    for f in p._files:  # type: ignore[attr-defined]
        f.close()
    return rc


def read_out(outdir: Path, name: str) -> gpu.ProbeOutput | None:
    try:
        return gpu.parse_probe((outdir / f"{name}.stdout").read_text(), (outdir / f"{name}.stderr").read_text())
    except (ValueError, OSError):
        return None


def record(outdir: Path, case: dict, rc: int | None) -> dict:
    name = case["name"]
    case.update(stdout=f"{name}.stdout", stderr=f"{name}.stderr", rc=rc, status="ran")
    try:
        out = gpu.parse_probe((outdir / case["stdout"]).read_text(), (outdir / case["stderr"]).read_text())
    except ValueError as exc:
        case["verdicts"] = [{"check": "probe output", "status": "fail", "expect": "pass", "as_expected": False,
                             "message": str(exc)}]
        return case
    case["summary"] = out.summary()
    case["verdicts"] = judge(case, out)
    return case


def not_run(name: str, why: str, plan: dict, **extra) -> dict:
    return {"name": name, "status": "not-run", "reason": why, "plan": plan, "verdicts": [], **extra}


# ------------------------------------------------------------------ the machine

def smi_text(outdir: Path) -> tuple[int | None, str]:
    """nvidia-smi's view for the record; returns the card's memory.total in MiB and its name."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        (outdir / "nvidia-smi.txt").write_text("nvidia-smi not found\n")
        return None, ""
    parts = []
    total, name = None, ""
    for args in (["-L"], ["--query-gpu=index,name,uuid,driver_version,memory.total,memory.used,compute_mode,"
                          "mig.mode.current", "--format=csv"], []):
        try:
            r = subprocess.run([smi, *args], capture_output=True, text=True, timeout=30, check=False)
            parts.append(f"$ nvidia-smi {' '.join(args)}\n{r.stdout}{r.stderr}")
            if args and args[0].startswith("--query"):
                rows = [ln.split(",") for ln in r.stdout.splitlines()[1:] if ln.strip()]
                if rows:
                    name = rows[0][1].strip()
                    total = int(rows[0][4].strip().split()[0])
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            parts.append(f"$ nvidia-smi {' '.join(args)}\nfailed: {exc}")
    (outdir / "nvidia-smi.txt").write_text("\n".join(parts))
    return total, name


def card_free_now() -> int | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        r = subprocess.run([smi, "--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=30, check=False)
        total, used = (int(float(x)) for x in r.stdout.splitlines()[0].split(","))
        return total - used
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def gpu_slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")
    return slug or "gpu"


def default_outdir(gpu_name: str) -> Path:
    base = ROOT / "gpu-verify" / "recorded" / f"{dt.date.today().isoformat()}-{gpu_slug(gpu_name)}"
    out, n = base, 2
    while out.exists():
        out = base.with_name(f"{base.name}-{n}")
        n += 1
    return out


def mps_start(outdir: Path) -> tuple[dict[str, str] | None, str]:
    ctl = shutil.which("nvidia-cuda-mps-control")
    if not ctl:
        return None, "nvidia-cuda-mps-control not found (driver utilities not installed)"
    pipe = Path(tempfile.mkdtemp(prefix="cp-mps-pipe-"))
    logd = outdir / "mps-log"
    logd.mkdir(exist_ok=True)
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logd)}
    try:
        r = subprocess.run([ctl, "-d"], env={**base_env(), **env}, capture_output=True, text=True, timeout=20,
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
        r = subprocess.run([ctl], input="quit\n", env={**base_env(), **env},
                           capture_output=True, text=True, timeout=20, check=False)
        msg = f"quit: exit {r.returncode} {r.stdout.strip()} {r.stderr.strip()}".strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"quit failed: {exc}"
    time.sleep(1.0)
    shutil.rmtree(env["CUDA_MPS_PIPE_DIRECTORY"], ignore_errors=True)
    return msg


# ------------------------------------------------------------------ HAMi-core

def _hami_core():
    from importlib import util

    spec = util.spec_from_file_location("hami_core", Path(__file__).resolve().parent / "hami_core.py")
    assert spec and spec.loader
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def find_vgpu_lib(arg: str | None, build: bool) -> tuple[Path | None, dict, str]:
    """The libvgpu.so to use, its provenance, and why there is none."""
    hc = _hami_core()
    cands = [arg, os.environ.get("VGPU_LIB"), str(ROOT / "gpu-verify" / ".build" / "libvgpu.so"),
             str(hc.CACHE / f"build-{hc.cache_key()}" / "libvgpu.so")]
    lib = next((Path(c) for c in cands if c and Path(c).is_file()), None)
    if lib is None and build:
        try:
            lib = hc.build(echo=log)
        except (hc.InputUnavailable, hc.BuildError) as exc:
            return None, {}, f"building libvgpu.so failed: {exc}"
    if lib is None:
        return None, {}, ("no libvgpu.so: build it first (python3 gpu-verify/hami_core.py build --out "
                          "gpu-verify/.build), pass --vgpu-lib, or --build-hami")
    meta = hc.provenance(lib)
    try:
        meta["exports_now"] = hc.check(lib)
    except hc.BuildError as exc:
        return None, meta, f"{lib} cannot isolate: {exc}"
    except hc.InputUnavailable as exc:
        meta["exports_now"] = f"not checked: {exc}"
    return lib, meta, ""


def hami_plan(slice_mib: int, card: int | None, note: str = "") -> dict:
    return {"sharing": "vgpu", "setup": "hami", "slice_mib": slice_mib, "card_mib": card, "isolated": True,
            "nvml_limited": True, "note": note or f"HAMi-core libvgpu.so with CUDA_DEVICE_MEMORY_LIMIT_0={slice_mib}m"}


def hami_env(lib: Path | None, limit: int | None, cache: Path, name: str) -> dict[str, str]:
    """A HAMi container's env as its device plugin sets it: the limit, its own shared region; the library."""
    env = {"CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache / f"{name}.cache"), "CUDA_DEVICE_SM_LIMIT": "0"}
    if limit:
        env["CUDA_DEVICE_MEMORY_LIMIT_0"] = f"{limit}m"
    if lib is not None:
        env.update(LD_PRELOAD=str(lib), CUDA_REDIRECT=str(lib))
    return env


def namespace_ready() -> str:
    """Why /etc/ld.so.preload cannot be replaced in a private mount namespace here ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root (a private mount namespace to bind a file over /etc/ld.so.preload)"
    if not shutil.which("unshare"):
        return "unshare(1) not found (util-linux)"
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                           text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --mount: {exc}"
    return "" if r.returncode == 0 else f"unshare --mount exited {r.returncode}: {r.stderr.strip()[:200]}"


def run_hami(outdir: Path, lib: Path | None, why: str, card: int | None, t0: float) -> tuple[list[dict], list[dict]]:
    cases: list[dict] = []
    pairs: list[dict] = []
    sizes = [(f"hami-{m}m", m) for m in HAMI_SIZES]
    pair_plans = {"hami-pair-a": hami_plan(2048, card), "hami-pair-b": hami_plan(3072, card)}
    negative = {"hami-no-limit": ({"visible memory": "fail", "over the slice fails": "fail"},
                                  "libvgpu.so preloaded, no CUDA_DEVICE_MEMORY_LIMIT in the environment"),
                "hami-no-lib": ({"visible memory": "fail", "over the slice fails": "fail"},
                                "CUDA_DEVICE_MEMORY_LIMIT_0=2048m in the environment, libvgpu.so not loaded")}
    shells = {"hami-exec-shell": ({}, "/etc/ld.so.preload names libvgpu.so; sh -c with LD_PRELOAD unset"),
              "hami-exec-env-only": ({"visible memory": "fail", "over the slice fails": "fail"},
                                     "only LD_PRELOAD carried libvgpu.so; sh -c with LD_PRELOAD unset")}

    def expect_for(m: int) -> dict:
        # A slice too small for a CUDA context plus half of it: GPU-004 must fail, saying so.
        return {"half the slice allocates": "fail"} if plan_from(hami_plan(m, card)).within_mib is None else {}

    if lib is None:
        for name, m in sizes:
            cases.append(not_run(name, why, hami_plan(m, card), expect=expect_for(m)))
        for name, plan in pair_plans.items():
            cases.append(not_run(name, why, plan))
        pairs.append({"name": "hami-pair", "members": list(pair_plans), "status": "not-run", "reason": why,
                      "verdicts": []})
        cases.append(not_run("hami-pair-nolimit-a", why, hami_plan(2048, card)))
        cases.append(not_run("hami-pair-nolimit-b", why, hami_plan(3072, card)))
        pairs.append({"name": "hami-pair-nolimit", "members": ["hami-pair-nolimit-a", "hami-pair-nolimit-b"],
                      "status": "not-run", "reason": why, "verdicts": []})
        for name, (exp, note) in {**negative, **shells}.items():
            cases.append(not_run(name, why, hami_plan(2048, card, note), expect=exp,
                                 kind="shell" if name in shells else "single"))
        return cases, pairs
    Path("/tmp/vgpulock").mkdir(exist_ok=True)
    caches = Path(tempfile.mkdtemp(prefix="cp-vgpu-cache-"))

    def late() -> bool:
        return time.monotonic() - t0 > BUDGET_S

    for name, m in sizes:
        plan = hami_plan(m, card)
        if late():
            cases.append(not_run(name, "time budget spent", plan))
            continue
        args = [x for a in plan_from(plan).probe_allocs() for x in ("--alloc-mib", str(a))]
        p = run_probe(outdir, name, args, hami_env(lib, m, caches, name))
        cases.append(record(outdir, {"name": name, "kind": "single", "plan": plan, "expect": expect_for(m)},
                            finish(p)))
    # Two processes with different limits on the same GPU, each with its own shared region, holding at once; then
    # the negative pair: the second member's library gets no limit, so it must not keep a 3072m slice.
    bad_pair = {"hami-pair-nolimit-a": hami_plan(2048, card),
                "hami-pair-nolimit-b": hami_plan(3072, card, "libvgpu.so preloaded, no CUDA_DEVICE_MEMORY_LIMIT")}
    bad_expect = {"visible memory": "fail", "over the slice fails": "fail"}
    for pair_name, plans, limits, member_expect, pair_expect in (
            ("hami-pair", pair_plans, {n: p["slice_mib"] for n, p in pair_plans.items()}, {}, {}),
            ("hami-pair-nolimit", bad_pair, {"hami-pair-nolimit-a": 2048, "hami-pair-nolimit-b": None},
             {"hami-pair-nolimit-b": bad_expect}, {"each keeps its own limit at the same time": "fail"})):
        if late():
            for name, plan in plans.items():
                cases.append(not_run(name, "time budget spent", plan, expect=member_expect.get(name)))
            continue
        procs = {name: run_probe(outdir, name, plan_from(plan).pair_probe_args(PAIR_LEAD_S, PAIR_HOLD_S),
                                 hami_env(lib, limits[name], caches, name)) for name, plan in plans.items()}
        rcs = {name: finish(p, RUN_TIMEOUT + PAIR_LEAD_S + PAIR_HOLD_S) for name, p in procs.items()}
        outs = {}
        for name, plan in plans.items():
            cases.append(record(outdir, {"name": name, "kind": "single", "plan": plan, "pair": pair_name,
                                         "expect": member_expect.get(name, {})}, rcs[name]))
            out = read_out(outdir, name)
            if out is not None:
                outs[name] = out
        pair = {"name": pair_name, "members": list(plans), "status": "ran", "expect": pair_expect}
        pair["verdicts"] = judge_pair(pair, outs, plans) if len(outs) == 2 else [
            {"check": "each keeps its own limit at the same time", "status": "fail", "expect": "pass",
             "as_expected": False, "message": "a member gave no probe output"}]
        pairs.append(pair)
    for name, (exp, note) in negative.items():
        plan = hami_plan(2048, card, note)
        if late():
            cases.append(not_run(name, "time budget spent", plan, expect=exp))
            continue
        env = hami_env(lib if name == "hami-no-limit" else None, 2048 if name == "hami-no-lib" else None, caches,
                       name)
        args = [x for a in plan_from(plan).probe_allocs() for x in ("--alloc-mib", str(a))]
        p = run_probe(outdir, name, args, env)
        cases.append(record(outdir, {"name": name, "kind": "single", "plan": plan, "expect": exp}, finish(p)))
    ns_why = namespace_ready()
    created = False
    preload = Path("/etc/ld.so.preload")
    try:
        for name, (exp, note) in shells.items():
            plan = hami_plan(2048, card, note)
            if ns_why or late():
                cases.append(not_run(name, ns_why or "time budget spent", plan, expect=exp, kind="shell"))
                continue
            if not preload.exists():
                preload.touch()         # an empty file to bind over, in our namespace only; removed below
                created = True
            content = caches / f"{name}.ld.so.preload"
            content.write_text(f"{lib}\n" if name == "hami-exec-shell" else "")
            args = [x for a in plan_from(plan).probe_allocs() for x in ("--alloc-mib", str(a))]
            p = run_probe(outdir, name, args, hami_env(lib, 2048, caches, name), shell=True, preload_file=content)
            cases.append(record(outdir, {"name": name, "kind": "shell", "plan": plan, "expect": exp}, finish(p)))
    finally:
        if created and preload.exists() and preload.stat().st_size == 0:
            preload.unlink()
    shutil.rmtree(caches, ignore_errors=True)
    return cases, pairs


# ------------------------------------------------------------------ MPS and the plain card

def run_plain_and_mps(outdir: Path, card: int | None, t0: float) -> tuple[list[dict], list[dict], int | None]:
    cases: list[dict] = []
    pairs: list[dict] = []
    # (a) no limit: the whole card is visible; half of it allocates
    p = run_probe(outdir, "no-limit", ["--alloc-mib", str(card // 2 if card else 1024)])
    rc = finish(p)
    first = read_out(outdir, "no-limit")
    if first is not None:
        card = card or first.cuda.get("device_total_mib")
    plan_a = {"sharing": "none", "slice_mib": card or None, "card_mib": card, "isolated": False,
              "nvml_limited": True, "note": "no limit: the whole card"}
    cases.append(record(outdir, {"name": "no-limit", "kind": "single", "plan": plan_a}, rc))

    # (b) a busy card: a holder takes all but about BUSY_SLICE_MIB; a probe with no limit judged as an MPS slice
    plan_busy = {"sharing": "mps", "slice_mib": BUSY_SLICE_MIB, "card_mib": card, "isolated": True,
                 "nvml_limited": False, "limit_source": "a claimed 4096 MiB slice (no limit is set: a busy card)",
                 "note": "no limit; another process holds all but about 4 GiB of the card"}
    busy_expect = {"visible memory": "not-pass", "half the slice allocates": "any", "over the slice fails": "not-pass"}
    free = card_free_now()
    if free is None or free < 4 * BUSY_SLICE_MIB:
        cases.append(not_run("busy-card", f"cannot size the holder: card free {free} MiB", plan_busy,
                             expect=busy_expect))
    else:
        hold = free - 600 - 2 * gpu.CONTEXT_MIB - (BUSY_SLICE_MIB - 200)
        holder = run_probe(outdir, "busy-card-holder", ["--hold-mib", str(hold), "--hold-s", f"{BUSY_HOLD_S:g}",
                                                        "--no-smi"])
        time.sleep(BUSY_WAIT_S)
        allocs = [x for a in plan_from(plan_busy).probe_allocs() for x in ("--alloc-mib", str(a))]
        victim = run_probe(outdir, "busy-card", allocs)
        rc = finish(victim)
        finish(holder, RUN_TIMEOUT + BUSY_HOLD_S)
        h, v = read_out(outdir, "busy-card-holder"), read_out(outdir, "busy-card")
        tl = (h.data.get("timeline") if h else None) or {}
        ctx_t = ((v.data.get("timeline") if v else None) or {}).get("ctx")
        held_ok = bool(h and all(x.get("rc") == 0 for x in h.data.get("held", [])))
        if not (held_ok and tl.get("held") and ctx_t and tl["held"] <= ctx_t <= tl.get("released", 0)):
            cases.append(not_run("busy-card", f"the holder did not hold {hold} MiB while the probe ran "
                                 f"(holder: {h.summary() if h else 'no output'})", plan_busy, expect=busy_expect))
        else:
            holder_rec = {"mib": hold, "stdout": "busy-card-holder.stdout", "summary": h.summary() if h else ""}
            cases.append(record(outdir, {"name": "busy-card", "kind": "single", "plan": plan_busy,
                                         "expect": busy_expect, "holder": holder_rec}, rc))

    # (c) CUDA MPS with a pinned device memory limit per client, and one without
    plan_2g = {"sharing": "mps", "slice_mib": 2048, "card_mib": card, "isolated": True, "nvml_limited": False,
               "note": "MPS client limited by CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G"}
    plan_3g = dict(plan_2g, slice_mib=3072, note="MPS client limited by CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G")
    plan_none = {"sharing": "mps", "slice_mib": None, "replicas": 4, "card_mib": card, "isolated": True,
                 "nvml_limited": False, "note": "MPS client with no pinned limit, judged as one of 4 replicas"}
    env, why = mps_start(outdir) if time.monotonic() - t0 < BUDGET_S else (None, "time budget spent")
    if env is None:
        cases += [not_run("mps-2g", why, plan_2g), not_run("mps-pair-a", why, plan_2g),
                  not_run("mps-pair-b", why, plan_3g),
                  not_run("mps-no-limit", why, plan_none, expect={"visible memory": "fail"})]
    else:
        try:
            p = run_probe(outdir, "mps-2g", ["--alloc-mib", "1024", "--alloc-mib", "3072"],
                          {**env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2G"})
            cases.append(record(outdir, {"name": "mps-2g", "kind": "single", "plan": plan_2g}, finish(p)))
            pa = run_probe(outdir, "mps-pair-a", plan_from(plan_2g).pair_probe_args(PAIR_LEAD_S, PAIR_HOLD_S),
                           {**env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2G"})
            pb = run_probe(outdir, "mps-pair-b", plan_from(plan_3g).pair_probe_args(PAIR_LEAD_S, PAIR_HOLD_S),
                           {**env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=3G"})
            wait = RUN_TIMEOUT + PAIR_LEAD_S + PAIR_HOLD_S
            ra, rb = finish(pa, wait), finish(pb, wait)
            cases.append(record(outdir, {"name": "mps-pair-a", "kind": "single", "plan": plan_2g,
                                         "pair": "mps-pair"}, ra))
            cases.append(record(outdir, {"name": "mps-pair-b", "kind": "single", "plan": plan_3g,
                                         "pair": "mps-pair"}, rb))
            outs = {n: o for n in ("mps-pair-a", "mps-pair-b") if (o := read_out(outdir, n)) is not None}
            pair = {"name": "mps-pair", "members": ["mps-pair-a", "mps-pair-b"], "status": "ran"}
            pair["verdicts"] = judge_pair(pair, outs, {"mps-pair-a": plan_2g, "mps-pair-b": plan_3g}) \
                if len(outs) == 2 else []
            pairs.append(pair)
            p = run_probe(outdir, "mps-no-limit", ["--alloc-mib", "1024"], env)
            cases.append(record(outdir, {"name": "mps-no-limit", "kind": "single", "plan": plan_none,
                                         "expect": {"visible memory": "fail"}}, finish(p)))
        finally:
            log("MPS " + mps_stop(env))
    return cases, pairs, card


def summarize(cases: list[dict], pairs: list[dict], card: int | None, seconds: float, require_hami: bool
              ) -> tuple[str, bool]:
    lines = [f"clusterproof gpu-verify: card {card} MiB, {seconds:.1f}s"]
    ok = True
    for c in [*cases, *pairs]:
        if c["status"] != "ran":
            lines.append(f"[NOT RUN] {c['name']}: {c['reason']}")
            if require_hami and c["name"].startswith("hami") and c.get("kind") != "shell":
                ok = False          # the exec-shell cases need root and unshare(1): reported, not required
            continue
        head = f"--- {c['name']}" + (f" (exit {c['rc']}): {c.get('summary', '')}" if "rc" in c else
                                     f" ({', '.join(c.get('members', []))} at once)")
        lines.append(head)
        for v in c["verdicts"]:
            if not v.get("as_expected", True):
                tag = f"{v['status'].upper()}, EXPECTED {v['expect'].upper()}"
            else:
                tag = v["status"].upper() + (", as expected" if v["status"] != "pass" else "")
            lines.append(f"  [{tag}] {v['check']}: {v['message']}")
            ok = ok and v.get("as_expected", v["status"] == "pass")
    lines.append("RESULT: " + ("PASS (every verdict as its case expects)" if ok else "FAIL"))
    return "\n".join(lines) + "\n", ok


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="verify.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", nargs="?", type=Path, help="Where the run is recorded (default "
                    "gpu-verify/recorded/<date>-<gpu>)")
    ap.add_argument("--vgpu-lib", help="HAMi-core's libvgpu.so (default $VGPU_LIB, gpu-verify/.build, the cache)")
    ap.add_argument("--build-hami", action="store_true", help="Build libvgpu.so first when none is found")
    ap.add_argument("--require-hami", action="store_true", help="Fail when the HAMi-core cases could not run")
    ap.add_argument("--archive-to", type=Path, help="Also write the recording as one .tar.gz into this folder")
    try:
        args = ap.parse_args(argv)
    except SystemExit:
        return 2
    t0 = time.monotonic()
    tmp_out = Path(tempfile.mkdtemp(prefix="cp-gpu-verify-"))
    card, name = smi_text(tmp_out)
    outdir = args.outdir or default_outdir(name)
    outdir.mkdir(parents=True, exist_ok=True)
    for f in tmp_out.iterdir():
        shutil.move(str(f), outdir / f.name)
    tmp_out.rmdir()
    log(f"card: {name or '?'}, memory.total {card} MiB; recording into {outdir}")
    lib, meta, why = find_vgpu_lib(args.vgpu_lib, args.build_hami)
    log(f"HAMi-core: {lib or why}")
    cases, pairs, card = run_plain_and_mps(outdir, card, t0)
    hcases, hpairs = run_hami(outdir, lib, why, card, t0)
    cases += hcases
    pairs += hpairs
    seconds = time.monotonic() - t0
    summary, ok = summarize(cases, pairs, card, seconds, args.require_hami)
    (outdir / "summary.txt").write_text(summary)
    (outdir / "verdicts.json").write_text(json.dumps({
        "card_mib": card, "gpu": name, "seconds": round(seconds, 1), "probe_version": 2,
        "hami_core": {"lib": str(lib) if lib else None, "why_not": why, **meta}, "cases": cases, "pairs": pairs},
        indent=1))
    log(summary)
    for c in cases:
        if c["status"] == "ran":
            log(f"=== {c['name']} stdout\n{(outdir / c['stdout']).read_text().strip()}")
            err = (outdir / c["stderr"]).read_text().strip()
            if err:
                log(f"=== {c['name']} stderr (last 40 lines)\n" + "\n".join(err.splitlines()[-40:]))
    if args.archive_to:
        args.archive_to.mkdir(parents=True, exist_ok=True)
        target = args.archive_to / f"{outdir.name}.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            tar.add(outdir, arcname=outdir.name)
        log(f"archived to {target}")
    log(f"recorded in {outdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
