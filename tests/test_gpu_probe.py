"""manifests/gpu/probe.py end to end against a stand-in libcuda.so.1 and nvidia-smi (no GPU needed).

The stand-in is compiled here from C with the driver API's real signatures, so the probe's ctypes
calls (pointer and size_t arguments, the call order) are exercised as they would be on libcuda;
what the real driver answers is verified by gpu-verify/ on a GPU.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clusterproof import gpu

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "manifests" / "gpu" / "probe.py"
FAKE_CUDA = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
typedef int CUresult; typedef int CUdevice; typedef void *CUcontext; typedef unsigned long long CUdeviceptr;
static size_t used = 300u << 20;            /* the context's own share, as HAMi-core counts it */
static size_t sizes[64]; static int nsizes;
static size_t limit_bytes;                  /* the stand-in's HAMi-core: a limit only where a *vgpu* lib is mapped */
static size_t card(void) { const char *e = getenv("FAKE_CUDA_TOTAL_MIB"); return (size_t)(e ? atoll(e) : 1024) << 20; }
static int hooked(void) {
    char line[4096]; int found = 0; FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        char *slash = strrchr(line, '/');
        if (slash && strstr(slash, "vgpu")) found = 1;
    }
    fclose(f); return found;
}
static size_t total(void) { return limit_bytes && limit_bytes < card() ? limit_bytes : card(); }
CUresult cuInit(unsigned flags) {
    const char *l = getenv("CUDA_DEVICE_MEMORY_LIMIT_0");
    if (!l) l = getenv("CUDA_DEVICE_MEMORY_LIMIT");
    if (l && hooked()) limit_bytes = (size_t)atoll(l) << 20;            /* "2048m" */
    return getenv("FAKE_CUDA_NO_DEVICE") ? 100 : 0;
}
CUresult cuDeviceGetCount(int *c) { *c = 1; return 0; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }
CUresult cuDeviceGetName(char *n, int len, CUdevice d) { strncpy(n, "Fake GPU", len); return 0; }
CUresult cuDeviceGetUuid_v2(char *u, CUdevice d) {
    const char *e = getenv("FAKE_CUDA_UUID_BYTE");
    static const unsigned char id[16] = {0x5a, 0x9c, 0x7f, 0x1e, 0x3b, 0x2d, 0x4c, 0x8e,
                                         0x9f, 0x61, 0x0d, 0x2e, 0x7a, 0x4b, 0x8c, 0x13};
    memcpy(u, id, 16); if (e) u[15] = (char)atoi(e); return 0;
}
CUresult cuDeviceGetPCIBusId(char *b, int len, CUdevice d) { strncpy(b, "0000:1B:00.0", len); return 0; }
CUresult cuDeviceTotalMem_v2(size_t *b, CUdevice d) { *b = card(); return 0; }
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { *c = (void *)0x1; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { return 0; }
CUresult cuCtxSetCurrent(CUcontext c) { return c == (void *)0x1 ? 0 : 201; }
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { *t = total(); *f = total() - used; return 0; }
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    if (used + n > total() || nsizes == 64) return 2;
    used += n; sizes[nsizes] = n; *p = 0x10000 + nsizes++; return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    int i = (int)(p - 0x10000);
    if (i < 0 || i >= nsizes || !sizes[i]) return 1;
    used -= sizes[i]; sizes[i] = 0; return 0;
}
CUresult cuGetErrorName(CUresult r, const char **s) {
    *s = r == 0 ? "CUDA_SUCCESS" : r == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : r == 100 ? "CUDA_ERROR_NO_DEVICE"
       : "CUDA_ERROR_UNKNOWN";
    return 0;
}
"""
# nvidia-smi: the card, or the limit where the shell running it has a *vgpu* library mapped (HAMi-core's NVML hook)
FAKE_SMI = r"""#!/bin/sh
total=${FAKE_CUDA_TOTAL_MIB:-1024}
lim=${CUDA_DEVICE_MEMORY_LIMIT_0:-$CUDA_DEVICE_MEMORY_LIMIT}
if [ -n "$lim" ] && grep -q '/[^/]*vgpu[^/]*$' /proc/$$/maps 2>/dev/null; then total=${lim%m}; fi
used=${FAKE_SMI_USED_MIB:-0}
uuid=GPU-5a9c7f1e-3b2d-4c8e-9f61-0d2e7a4b8c13
case "$*" in
  *-L*) echo "GPU 0: Fake GPU (UUID: $uuid)";;
  *--query-gpu=index,uuid,name,memory.total,memory.used*) echo "0, $uuid, Fake GPU, $total, $used";;
  *--query-gpu=memory.total,memory.used*) echo "$total, $used";;
  *--query-gpu=index,name,uuid*)
    echo "index, name, uuid, driver_version, memory.total [MiB], memory.used [MiB], compute_mode, mig.mode.current"
    echo "0, Fake GPU, $uuid, 1.0, $total MiB, $used MiB, Default, [N/A]";;
  *) echo "Fake GPU $total MiB";;
esac
"""
# A stand-in libvgpu.so: exports HAMi-core's hook names (so gpu-verify's export check passes) and forwards dlsym;
# the stand-in libcuda above enforces the limit wherever such a library is mapped.
FAKE_VGPU = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
void *dlsym(void *h, const char *s) {
    static void *(*real)(void *, const char *);
    if (!real) real = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (!real) real = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    return real(h, s);
}
#define HOOK(n) int n(void) { return 999; }
HOOK(cuInit) HOOK(cuDeviceTotalMem_v2) HOOK(cuGetProcAddress) HOOK(cuMemAlloc_v2) HOOK(cuMemFree_v2)
HOOK(cuMemGetInfo_v2) HOOK(nvmlInit_v2) HOOK(nvmlDeviceGetMemoryInfo) HOOK(nvmlDeviceGetMemoryInfo_v2)
"""


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory) -> Path:
    """A folder with a stand-in libcuda.so.1, nvidia-smi and HAMi-core libvgpu.so."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build the stand-in libcuda.so.1 (apt-get install gcc)")
    d = tmp_path_factory.mktemp("fakecuda")
    (d / "cuda.c").write_text(FAKE_CUDA)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "libcuda.so.1"), str(d / "cuda.c")], check=True,
                   timeout=120)
    (d / "vgpu.c").write_text(FAKE_VGPU)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "libvgpu.so"), str(d / "vgpu.c"), "-ldl"], check=True,
                   timeout=120)
    smi = d / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    return d


def driver_env(driver: Path, **env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "LD_PRELOAD"))}
    return {**clean, "LD_LIBRARY_PATH": str(driver), "PATH": f"{driver}:{os.environ['PATH']}", **env}


def run_probe(driver: Path, *args: str, argv: list[str] | None = None, **env: str) -> gpu.ProbeOutput:
    argv = argv or [sys.executable, str(PROBE), *args]
    p = subprocess.run(argv, capture_output=True, text=True, env=driver_env(driver, **env), timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().splitlines()) == 1, "the probe prints exactly one line"
    return gpu.parse_probe(p.stdout, p.stderr)


def test_probe_reads_the_limit_and_allocates(fake_driver):
    out = run_probe(fake_driver, "--alloc-mib", "1024", "--alloc-mib", "3072", FAKE_CUDA_TOTAL_MIB="2048",
                    CUDA_DEVICE_MEMORY_LIMIT_0="2048m")
    assert out.cuda["name"] == "Fake GPU" and out.cuda["device_total_mib"] == 2048
    assert out.cuda["uuid"] == "GPU-5a9c7f1e-3b2d-4c8e-9f61-0d2e7a4b8c13" and out.cuda["pci_bus_id"] == "0000:1B:00.0"
    assert (out.cuda_total_mib, out.cuda["free_mib"], out.smi_total_mib) == (2048, 1748, 2048)
    assert [(a["mib"], a["result"]) for a in out.data["allocs"]] == [(1024, "CUDA_SUCCESS"),
                                                                    (3072, "CUDA_ERROR_OUT_OF_MEMORY")]
    assert out.data["allocs"][0]["free_rc"] == 0
    assert out.data["env"]["CUDA_DEVICE_MEMORY_LIMIT_0"] == "2048m"
    plan = gpu.Plan("n", "hami", "vgpu", {}, 2048, True, 81559, True)
    assert [f(out, plan).status for f in (gpu.visible_memory, gpu.half_slice_allocates, gpu.over_slice_fails)] == [
        "pass", "pass", "pass"]


def test_probe_without_a_device_says_so(fake_driver):
    out = run_probe(fake_driver, "--alloc-mib", "1024", FAKE_CUDA_NO_DEVICE="1")
    assert out.no_cuda() == "init failed: CUDA_ERROR_NO_DEVICE (100)"
    assert out.data["allocs"] == [{"mib": 1024, "rc": None, "result": "NOT_RUN"}]


def test_probe_without_libcuda_says_so():
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    p = subprocess.run([sys.executable, str(PROBE), "--no-smi"], capture_output=True, text=True, env=env, timeout=60,
                       check=False)
    out = gpu.parse_probe(p.stdout, p.stderr)
    assert p.returncode == 0 and out.no_cuda().startswith("libcuda.so.1 not found")


# ------------------------------------------------------------------ two probes at once, the exec shell

def hami(slice_mib: int) -> gpu.Plan:
    return gpu.Plan("n", "hami", "vgpu", {}, slice_mib, True, 16384, True, f"HAMi slice of {slice_mib} MiB")


def start(driver: Path, plan: gpu.Plan, name: str, uuid_byte: str | None = None) -> subprocess.Popen:
    env = driver_env(driver, FAKE_CUDA_TOTAL_MIB="16384", LD_PRELOAD=str(driver / "libvgpu.so"),
                     CUDA_DEVICE_MEMORY_LIMIT_0=f"{plan.slice_mib}m")
    if uuid_byte:
        env["FAKE_CUDA_UUID_BYTE"] = uuid_byte
    return subprocess.Popen([sys.executable, str(PROBE), "--label", name, *plan.pair_probe_args(1.5, 1.0)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def collect(procs: dict[str, subprocess.Popen]) -> dict[str, gpu.ProbeOutput]:
    outs = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=60)
        outs[name] = gpu.parse_probe(stdout, stderr)
    return outs


def test_two_probes_hold_their_memory_at_the_same_time(fake_driver):
    """GPU-006's probe: each holds part of its slice, they meet, and try to exceed their own slice while both hold."""
    plans = {"a": hami(2048), "b": hami(3072)}
    outs = collect({n: start(fake_driver, p, n) for n, p in plans.items()})
    for name, out in outs.items():
        assert [h["result"] for h in out.data["held"]] == ["CUDA_SUCCESS"], name
        assert [a["result"] for a in out.data["allocs"]] == ["CUDA_ERROR_OUT_OF_MEMORY"], name
        tl = out.data["timeline"]
        assert tl["held"] <= tl["sync"] <= out.data["allocs"][0]["t"] <= tl["released"]
        assert out.data["mem_during"]["total_mib"] == plans[name].slice_mib
        assert out.vgpu_loaded is True
    together, when = gpu.overlap(outs)
    assert together is True, when
    same, gpus = gpu.same_gpu(dict(outs))
    assert same is True and "GPU-5a9c7f1e-3b2d-4c8e-9f61-0d2e7a4b8c13" in gpus
    v = gpu.pair_keeps_limits(outs, plans, same, gpus)
    assert v.status == "pass", v.message
    assert "held its memory" in v.observed


def test_probes_one_after_the_other_do_not_prove_sharing(fake_driver):
    """The old GPU-006 ran the probes in turn: that never exercises two limits at once, so it is not a pass."""
    plans = {"a": hami(2048), "b": hami(3072)}
    outs = collect({"a": start(fake_driver, plans["a"], "a")})
    outs.update(collect({"b": start(fake_driver, plans["b"], "b")}))
    together, when = gpu.overlap(outs)
    assert together is False and "outside" in when
    v = gpu.pair_keeps_limits(outs, plans, *gpu.same_gpu(dict(outs)))
    assert v.status == "skip" and "did not hold their memory at the same time" in v.reason


def test_two_gpus_are_told_apart_by_their_uuid(fake_driver):
    """Both pods' NVIDIA_VISIBLE_DEVICES may read the same (volume-mounts strategy); the probes' UUIDs do not."""
    plans = {"a": hami(2048), "b": hami(3072)}
    outs = collect({"a": start(fake_driver, plans["a"], "a"), "b": start(fake_driver, plans["b"], "b", "20")})
    same, gpus = gpu.same_gpu(dict(outs))
    assert same is False and gpus.endswith("8c14")
    v = gpu.pair_keeps_limits(outs, plans, same, gpus)
    assert v.status == "skip" and "different GPUs" in v.reason


def test_the_exec_shell_drops_ld_preload(fake_driver):
    """A setup that preloads HAMi-core only through the container's LD_PRELOAD loses it in the exec shell."""
    plan = hami(2048)
    env = {"FAKE_CUDA_TOTAL_MIB": "16384", "LD_PRELOAD": str(fake_driver / "libvgpu.so"),
           "CUDA_DEVICE_MEMORY_LIMIT_0": "2048m"}
    argv = [sys.executable, str(PROBE), "--label", "x", *[f"--alloc-mib={m}" for m in plan.probe_allocs()]]
    own = run_probe(fake_driver, argv=argv, **env)
    shell = run_probe(fake_driver, argv=gpu.exec_shell_argv(argv), **env)
    assert own.vgpu_loaded is True and own.data["preload"]["ld_preload_env"] == str(fake_driver / "libvgpu.so")
    assert shell.vgpu_loaded is False and shell.data["preload"]["ld_preload_env"] is None
    assert shell.data["env"]["CUDA_DEVICE_MEMORY_LIMIT_0"] == "2048m"     # the rest of the env stays
    runs = {"probe": own, gpu.EXEC_SHELL: shell}
    for rule in (gpu.visible_memory, gpu.over_slice_fails):
        assert rule(own, plan).status == "pass"
        v = gpu.every_process(rule, runs, plan, "pod p")
        assert v.status == "fail" and gpu.EXEC_SHELL in v.subject, v.message
        assert "not preloaded through /etc/ld.so.preload" in v.observed and "/etc/ld.so.preload" in v.fix


# ------------------------------------------------------------------ gpu-verify/verify.py, end to end

def test_verify_script_runs_every_case_against_the_stand_in(fake_driver, tmp_path):
    """The one command a GPU machine runs, here against the stand-in driver: every case runs and is judged as
    it expects, the recording re-judges to the same verdicts, and the archive holds it (MPS cases do not run)."""
    from importlib import util

    out, arch = tmp_path / "rec", tmp_path / "arch"
    env = driver_env(fake_driver, FAKE_CUDA_TOTAL_MIB="16384", GPU_VERIFY_TIME_SCALE="0.1")
    p = subprocess.run([sys.executable, str(ROOT / "gpu-verify" / "verify.py"), str(out), "--vgpu-lib",
                        str(fake_driver / "libvgpu.so"), "--require-hami", "--archive-to", str(arch)],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    rec = json.loads((out / "verdicts.json").read_text())
    cases = {c["name"]: c for c in rec["cases"]}
    ran = {n for n, c in cases.items() if c["status"] == "ran"}
    assert {"no-limit", "busy-card", "hami-600m", "hami-1024m", "hami-2048m", "hami-8192m", "hami-pair-a",
            "hami-pair-b", "hami-no-limit", "hami-no-lib"} <= ran, {n: c.get("reason") for n, c in cases.items()}
    status = {n: {v["check"]: v["status"] for v in c["verdicts"]} for n, c in cases.items()}
    assert status["hami-600m"]["half the slice allocates"] == "fail"
    assert "too small for a CUDA context plus half the slice" in cases["hami-600m"]["verdicts"][1]["message"]
    assert status["hami-1024m"]["half the slice allocates"] == "pass"      # 440 MiB: what is left beside a context
    assert status["hami-no-limit"]["visible memory"] == "fail"
    assert status["hami-no-lib"]["over the slice fails"] == "fail"
    assert status["busy-card"]["visible memory"] in ("fail", "skip")
    pair = next(x for x in rec["pairs"] if x["name"] == "hami-pair")
    assert [v["status"] for v in pair["verdicts"]] == ["pass"], pair
    if os.geteuid() == 0 and shutil.which("unshare"):
        assert status["hami-exec-shell"] == {"visible memory": "pass", "half the slice allocates": "pass",
                                             "over the slice fails": "pass"}
        assert status["hami-exec-env-only"]["visible memory"] == "fail"
    assert "RESULT: PASS" in (out / "summary.txt").read_text()
    assert (arch / "rec.tar.gz").is_file()
    spec = util.spec_from_file_location("gpu_verify", ROOT / "gpu-verify" / "verify.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.rejudge(out / "verdicts.json") == []


# ------------------------------------------------------------------ the suite's glue, with exec run locally

def test_suite_runs_the_pair_at_once_and_the_exec_shell(fake_driver, monkeypatch):
    """clusterproof.gpu_pods as GPU-003..006 use it, with exec_in_pod running the probe here on the stand-in:
    the pair's probes run concurrently and overlap; the exec shell really runs without LD_PRELOAD."""
    import shlex

    from clusterproof import gpu_pods, pods

    limits = {"gpu-pair-a": 2048, "gpu-pair-b": 3072, "gpu-probe": 2048}

    def local_exec(core_v1, namespace, pod, argv, timeout=None, container=None):
        here = [a.replace("python3 " + gpu_pods.PROBE, f"{sys.executable} {PROBE}") for a in argv]
        here = [sys.executable if a == "python3" else str(PROBE) if a == gpu_pods.PROBE else a for a in here]
        env = driver_env(fake_driver, FAKE_CUDA_TOTAL_MIB="16384", LD_PRELOAD=str(fake_driver / "libvgpu.so"),
                         CUDA_DEVICE_MEMORY_LIMIT_0=f"{limits[pod]}m")
        p = subprocess.run(here, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        return pods.ExecResult(p.returncode, p.stdout, p.stderr, shlex.join(argv), f"{namespace}/{pod}")

    monkeypatch.setattr(pods, "exec_in_pod", local_exec)
    plans = {"gpu-pair-a": hami(2048), "gpu-pair-b": hami(3072)}
    pps = [gpu_pods.ProbePod(n, "ns", p) for n, p in plans.items()]
    gpu_pods.run_probes_together(None, pps, {pp.name: pp.plan.pair_probe_args(1.5, 1.0) for pp in pps})
    outs = {pp.name: pp.output for pp in pps}
    assert all(o is not None for o in outs.values()), [pp.exec_error for pp in pps]
    v = gpu.pair_keeps_limits(outs, plans, *gpu.same_gpu(dict(outs)))
    assert v.status == "pass", v.message

    single = gpu_pods.ProbePod("gpu-probe", "ns", hami(2048))
    gpu_pods.run_probe(None, single, single.plan.probe_allocs())
    gpu_pods.run_probe(None, single, single.plan.probe_allocs(), shell=True)
    runs = single.runs()
    assert list(runs) == ["probe", gpu.EXEC_SHELL] and single.shell_error is None
    assert runs["probe"].label == "probe" and runs[gpu.EXEC_SHELL].label == "exec-shell"
    v = gpu.every_process(gpu.over_slice_fails, runs, single.plan, "pod gpu-probe", single.run_errors())
    assert v.status == "fail" and v.fix == gpu.FIX_PRELOAD      # the stand-in's hook came by LD_PRELOAD only
