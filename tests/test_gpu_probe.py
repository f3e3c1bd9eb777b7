"""manifests/gpu/probe.py end to end against a stand-in libcuda.so.1 and nvidia-smi (no GPU needed).

The stand-in is compiled here from C with the driver API's real signatures, so the probe's ctypes
calls (pointer and size_t arguments, the call order) are exercised as they would be on libcuda;
what the real driver answers is verified by gpu-verify/ on a GPU.
"""
from __future__ import annotations

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
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
typedef int CUresult; typedef int CUdevice; typedef void *CUcontext; typedef unsigned long long CUdeviceptr;
static size_t used = 300u << 20;            /* the context's own share, as HAMi-core counts it */
static size_t last;
static size_t total(void) { const char *e = getenv("FAKE_CUDA_TOTAL_MIB"); return (size_t)(e ? atoll(e) : 1024) << 20; }
CUresult cuInit(unsigned flags) { return getenv("FAKE_CUDA_NO_DEVICE") ? 100 : 0; }
CUresult cuDeviceGetCount(int *c) { *c = 1; return 0; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }
CUresult cuDeviceGetName(char *n, int len, CUdevice d) { strncpy(n, "Fake GPU", len); return 0; }
CUresult cuDeviceTotalMem_v2(size_t *b, CUdevice d) { *b = (size_t)81089 << 20; return 0; }
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { *c = (void *)0x1; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { return 0; }
CUresult cuCtxSetCurrent(CUcontext c) { return c == (void *)0x1 ? 0 : 201; }
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { *t = total(); *f = total() - used; return 0; }
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    if (used + n > total()) return 2;
    used += n; last = n; *p = 0x10000; return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) { if (p != 0x10000) return 1; used -= last; return 0; }
CUresult cuGetErrorName(CUresult r, const char **s) {
    *s = r == 0 ? "CUDA_SUCCESS" : r == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : r == 100 ? "CUDA_ERROR_NO_DEVICE"
       : "CUDA_ERROR_UNKNOWN";
    return 0;
}
"""
FAKE_SMI = """#!/bin/sh
echo "0, GPU-5a9c7f1e-3b2d-4c8e-9f61-0d2e7a4b8c13, Fake GPU, ${FAKE_CUDA_TOTAL_MIB:-1024}, 0"
"""


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory) -> Path:
    """A folder with a stand-in libcuda.so.1 and nvidia-smi."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build the stand-in libcuda.so.1 (apt-get install gcc)")
    d = tmp_path_factory.mktemp("fakecuda")
    (d / "cuda.c").write_text(FAKE_CUDA)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "libcuda.so.1"), str(d / "cuda.c")], check=True,
                   timeout=120)
    smi = d / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    return d


def run_probe(driver: Path, *args: str, **env: str) -> gpu.ProbeOutput:
    full = {**os.environ, "LD_LIBRARY_PATH": str(driver), "PATH": f"{driver}:{os.environ['PATH']}", **env}
    p = subprocess.run([sys.executable, str(PROBE), *args], capture_output=True, text=True, env=full, timeout=60,
                       check=False)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().splitlines()) == 1, "the probe prints exactly one line"
    return gpu.parse_probe(p.stdout, p.stderr)


def test_probe_reads_the_limit_and_allocates(fake_driver):
    out = run_probe(fake_driver, "--alloc-mib", "1024", "--alloc-mib", "3072", FAKE_CUDA_TOTAL_MIB="2048",
                    CUDA_DEVICE_MEMORY_LIMIT_0="2048m")
    assert out.cuda["name"] == "Fake GPU" and out.cuda["device_total_mib"] == 81089
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
