#!/usr/bin/env python3
"""clusterproof GPU probe: what one process sees of its GPU, as ONE JSON line on stdout.

Stdlib only (ctypes on libcuda.so.1, no CUDA toolkit), so any image with python3 runs it;
libcuda and nvidia-smi come from the node through the NVIDIA container runtime. HAMi-core
(libvgpu.so, preloaded through /etc/ld.so.preload) intercepts these calls like any CUDA
program's, so the figures are the ones a workload would get.

    python3 probe.py [--alloc-mib N ...] [--device I] [--no-smi] [--hold-s S]

Each --alloc-mib N allocates N MiB with cuMemAlloc_v2 and frees it again, in order; --hold-s keeps
the CUDA context S seconds longer (so two probes overlap on one GPU).
Exit status 0 whenever the JSON line was printed: the verdict is the reader's job.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import time

MIB = 1024 * 1024
VERSION = 1
ENV_KEYS = ("CUDA_DEVICE_MEMORY_LIMIT", "CUDA_DEVICE_SM_LIMIT", "CUDA_DEVICE_MEMORY_SHARED_CACHE",
            "CUDA_OVERSUBSCRIBE", "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
            "LD_PRELOAD", "GPU_CORE_UTILIZATION_POLICY")
# Names for the CUresult codes we expect to see, in case cuGetErrorName itself is unavailable.
CU_NAMES = {0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY",
            3: "CUDA_ERROR_NOT_INITIALIZED", 4: "CUDA_ERROR_DEINITIALIZED", 100: "CUDA_ERROR_NO_DEVICE",
            101: "CUDA_ERROR_INVALID_DEVICE", 201: "CUDA_ERROR_INVALID_CONTEXT", 304: "CUDA_ERROR_OPERATING_SYSTEM",
            803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", 804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
            999: "CUDA_ERROR_UNKNOWN"}


def parse_args(argv: list[str]) -> dict:
    args = {"alloc": [], "device": 0, "smi": True, "hold": 0.0}
    it = iter(argv)
    for a in it:
        if a == "--alloc-mib":
            args["alloc"].append(int(next(it)))
        elif a.startswith("--alloc-mib="):
            args["alloc"].append(int(a.split("=", 1)[1]))
        elif a == "--device":
            args["device"] = int(next(it))
        elif a == "--hold-s":
            args["hold"] = float(next(it))
        elif a == "--no-smi":
            args["smi"] = False
        else:
            raise SystemExit(f"probe.py: unknown argument {a!r}")
    return args


def env_view() -> dict:
    out = {}
    for k, v in os.environ.items():
        if k.startswith(ENV_KEYS):
            out[k] = v
    return dict(sorted(out.items()))


def preload_view() -> dict:
    """Which libraries /etc/ld.so.preload names, and which of them this process really has mapped."""
    path = "/etc/ld.so.preload"
    view: dict = {"path": path, "present": os.path.exists(path), "entries": [], "loaded": [], "not_loaded": [],
                  "files": {}}
    if not view["present"]:
        return view
    try:
        with open(path) as f:
            view["entries"] = [w for line in f for w in line.split() if not line.lstrip().startswith("#")]
    except OSError as exc:
        view["error"] = str(exc)
        return view
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        maps = ""
    for entry in view["entries"]:
        try:
            view["files"][entry] = os.path.getsize(entry)
        except OSError:
            view["files"][entry] = None
        (view["loaded"] if entry in maps or os.path.basename(entry) in maps else view["not_loaded"]).append(entry)
    return view


class Cuda:
    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib

    def name(self, rc: int) -> str:
        try:
            p = ctypes.c_char_p()
            if self.lib.cuGetErrorName(rc, ctypes.byref(p)) == 0 and p.value:
                return p.value.decode()
        except (AttributeError, OSError):
            pass
        return CU_NAMES.get(rc, f"CUresult {rc}")


def cuda_view(device: int, allocs: list[int], hold: float = 0.0) -> tuple[dict, list[dict]]:
    view: dict = {"lib": None, "error": None}
    results: list[dict] = []
    lib = None
    errors = []
    for cand in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(cand)
            view["lib"] = cand
            break
        except OSError as exc:
            errors.append(str(exc))
    if lib is None:
        view["error"] = f"libcuda.so.1 not found: no CUDA driver in this container ({errors[0]})"
        return view, [{"mib": m, "rc": None, "result": "NOT_RUN"} for m in allocs]
    view["error"] = None
    cu = Cuda(lib)

    def step(key: str, rc: int) -> bool:
        view[key + "_rc"] = rc
        if rc != 0:
            view["error"] = f"{key} failed: {cu.name(rc)} ({rc})"
        return rc == 0

    def not_run():
        return view, [{"mib": m, "rc": None, "result": "NOT_RUN"} for m in allocs]

    try:
        if not step("init", lib.cuInit(0)):
            return not_run()
        count = ctypes.c_int(0)
        if not step("device_count", lib.cuDeviceGetCount(ctypes.byref(count))):
            return not_run()
        view["device_count"] = count.value
        dev = ctypes.c_int(0)
        if not step("device_get", lib.cuDeviceGet(ctypes.byref(dev), device)):
            return not_run()
        buf = ctypes.create_string_buffer(256)
        if lib.cuDeviceGetName(buf, 256, dev) == 0:
            view["name"] = buf.value.decode(errors="replace")
        total_dev = ctypes.c_size_t(0)
        if lib.cuDeviceTotalMem_v2(ctypes.byref(total_dev), dev) == 0:
            view["device_total_bytes"] = total_dev.value
            view["device_total_mib"] = total_dev.value // MIB
        ctx = ctypes.c_void_p()
        if not step("ctx_retain", lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)):
            return not_run()
        if not step("ctx_set", lib.cuCtxSetCurrent(ctx)):
            return not_run()
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        if step("mem_info", lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total))):
            view.update(free_bytes=free.value, total_bytes=total.value, free_mib=free.value // MIB,
                        total_mib=total.value // MIB)
        for mib in allocs:
            ptr = ctypes.c_uint64(0)
            t0 = time.monotonic()
            rc = lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(mib * MIB))
            res = {"mib": mib, "rc": rc, "result": cu.name(rc), "ms": round((time.monotonic() - t0) * 1000, 1)}
            if rc == 0:
                res["free_rc"] = lib.cuMemFree_v2(ptr)
            results.append(res)
        if hold > 0:
            time.sleep(hold)
        if hasattr(lib, "cuDevicePrimaryCtxRelease_v2"):
            lib.cuDevicePrimaryCtxRelease_v2(dev)
    except AttributeError as exc:
        view["error"] = f"libcuda lacks a symbol: {exc}"
    done = {r["mib"] for r in results}
    results += [{"mib": m, "rc": None, "result": "NOT_RUN"} for m in allocs if m not in done]
    return view, results


def smi_view() -> dict:
    path = shutil.which("nvidia-smi")
    view: dict = {"path": path, "rows": [], "rc": None, "error": None, "stderr": ""}
    if not path:
        view["error"] = "nvidia-smi not found in PATH"
        return view
    cmd = [path, "--query-gpu=index,uuid,name,memory.total,memory.used", "--format=csv,noheader,nounits"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        view["error"] = f"{type(exc).__name__}: {exc}"
        return view
    view.update(rc=p.returncode, stdout=p.stdout[-4000:], stderr=p.stderr[-4000:])
    for line in p.stdout.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) >= 5:
            row = {"index": parts[0], "uuid": parts[1], "name": parts[2]}
            for key, val in (("total_mib", parts[3]), ("used_mib", parts[4])):
                try:
                    row[key] = int(float(val))
                except ValueError:
                    row[key] = None
            view["rows"].append(row)
    if p.returncode != 0 and not view["error"]:
        view["error"] = f"nvidia-smi exited {p.returncode}"
    return view


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out: dict = {"probe": "clusterproof-gpu", "version": VERSION, "host": socket.gethostname(),
                 "python": sys.version.split()[0], "env": env_view(), "preload": preload_view()}
    cuda, allocs = cuda_view(args["device"], args["alloc"], args["hold"])
    out["cuda"] = cuda
    out["allocs"] = allocs
    out["smi"] = smi_view() if args["smi"] else {"skipped": True}
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
