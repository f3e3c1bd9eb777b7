#!/usr/bin/env python3
"""clusterproof GPU probe: what one process sees of its GPU, as ONE JSON line on stdout.

Stdlib only (ctypes on libcuda.so.1, no CUDA toolkit), so any image with python3 runs it;
libcuda and nvidia-smi come from the node through the NVIDIA container runtime. HAMi-core
(libvgpu.so, preloaded through /etc/ld.so.preload) intercepts these calls like any CUDA
program's, so the figures are the ones a workload would get.

    python3 probe.py [--alloc-mib N ...] [--hold-mib N ...] [--sync-at EPOCH | --sync-in S]
                     [--hold-s S] [--device I] [--no-smi] [--label NAME]

Each --alloc-mib N allocates N MiB with cuMemAlloc_v2 and frees it again, in order. For two probes
that must overlap on one GPU: each --hold-mib N allocates N MiB and KEEPS it; then the probe waits
until the wall-clock time EPOCH (--sync-at) or S seconds after it started (--sync-in), reads the
memory again and makes the --alloc-mib attempts while it holds its context and allocations, and
keeps holding them --hold-s S seconds longer. Every step is time-stamped (wall clock: two probes on
one node share it), so the reader can prove the two really held their memory at the same time.
The GPU is identified by its UUID as CUDA reports it (cuDeviceGetUuid), not by a device-list string.
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
VERSION = 2
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
    args: dict = {"alloc": [], "hold_mib": [], "device": 0, "smi": True, "hold": 0.0, "sync_at": None,
                  "sync_in": None, "label": ""}
    it = iter(argv)
    for a in it:
        key, _, val = a.partition("=")
        if key not in ("--no-smi",) and not val:
            try:
                val = next(it)
            except StopIteration:
                raise SystemExit(f"probe.py: {key} needs a value") from None
        if key == "--alloc-mib":
            args["alloc"].append(int(val))
        elif key == "--hold-mib":
            args["hold_mib"].append(int(val))
        elif key == "--device":
            args["device"] = int(val)
        elif key == "--hold-s":
            args["hold"] = float(val)
        elif key == "--sync-at":
            args["sync_at"] = float(val)
        elif key == "--sync-in":
            args["sync_in"] = float(val)
        elif key == "--label":
            args["label"] = val
        elif key == "--no-smi":
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
    """Which libraries /etc/ld.so.preload names, which of them this process really has mapped, and which
    vGPU hook (HAMi-core's libvgpu.so) is mapped however it came (ld.so.preload or LD_PRELOAD)."""
    path = "/etc/ld.so.preload"
    view: dict = {"path": path, "present": os.path.exists(path), "entries": [], "loaded": [], "not_loaded": [],
                  "files": {}, "ld_preload_env": os.environ.get("LD_PRELOAD")}
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        maps = ""
    view["vgpu_mapped"] = sorted({line.split(None, 5)[5].strip() for line in maps.splitlines()
                                  if len(line.split(None, 5)) == 6 and "vgpu" in os.path.basename(
                                      line.split(None, 5)[5].strip())}) if maps else None
    if not view["present"]:
        return view
    try:
        with open(path) as f:
            view["entries"] = [w for line in f for w in line.split() if not line.lstrip().startswith("#")]
    except OSError as exc:
        view["error"] = str(exc)
        return view
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


def uuid_text(raw: bytes) -> str:
    """CUDA's 16 UUID bytes in NVIDIA's notation (what nvidia-smi -L prints): GPU-xxxxxxxx-xxxx-..."""
    h = raw.hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def cuda_view(args: dict) -> dict:
    """What CUDA shows this process: device, UUID, memory, and the allocations asked for, time-stamped.

    Returns {"cuda": ..., "allocs": [...], "held": [...], "timeline": {...}}; a step that fails stops
    the rest (their allocations read NOT_RUN).
    """
    allocs, holds = args["alloc"], args["hold_mib"]
    view: dict = {"lib": None, "error": None}
    timeline: dict = {"start": round(time.time(), 3)}
    out: dict = {"cuda": view, "allocs": [], "held": [], "timeline": timeline}

    def not_run() -> dict:          # a step before any allocation failed
        out["allocs"] = [{"mib": m, "rc": None, "result": "NOT_RUN"} for m in allocs]
        out["held"] = [{"mib": m, "rc": None, "result": "NOT_RUN"} for m in holds]
        return out

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
        return not_run()
    cu = Cuda(lib)

    def step(key: str, rc: int) -> bool:
        view[key + "_rc"] = rc
        if rc != 0:
            view["error"] = f"{key} failed: {cu.name(rc)} ({rc})"
        return rc == 0

    def mem_info() -> dict | None:
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        rc = lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total))
        if rc != 0:
            return {"rc": rc, "result": cu.name(rc)}
        return {"rc": 0, "free_mib": free.value // MIB, "total_mib": total.value // MIB, "free_bytes": free.value,
                "total_bytes": total.value, "t": round(time.time(), 3)}

    def alloc(mib: int) -> tuple[dict, ctypes.c_uint64]:
        ptr = ctypes.c_uint64(0)
        t = time.time()
        rc = lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(mib * MIB))
        return ({"mib": mib, "rc": rc, "result": cu.name(rc), "t": round(t, 3),
                 "ms": round((time.time() - t) * 1000, 1)}, ptr)

    kept: list[ctypes.c_uint64] = []
    try:
        if not step("init", lib.cuInit(0)):
            return not_run()
        count = ctypes.c_int(0)
        if not step("device_count", lib.cuDeviceGetCount(ctypes.byref(count))):
            return not_run()
        view["device_count"] = count.value
        dev = ctypes.c_int(0)
        if not step("device_get", lib.cuDeviceGet(ctypes.byref(dev), args["device"])):
            return not_run()
        buf = ctypes.create_string_buffer(256)
        if lib.cuDeviceGetName(buf, 256, dev) == 0:
            view["name"] = buf.value.decode(errors="replace")
        raw = ctypes.create_string_buffer(16)
        for fn in ("cuDeviceGetUuid_v2", "cuDeviceGetUuid"):
            if hasattr(lib, fn) and getattr(lib, fn)(raw, dev) == 0:
                view["uuid"] = uuid_text(raw.raw)
                break
        bus = ctypes.create_string_buffer(64)
        if hasattr(lib, "cuDeviceGetPCIBusId") and lib.cuDeviceGetPCIBusId(bus, 64, dev) == 0:
            view["pci_bus_id"] = bus.value.decode(errors="replace")
        total_dev = ctypes.c_size_t(0)
        if lib.cuDeviceTotalMem_v2(ctypes.byref(total_dev), dev) == 0:
            view["device_total_bytes"] = total_dev.value
            view["device_total_mib"] = total_dev.value // MIB
        ctx = ctypes.c_void_p()
        if not step("ctx_retain", lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)):
            return not_run()
        if not step("ctx_set", lib.cuCtxSetCurrent(ctx)):
            return not_run()
        timeline["ctx"] = round(time.time(), 3)
        first = mem_info()
        view["mem_info_rc"] = first["rc"] if first else None
        if first and first["rc"] == 0:
            view.update({k: first[k] for k in ("free_bytes", "total_bytes", "free_mib", "total_mib")})
        elif first:
            view["error"] = f"mem_info failed: {first['result']} ({first['rc']})"
        for mib in holds:
            res, ptr = alloc(mib)
            out["held"].append(res)
            if res["rc"] == 0:
                kept.append(ptr)
        if holds:
            timeline["held"] = round(time.time(), 3)
        target = args["sync_at"] if args["sync_at"] is not None else (
            timeline["start"] + args["sync_in"] if args["sync_in"] is not None else None)
        if target is not None:
            late = time.time() - target
            if late < 0:
                time.sleep(-late)
            timeline["sync"] = round(time.time(), 3)
            out["sync"] = {"target": round(target, 3), "late_s": round(max(late, 0.0), 3)}
        if holds or target is not None:
            out["mem_during"] = mem_info()
        for mib in allocs:
            res, ptr = alloc(mib)
            if res["rc"] == 0:
                res["free_rc"] = lib.cuMemFree_v2(ptr)
            out["allocs"].append(res)
        if args["hold"] > 0:
            time.sleep(args["hold"])
        timeline["released"] = round(time.time(), 3)
        for ptr in kept:
            lib.cuMemFree_v2(ptr)
        if hasattr(lib, "cuDevicePrimaryCtxRelease_v2"):
            lib.cuDevicePrimaryCtxRelease_v2(dev)
    except AttributeError as exc:
        view["error"] = f"libcuda lacks a symbol: {exc}"
    done = {r["mib"] for r in out["allocs"]}
    out["allocs"] += [{"mib": m, "rc": None, "result": "NOT_RUN"} for m in allocs if m not in done]
    return out


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
                 "python": sys.version.split()[0], "label": args["label"], "env": env_view(),
                 "preload": preload_view()}
    out.update(cuda_view(args))
    out["smi"] = smi_view() if args["smi"] else {"skipped": True}
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
