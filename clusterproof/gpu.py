"""GPU facts and verdicts, pure: discovery from Node objects, HAMi annotations, the probe's JSON.

Everything here works on plain data (NodeFacts, annotation strings, pod log text) so the project's
tests can feed it recorded outputs from real clusters and GPUs. The rules return the project's one
`clusterproof.verdict.Verdict`; the checks in suites/gpu only fetch the data and hand the verdict to
`apply_verdict` (checks.apply, with --require-gpu's conversion of a missing GPU or CUDA device).

Facts behind the rules: ../shared/notes/gpu.md (HAMi, NVIDIA device plugin, GFD, MPS).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .verdict import Status, Verdict

GPU = "nvidia.com/gpu"
GPU_SHARED = "nvidia.com/gpu.shared"
MIG_PREFIX = "nvidia.com/mig-"
GPUMEM = "nvidia.com/gpumem"
VGPU_PREFIXES = ("hami.io/", "4pd.io/")
REGISTER = "node-nvidia-register"
HANDSHAKE = "node-handshake"
ALLOCATED = "vgpu-devices-allocated"
BIND_PHASE = "bind-phase"
USE_UUID = "nvidia.com/use-gpuuuid"
LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_MEMORY = "nvidia.com/gpu.memory"
LABEL_COUNT = "nvidia.com/gpu.count"
LABEL_REPLICAS = "nvidia.com/gpu.replicas"
LABEL_SHARING = "nvidia.com/gpu.sharing-strategy"

HANDSHAKE_STALE_S = 300     # HAMi's plugin re-reports every 30 s; the scheduler distrusts a node after 300 s
REQUESTING_STALE_S = 120    # the scheduler asked and nobody answered (HAMi marks Deleted_ after 60 s)
SLICE_MIB = 2048            # the memory slice the checks ask for where the setup slices memory
TOLERANCE = 0.03            # visible vs expected memory (driver reserve differs between NVML and CUDA)
TOLERANCE_MIN_MIB = 64
# A CUDA context's own share of a slice: measured on an H200 (driver 580) as about 520 MiB under HAMi-core
# (a 600m limit left 82 MiB free) and 514 MiB for an MPS client. A slice smaller than twice a context
# plus a margin cannot hold half its size beside the context, so the plan allocates what is left.
CONTEXT_MIB = 520
CONTEXT_MAX_MIB = 1024      # the most a context plus the driver's reserve takes out of a slice
ALLOC_MARGIN_MIB = 64
MIN_ALLOC_MIB = 64
MIN_SLICE_MIB = 2 * (CONTEXT_MIB + ALLOC_MARGIN_MIB)
# GPU-006: the two probes meet PAIR_LEAD_S after they start (CUDA init included), try to exceed their
# slices there while both hold their allocations, and keep holding PAIR_HOLD_S longer.
PAIR_LEAD_S = 10.0
PAIR_HOLD_S = 5.0
OOM = "CUDA_ERROR_OUT_OF_MEMORY"
PRELOAD_FAILED = "cannot be preloaded"
# What a skip `requires` when --require-gpu turns it into a failure.
NEEDS_GPU = "gpu"
NEEDS_CUDA = "cuda"


def quantity(value: Any) -> int:
    """An extended-resource quantity ("4", "4k" is never used for devices) as an int; bad input is 0."""
    if value is None:
        return 0
    text = str(value).strip()
    m = re.fullmatch(r"(\d+)(k|M|G|Ki|Mi|Gi)?", text)
    if not m:
        return 0
    mult = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[m.group(2)]
    return int(m.group(1)) * mult


# ------------------------------------------------------------------ HAMi annotations

@dataclass
class VDevice:
    """One physical GPU as HAMi's device plugin registers it on the node."""

    id: str
    count: int
    devmem: int
    devcore: int
    type: str
    health: bool
    numa: int = 0
    index: int | None = None
    mode: str = ""


def _bool(v: Any) -> bool:
    return v is True or str(v).strip().lower() == "true"


def parse_register(text: str | None) -> list[VDevice]:
    """`hami.io/node-nvidia-register`: JSON (HAMi >= 2.5) or `id,count,mem,core,type,numa,health[,index,mode]:`.

    Raises ValueError on anything else: a register annotation that cannot be read is a finding.
    """
    if text is None or not text.strip():
        raise ValueError("empty")
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        out = []
        for it in items:
            if not isinstance(it, dict) or "id" not in it:
                raise ValueError(f"device entry without id: {it!r}"[:120])
            out.append(VDevice(id=str(it["id"]), count=int(it.get("count", 0)), devmem=int(it.get("devmem", 0)),
                               devcore=int(it.get("devcore", 0)), type=str(it.get("type", "")),
                               health=_bool(it.get("health", False)), numa=int(it.get("numa", 0) or 0),
                               index=it.get("index"), mode=str(it.get("mode", ""))))
        return out
    out = []
    for chunk in filter(None, (c.strip() for c in text.split(":"))):
        f = chunk.split(",")
        if len(f) < 7:
            raise ValueError(f"device entry with {len(f)} fields, expected 7 or 9: {chunk[:80]!r}")
        try:
            out.append(VDevice(id=f[0], count=int(f[1]), devmem=int(f[2]), devcore=int(f[3]), type=f[4],
                               numa=int(f[5]), health=_bool(f[6]),
                               index=int(f[7]) if len(f) > 7 and f[7].isdigit() else None,
                               mode=f[8] if len(f) > 8 else ""))
        except ValueError as exc:
            raise ValueError(f"bad number in {chunk[:80]!r}: {exc}") from None
    if not out:
        raise ValueError("no devices")
    return out


def encode_register_json(devices: list[VDevice]) -> str:
    """The JSON form HAMi >= 2.5 writes (used by the testbed's fake plugin)."""
    return json.dumps([{"id": d.id, "count": d.count, "devmem": d.devmem, "devcore": d.devcore, "type": d.type,
                        "numa": d.numa, "mode": d.mode or "hami-core", "health": d.health} for d in devices],
                      separators=(",", ":"))


_TS = re.compile(r"(\d{4})[-.](\d{2})[-.](\d{2})[ T_](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:\s*([+-]\d{2}:?\d{2}|Z))?")


def parse_time(text: str) -> dt.datetime | None:
    """Go's time.String() ("2024-01-23 04:30:04.1 +0000 UTC m=+1.2") or "2006.01.02 15:04:05" (taken as UTC)."""
    m = _TS.search(text or "")
    if not m:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac = m.group(7)
    us = int((frac[1:] + "000000")[:6]) if frac else 0
    tz = dt.UTC
    zone = m.group(8)
    if zone and zone != "Z":
        zone = zone.replace(":", "")
        sign = 1 if zone[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
    try:
        return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=tz)
    except ValueError:
        return None


@dataclass
class Handshake:
    state: str           # reported | requesting | deleted | missing | unknown
    at: dt.datetime | None
    age_s: float | None
    raw: str | None

    def problem(self) -> str | None:
        """Why the handshake says the node's device plugin is not answering, or None."""
        if self.state == "missing":
            return "no handshake annotation (the HAMi device plugin never reported)"
        if self.state == "deleted":
            return f"handshake {self.raw!r}: the scheduler dropped the node's devices (plugin stopped answering)"
        if self.state == "unknown" or self.age_s is None:
            return f"handshake {self.raw!r} cannot be read"
        if self.state == "reported" and self.age_s > HANDSHAKE_STALE_S:
            return f"last report {self.age_s:.0f}s ago (> {HANDSHAKE_STALE_S}s): the device plugin stopped reporting"
        if self.state == "requesting" and self.age_s > REQUESTING_STALE_S:
            return f"scheduler request unanswered for {self.age_s:.0f}s: the device plugin is not reporting"
        return None


def parse_handshake(text: str | None, now: dt.datetime) -> Handshake:
    if text is None:
        return Handshake("missing", None, None, None)
    low = text.strip().lower()
    state = ("reported" if low.startswith("reported") else "requesting" if low.startswith("requesting")
             else "deleted" if low.startswith("deleted") else "unknown")
    at = parse_time(text)
    age = (now - at).total_seconds() if at else None
    return Handshake(state, at, age, text)


@dataclass
class Allocated:
    uuid: str
    type: str
    mem_mib: int
    cores: int


def parse_allocated(text: str | None) -> list[list[Allocated]]:
    """`hami.io/vgpu-devices-allocated`: containers split by ';', devices by ':', `uuid,type,mem,cores`."""
    out: list[list[Allocated]] = []
    for ctr in (text or "").split(";"):
        devs = []
        for dev in filter(None, (d.strip() for d in ctr.split(":"))):
            f = dev.split(",")
            if len(f) < 4:
                raise ValueError(f"allocated device {dev!r} has {len(f)} fields, expected 4")
            devs.append(Allocated(f[0], f[1], int(f[2]), int(f[3])))
        if devs:
            out.append(devs)
    return out


def encode_allocated(containers: list[list[Allocated]]) -> str:
    return "".join("".join(f"{d.uuid},{d.type},{d.mem_mib},{d.cores}:" for d in c) + ";" for c in containers)


# ------------------------------------------------------------------ discovery

@dataclass
class GpuNode:
    """A node that has, or claims to have, NVIDIA GPUs, and how they are offered."""

    name: str
    setup: str                       # hami | 4pd | nvidia
    sharing: str                     # vgpu | none | time-slicing | mps | mig
    resources: dict[str, tuple[int, int]]   # resource -> (capacity, allocatable)
    labels: dict[str, str]
    annotations: dict[str, str]
    prefix: str = ""                 # hami.io/ or 4pd.io/ on vGPU setups

    @property
    def gfd(self) -> bool:
        return LABEL_PRODUCT in self.labels or LABEL_COUNT in self.labels

    def label_int(self, key: str, default: int | None = None) -> int | None:
        try:
            return int(self.labels[key])
        except (KeyError, ValueError):
            return default

    @property
    def register(self) -> str | None:
        return self.annotations.get(self.prefix + REGISTER) if self.prefix else None

    @property
    def handshake(self) -> str | None:
        return self.annotations.get(self.prefix + HANDSHAKE) if self.prefix else None

    @property
    def resource(self) -> str:
        """The resource a pod asks for one GPU with on this node."""
        for r in (GPU, GPU_SHARED):
            if r in self.resources:
                return r
        migs = sorted(r for r in self.resources if r.startswith(MIG_PREFIX))
        return migs[0] if migs else GPU

    def describe(self) -> str:
        res = ", ".join(f"{k} {c}/{a}" for k, (c, a) in sorted(self.resources.items())) or "no GPU resources"
        extra = f", product {self.labels[LABEL_PRODUCT]}" if LABEL_PRODUCT in self.labels else ""
        return f"{self.name}: {self.setup} ({self.sharing}), capacity/allocatable {res}{extra}"


def _is_gpu_resource(name: str) -> bool:
    return name in (GPU, GPU_SHARED) or name.startswith(MIG_PREFIX)


def discover(nodes: list[Any]) -> list[GpuNode]:
    """GPU nodes from NodeFacts-like objects (name, labels, annotations, capacity, allocatable).

    A node counts when its capacity or allocatable names an NVIDIA GPU resource, when HAMi/4pd
    registered devices on it, or when GFD labelled it with a GPU count: the last two keep a node
    whose plugin died (allocatable 0, later no resource at all) in view, so the check can fail it.
    """
    found = []
    for n in nodes:
        names = {k for k in list(n.capacity) + list(n.allocatable) if _is_gpu_resource(k)}
        prefix = next((p for p in VGPU_PREFIXES if p + REGISTER in n.annotations), "")
        if not names and not prefix and LABEL_COUNT not in n.labels:
            continue
        resources = {k: (quantity(n.capacity.get(k)), quantity(n.allocatable.get(k))) for k in sorted(names)}
        if prefix:
            setup, sharing = prefix.split(".", 1)[0], "vgpu"
        else:
            setup = "nvidia"
            strategy = n.labels.get(LABEL_SHARING, "").lower()
            replicas = quantity(n.labels.get(LABEL_REPLICAS, "1")) or 1
            if any(k.startswith(MIG_PREFIX) for k in names):
                sharing = "mig"
            elif strategy in ("time-slicing", "mps"):
                sharing = strategy
            elif replicas > 1 or GPU_SHARED in names:
                sharing = "time-slicing"
            else:
                sharing = "none"
        found.append(GpuNode(n.name, setup, sharing, resources, dict(n.labels), dict(n.annotations), prefix))
    return found


def advertisement_problems(node: GpuNode, now: dt.datetime) -> list[str]:
    """What is wrong with how the node advertises its GPUs (empty: advertised and healthy)."""
    probs = []
    if not node.resources:
        probs.append(f"{node.name}: no NVIDIA GPU resource in capacity or allocatable")
    for res, (cap, alloc) in sorted(node.resources.items()):
        if cap == 0:
            probs.append(f"{node.name}: {res} capacity 0")
        elif alloc < cap:
            probs.append(f"{node.name}: {res} allocatable {alloc} of capacity {cap} "
                         f"({cap - alloc} device(s) unhealthy or the device plugin gone)")
    if node.setup in ("hami", "4pd"):
        key = node.prefix + REGISTER
        try:
            devices = parse_register(node.register)
        except ValueError as exc:
            probs.append(f"{node.name}: {key} cannot be read: {exc}")
            devices = []
        for d in devices:
            if not d.health:
                probs.append(f"{node.name}: device {d.id} ({d.type}) registered unhealthy")
        if devices:
            want = sum(d.count for d in devices)
            cap = node.resources.get(GPU, (0, 0))[0]
            if cap and cap != want:
                probs.append(f"{node.name}: {GPU} capacity {cap} but {key} registers {len(devices)} GPU(s) "
                             f"x split = {want}")
        hs = parse_handshake(node.handshake, now).problem()
        if hs:
            probs.append(f"{node.name}: {node.prefix + HANDSHAKE}: {hs}")
    elif node.setup == "nvidia" and node.sharing != "mig":
        count = node.label_int(LABEL_COUNT)
        replicas = node.label_int(LABEL_REPLICAS, 1) or 1
        res = node.resource
        cap = node.resources.get(res, (0, 0))[0]
        if count is not None and cap and cap != count * replicas:
            probs.append(f"{node.name}: {res} capacity {cap}, expected {LABEL_COUNT} {count} x "
                         f"{LABEL_REPLICAS} {replicas} = {count * replicas}")
    return probs


def advertisement_verdict(nodes: list[GpuNode], now: dt.datetime) -> Verdict:
    """GPU-001: every GPU node advertises its GPUs allocatable and healthy, as its device plugin registered them."""
    if not nodes:
        return no_gpu_nodes_verdict()
    rows = [p for n in nodes for p in advertisement_problems(n, now)]
    subject = f"GPU advertisement on {len(nodes)} GPU node(s)"
    expected = "every GPU allocatable and healthy, as the device plugin registered it"
    if rows:
        return Verdict.failed(subject, expected, f"{len(rows)} problem(s): {rows[0]}",
                              "check the device plugin on the node (its pod and logs; it must be registered with the "
                              "kubelet in /var/lib/kubelet/device-plugins/) and the node's GPUs with nvidia-smi",
                              rows=rows)
    return Verdict.passed(subject, expected, "; ".join(n.describe() for n in nodes))


# ------------------------------------------------------------------ what the memory checks expect

@dataclass
class Plan:
    """What one probe pod on `node` asks for and what it must then see."""

    node: str
    setup: str
    sharing: str
    resources: dict[str, int]
    slice_mib: int | None            # the memory the pod must see; None when unknown before the probe ran
    isolated: bool                   # whether the setup promises a per-pod memory limit
    card_mib: int | None = None
    nvml_limited: bool = True        # HAMi-core also limits what nvidia-smi shows; MPS does not
    note: str = ""
    replicas: int | None = None      # MPS: how many pods share one GPU, as the plugin advertises it
    limit_source: str = ""           # where slice_mib comes from (a label, the request, ...)

    @property
    def within_mib(self) -> int | None:
        """About half the slice, what GPU-004 allocates: the CUDA context counts against the limit, so the
        whole slice never fits. Where half does not fit beside a context (about CONTEXT_MIB), what is left
        after the context less a margin; None where not even MIN_ALLOC_MIB is left (the slice is too small)."""
        if not self.slice_mib:
            return 1024
        half = self.slice_mib // 2
        if not self.isolated:
            return half
        room = self.slice_mib - CONTEXT_MIB - ALLOC_MARGIN_MIB
        if half <= room:
            return half
        return room if room >= MIN_ALLOC_MIB else None

    @property
    def over_mib(self) -> int | None:
        if not self.slice_mib or not self.isolated:
            return None
        over = self.slice_mib + max(self.slice_mib // 2, 256)
        if self.card_mib and over >= self.card_mib * 0.9:
            return None
        return over

    def probe_allocs(self) -> list[int]:
        return [m for m in (self.within_mib, self.over_mib) if m]

    def pair_probe_args(self, lead_s: float = PAIR_LEAD_S, hold_s: float = PAIR_HOLD_S) -> list[str]:
        """GPU-006's probe: hold the within-slice allocation, meet the other pod's probe, try to exceed the
        slice while both hold their memory, then hold on a while longer."""
        args: list[str] = []
        if self.within_mib:
            args += ["--hold-mib", str(self.within_mib)]
        args += ["--sync-in", f"{lead_s:g}"]
        if self.over_mib:
            args += ["--alloc-mib", str(self.over_mib)]
        return [*args, "--hold-s", f"{hold_s:g}"]


def card_mib(node: GpuNode) -> int | None:
    """Memory of one physical GPU on the node, from HAMi's register or GFD's label."""
    if node.prefix:
        try:
            devs = parse_register(node.register)
            if devs:
                return min(d.devmem for d in devs)
        except ValueError:
            pass
    return node.label_int(LABEL_MEMORY)


def mps_replicas(node: GpuNode) -> int | None:
    """How many pods the NVIDIA plugin's sharing config lets share one GPU: GFD's replicas label, else the
    advertised capacity over GFD's GPU count (the plugin advertises GPUs x replicas)."""
    replicas = node.label_int(LABEL_REPLICAS)
    if replicas:
        return replicas
    count = node.label_int(LABEL_COUNT)
    cap = node.resources.get(node.resource, (0, 0))[0]
    if count and cap and cap % count == 0:
        return cap // count
    return None


def plan_for(node: GpuNode, slice_mib: int = SLICE_MIB) -> Plan:
    card = card_mib(node)
    res = {node.resource: 1}
    if node.sharing == "vgpu":
        want = slice_mib if not card or card >= 2 * slice_mib else max(card // 4, MIN_SLICE_MIB)
        res[GPUMEM] = want
        return Plan(node.name, node.setup, "vgpu", res, want, True, card, True,
                    f"HAMi slice of {want} MiB (nvidia.com/gpumem) on a {card or '?'} MiB card",
                    limit_source=f"the pod's {GPUMEM} request")
    if node.sharing == "mps":
        replicas = mps_replicas(node)
        limit = card // replicas if card and replicas else None
        source = (f"{LABEL_MEMORY} {card} MiB / {replicas} replicas" if limit else
                  f"no {LABEL_MEMORY} label: the card's memory as the probe reads it / {replicas or '?'} replicas")
        return Plan(node.name, node.setup, "mps", res, limit, True, card, False,
                    f"MPS sharing: {card or '?'} MiB / {replicas or '?'} replicas (pinned memory limit)",
                    replicas=replicas, limit_source=source)
    replicas = node.label_int(LABEL_REPLICAS, 1) or 1
    if node.sharing == "time-slicing":
        return Plan(node.name, node.setup, "time-slicing", res, card, False, card, True,
                    f"time-slicing with {replicas} replicas: no memory isolation by design")
    if node.sharing == "mig":
        return Plan(node.name, node.setup, "mig", res, None, True, None, True,
                    f"MIG instance {node.resource}: the instance is the limit")
    return Plan(node.name, node.setup, "none", res, card, False, card, True,
                "exclusive GPU: the whole card is the pod's")


# ------------------------------------------------------------------ the probe's output

@dataclass
class ProbeOutput:
    data: dict
    stderr: str = ""
    other_lines: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> dict:
        return self.data.get("cuda") or {}

    @property
    def smi(self) -> dict:
        return self.data.get("smi") or {}

    @property
    def cuda_total_mib(self) -> int | None:
        return self.cuda.get("total_mib")

    @property
    def smi_total_mib(self) -> int | None:
        rows = self.smi.get("rows") or []
        return rows[0].get("total_mib") if rows else None

    def alloc(self, mib: int | None) -> dict | None:
        """The attempt to allocate `mib` MiB: freed at once (allocs) or held (GPU-006's held allocation)."""
        tries = [*self.data.get("allocs", []), *self.data.get("held", [])]
        return next((a for a in tries if a.get("mib") == mib), None)

    def no_cuda(self) -> str | None:
        """Why the probe saw no usable CUDA device, or None."""
        if not self.cuda.get("lib"):
            return self.cuda.get("error") or "libcuda.so.1 not found"
        if self.cuda.get("total_mib") is None:
            return self.cuda.get("error") or "cuMemGetInfo gave no figure"
        return None

    def preload_failed(self) -> str | None:
        """Evidence that HAMi-core's libvgpu.so was meant to be preloaded and was not."""
        texts = [self.stderr, *self.other_lines, self.smi.get("stderr") or ""]
        for t in texts:
            for line in t.splitlines():
                if PRELOAD_FAILED in line:
                    return line.strip()[:240]
        pre = self.data.get("preload") or {}
        if pre.get("not_loaded"):
            return f"/etc/ld.so.preload names {', '.join(pre['not_loaded'])} but the process does not have it loaded"
        return None

    def limit_env(self) -> str | None:
        env = self.data.get("env") or {}
        return next((f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("CUDA_DEVICE_MEMORY_LIMIT")), None)

    def oversubscribed(self) -> bool:
        return str((self.data.get("env") or {}).get("CUDA_OVERSUBSCRIBE", "")).lower() == "true"

    @property
    def label(self) -> str:
        return str(self.data.get("label") or "")

    @property
    def gpu_uuid(self) -> tuple[str | None, str]:
        """The physical GPU's UUID as the probe measured it, and from where: CUDA's cuDeviceGetUuid, else the
        one GPU nvidia-smi lists. Never a device-list string (NVIDIA_VISIBLE_DEVICES can be a path that is
        the same for every GPU under the volume-mounts strategy)."""
        uuid = self.cuda.get("uuid")
        if uuid:
            return str(uuid), "cuDeviceGetUuid"
        rows = self.smi.get("rows") or []
        if len(rows) == 1 and rows[0].get("uuid"):
            return str(rows[0]["uuid"]), "nvidia-smi (the one GPU it lists)"
        if len(rows) > 1:
            return None, f"no CUDA UUID and nvidia-smi lists {len(rows)} GPUs"
        return None, "neither cuDeviceGetUuid nor nvidia-smi gave a UUID"

    @property
    def vgpu_loaded(self) -> bool | None:
        """Whether HAMi-core's libvgpu.so is mapped in the probe's process (None: a probe too old to say)."""
        mapped = (self.data.get("preload") or {}).get("vgpu_mapped")
        return None if mapped is None else bool(mapped)

    @property
    def smi_used_mib(self) -> int | None:
        rows = self.smi.get("rows") or []
        return rows[0].get("used_mib") if rows else None

    @property
    def card_free_mib(self) -> int | None:
        """What the whole card has free for CUDA, where NVML is not limited: nvidia-smi's total less used, less
        what the driver keeps (NVML's total over CUDA's device total: 616 MiB on an H200, 470 on an H100)."""
        total, used = self.smi_total_mib, self.smi_used_mib
        if total is None or used is None:
            return None
        device = self.cuda.get("device_total_mib")
        reserve = max(0, total - device) if isinstance(device, int) and device <= total else 0
        return total - used - reserve

    def summary(self) -> str:
        c = self.cuda
        parts = [f"cuMemGetInfo total {c.get('total_mib')} MiB free {c.get('free_mib')} MiB" if c.get("lib")
                 else f"no CUDA ({c.get('error')})"]
        if self.smi.get("rows"):
            parts.append(f"nvidia-smi memory.total {self.smi_total_mib} MiB")
        elif self.smi.get("error"):
            parts.append(f"nvidia-smi: {self.smi['error']}")
        for a in self.data.get("held", []):
            parts.append(f"held {a.get('mib')} MiB: {a.get('result')}")
        for a in self.data.get("allocs", []):
            parts.append(f"alloc {a.get('mib')} MiB: {a.get('result')}")
        env = self.limit_env()
        if env:
            parts.append(env)
        return "; ".join(parts)


def parse_probe(stdout: str, stderr: str = "") -> ProbeOutput:
    """The probe's JSON line from its stdout (pod logs may interleave other lines, e.g. HAMi-core's log)."""
    data = None
    other = []
    for line in stdout.splitlines():
        s = line.strip()
        if data is None and s.startswith("{") and '"probe"' in s:
            try:
                cand = json.loads(s)
            except json.JSONDecodeError:
                other.append(line)
                continue
            if cand.get("probe") == "clusterproof-gpu":
                data = cand
                continue
        other.append(line)
    if data is None:
        tail = f" stderr: {stderr.strip()[-200:]}" if stderr else ""
        seen = stdout.strip()[-200:] or "(empty)"
        raise ValueError(f"no clusterproof-gpu JSON line in the probe's output: {seen}{tail}")
    return ProbeOutput(data, stderr, other)


# ------------------------------------------------------------------ verdicts

def _close(a: int, b: int) -> bool:
    return abs(a - b) <= max(TOLERANCE_MIN_MIB, TOLERANCE * max(a, b))


FIX_HAMI = ("make HAMi-core enforce the limit: the device plugin must mount libvgpu.so (non-empty) and "
            "/etc/ld.so.preload into the container (check the hami-device-plugin pod and its vgpu hostPath), "
            "and the pod must not run privileged")


def _no_cuda_skip(subject: str, out: ProbeOutput, plan: Plan) -> Verdict | None:
    why = out.no_cuda()
    if not why:
        return None
    return Verdict(Status.SKIP, subject, "a CUDA device in the pod", why,
                   "run on a node with a real NVIDIA GPU and driver, and a --gpu-probe-image the NVIDIA runtime "
                   "injects libcuda into",
                   reason=f"no CUDA device in the GPU pod on {plan.node}: {why}; the memory checks need a real "
                          f"NVIDIA GPU (pass --require-gpu to fail instead of skip)",
                   requires=NEEDS_CUDA)


FIX_SMI = ("the NVIDIA container runtime must give the pod nvidia-smi and NVML (NVIDIA_DRIVER_CAPABILITIES with "
           "utility, which the probe pod sets): check the nvidia-container-toolkit on the node")
FIX_PRELOAD = ("the device plugin must mount /etc/ld.so.preload naming libvgpu.so into the container (HAMi's does), "
               "not rely on LD_PRELOAD in the container's env: a shell or a tool that drops the env runs unlimited")
FIX_MPS = "check the MPS control daemon of the NVIDIA device plugin (sharing.mps) and its pinned memory limit"
EXEC_SHELL = "kubectl exec shell, LD_PRELOAD unset"


def _tol(mib: int) -> int:
    return max(TOLERANCE_MIN_MIB, int(TOLERANCE * mib))


def parse_mps_limit(value: str | None, device: int = 0) -> int | None:
    """CUDA_MPS_PINNED_DEVICE_MEM_LIMIT for one device in MiB: `0=2G,1=512M` or one value for all (`2G`)."""
    if not value:
        return None
    for part in value.split(","):
        dev, _, amount = part.strip().rpartition("=")
        if dev and dev.strip() != str(device):
            continue
        m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)I?B?\s*", amount.upper())
        if not m:
            return None
        n, unit = int(m.group(1)), m.group(2)
        return {"": n, "K": n // 1024, "M": n, "G": n * 1024, "T": n * 1024 * 1024}[unit]
    return None


def mps_limit(out: ProbeOutput, plan: Plan) -> tuple[int | None, str]:
    """The pinned limit the plugin configured for this pod, and where it comes from: the pod's
    CUDA_MPS_PINNED_DEVICE_MEM_LIMIT, else the node's labels (memory / replicas), else the card's memory as
    the probe reads it over the replicas the plugin advertises. (None, why) where none of them says."""
    env = (out.data.get("env") or {}).get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT")
    mib = parse_mps_limit(env)
    if mib:
        return mib, f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT={env} in the pod"
    if plan.slice_mib:
        return plan.slice_mib, plan.limit_source or plan.note
    card = out.smi_total_mib or out.cuda.get("device_total_mib")
    if plan.replicas and plan.replicas > 1 and card:
        return card // plan.replicas, f"the card's {card} MiB / {plan.replicas} replicas"
    return None, (f"no CUDA_MPS_PINNED_DEVICE_MEM_LIMIT in the pod, no {LABEL_MEMORY} label and "
                  f"{plan.replicas or 'no'} replica(s) advertised")


def _mps_visible(out: ProbeOutput, plan: Plan, subject: str) -> Verdict:
    """MPS: the pinned limit shows in cuMemGetInfo's free (limit less the client's context) while total stays
    the card (measured on an H200, driver 580). A figure under the limit is only the limit's doing when the
    card itself has more free: else it is other processes' memory (a busy card), which proves nothing."""
    limit, source = mps_limit(out, plan)
    seen = out.summary()
    if limit is None:
        return Verdict.skipped(f"cannot tell which pinned memory limit the MPS plugin configured on {plan.node} "
                               f"({source}), so the pod's view cannot be judged; label the node with GFD "
                               f"({LABEL_MEMORY}, {LABEL_REPLICAS})", subject=subject)
    free = out.cuda.get("free_mib")
    if free is None:
        return Verdict.failed(subject, f"the {limit} MiB pinned limit in cuMemGetInfo", "cuMemGetInfo gave no free "
                              f"figure ({seen})", "report this as a clusterproof bug")
    expected = f"at most {limit} MiB free and no less than that minus a CUDA context (MPS pinned limit, {source})"
    tol = _tol(limit)
    card = out.smi_total_mib or out.cuda.get("device_total_mib")
    card_free = out.card_free_mib
    if free > limit + tol:
        observed = f"cuMemGetInfo free {free} MiB, more than the {limit} MiB limit"
        if (card and _close(free + CONTEXT_MIB, card)) or (card_free is not None
                                                          and free + CONTEXT_MAX_MIB >= card_free):
            observed += " (what the whole card has free: no pinned limit applies to the pod)"
        return Verdict.failed(subject, expected, f"{observed}; {seen}", FIX_MPS)
    used = (f"nvidia-smi: {out.smi_used_mib} of {out.smi_total_mib} MiB used" if card_free is not None
            else "nvidia-smi gave no memory.used")
    if free < limit - CONTEXT_MAX_MIB - tol:
        return Verdict.failed(subject, expected,
                              f"only {free} MiB free, less than the {limit} MiB limit minus a CUDA context: other "
                              f"processes hold memory on the card (a busy card; {used}) or a smaller limit is set; "
                              f"{seen}", "free the GPU of processes outside the MPS slices, or " + FIX_MPS)
    if card_free is None:
        return Verdict.skipped(f"cuMemGetInfo shows {free} MiB free, within the {limit} MiB limit, but {used}: "
                               "without the card's own free memory a pinned limit cannot be told from a busy card; "
                               + FIX_SMI, subject=subject)
    if card_free - free <= CONTEXT_MAX_MIB + tol:
        return Verdict.skipped(f"cannot tell the pinned limit from a busy card: cuMemGetInfo shows {free} MiB free "
                               f"and the whole card has only {card_free} MiB free ({used}), so the figure may be "
                               "other processes' memory, not the limit; rerun when the GPU is idle",
                               subject=subject)
    return Verdict.passed(subject, expected, f"{seen}; the card has {card_free} MiB free, the pod sees {free}")


def _not_loaded_note(out: ProbeOutput) -> str:
    pre = out.data.get("preload") or {}
    how = (f"/etc/ld.so.preload names {', '.join(pre['entries'])}" if pre.get("entries")
           else "no /etc/ld.so.preload entry")
    env = pre.get("ld_preload_env")
    return f"libvgpu.so is not loaded in the process ({how}; LD_PRELOAD {('= ' + env) if env else 'unset'})"


def visible_memory(out: ProbeOutput, plan: Plan, pod: str = "the GPU pod") -> Verdict:
    """The pod sees its slice: cuMemGetInfo total and, where the setup limits NVML too, nvidia-smi agreeing."""
    subject = f"visible GPU memory in {pod} on {plan.node}"
    skip = _no_cuda_skip(subject, out, plan)
    if skip:
        return skip
    cuda_total, smi_total = out.cuda_total_mib, out.smi_total_mib
    seen = out.summary()
    if plan.sharing == "time-slicing":
        return Verdict.skipped(f"{plan.node} shares GPUs by time-slicing: no memory isolation by design, the pod "
                               f"sees {cuda_total} MiB of the card; use HAMi, MPS or MIG for isolation",
                               subject=subject)
    if plan.sharing == "mps":
        return _mps_visible(out, plan, subject)
    expected = plan.slice_mib
    if expected is None:                      # MIG: what CUDA sees is the instance; nvidia-smi must agree
        expected = cuda_total
    assert expected is not None               # _no_cuda_skip returned above when cuMemGetInfo gave no total
    preload = out.preload_failed()
    bad = []
    if cuda_total is not None and not _close(cuda_total, expected):
        bad.append(f"cuMemGetInfo total {cuda_total} MiB")
    smi_missing = False
    if plan.nvml_limited:
        if smi_total is None:
            smi_missing = True
            bad.append(f"nvidia-smi gave no memory.total ({out.smi.get('error') or 'no row'}), so it cannot be "
                       "compared with cuMemGetInfo")
        elif not _close(smi_total, expected):
            bad.append(f"nvidia-smi memory.total {smi_total} MiB")
    if not bad:
        return Verdict.passed(subject, f"{expected} MiB", seen)
    card = plan.card_mib
    whole = card and any(_close(v, card) for v in (cuda_total, smi_total) if v is not None)
    observed = ", ".join(bad)
    if whole and plan.isolated:
        observed += f" (the whole {card} MiB card: the limit is not applied)"
    if plan.sharing == "vgpu" and out.vgpu_loaded is False:
        observed += "; " + _not_loaded_note(out)
    if preload:
        observed += f"; {preload}"
    if plan.isolated and not out.limit_env() and plan.sharing == "vgpu":
        observed += "; no CUDA_DEVICE_MEMORY_LIMIT_* in the container's environment"
    if smi_missing and len(bad) == 1:
        fix = FIX_SMI
    elif plan.sharing == "vgpu":
        fix = FIX_HAMI
    else:
        fix = "check the GPU node's driver and the device plugin's configuration"
    return Verdict.failed(subject, f"{expected} MiB in cuMemGetInfo and nvidia-smi ({plan.note})", observed, fix)


def half_slice_allocates(out: ProbeOutput, plan: Plan, pod: str = "the GPU pod") -> Verdict:
    subject = f"allocating half the slice in {pod} on {plan.node}"
    skip = _no_cuda_skip(subject, out, plan)
    if skip:
        return skip
    mib = plan.within_mib
    free = out.cuda.get("free_mib")
    after_ctx = f"{free} MiB of it free after the CUDA context" if free is not None else "the context's share unknown"
    if mib is None:
        return Verdict.failed(subject, f"room in the {plan.slice_mib} MiB slice for a CUDA context (about "
                              f"{CONTEXT_MIB} MiB) plus half the slice",
                              f"the slice is too small for a CUDA context plus half the slice ({after_ctx})",
                              f"ask for a slice of at least {MIN_SLICE_MIB} MiB ({GPUMEM} on HAMi): a CUDA context "
                              f"alone takes about {CONTEXT_MIB} MiB of it")
    adapted = plan.slice_mib is not None and mib < plan.slice_mib // 2
    what = (f"{mib} MiB (what is left of the {plan.slice_mib} MiB slice beside a CUDA context of about "
            f"{CONTEXT_MIB} MiB; half does not fit)" if adapted else f"{mib} MiB")
    a = out.alloc(mib)
    if a is None:
        return Verdict.failed(subject, f"a {mib} MiB allocation attempted", "the probe did not try it",
                              "report this as a clusterproof bug")
    if a.get("rc") == 0:
        return Verdict.passed(subject, f"{what} allocated", str(a.get("result")))
    observed = f"{a.get('result')} ({out.summary()})"
    if free is not None and free < mib:
        observed += (f"; only {free} MiB of the {plan.slice_mib} MiB slice are free after the CUDA context: the "
                     "slice is too small for a context plus half the slice")
    return Verdict.failed(subject, f"cuMemAlloc of {what} to succeed", observed,
                          "the slice is too small for the CUDA context plus data, or other processes hold the memory: "
                          "check nvidia-smi on the node and the pod's nvidia.com/gpumem")


def over_slice_fails(out: ProbeOutput, plan: Plan, pod: str = "the GPU pod") -> Verdict:
    subject = f"allocating more than the slice in {pod} on {plan.node}"
    skip = _no_cuda_skip(subject, out, plan)
    if skip:
        return skip
    if plan.sharing == "time-slicing":
        return Verdict.skipped(f"{plan.node} shares GPUs by time-slicing: no memory limit by design, so nothing "
                               "stops a pod from using the whole card; use HAMi, MPS or MIG for isolation",
                               subject=subject)
    if out.oversubscribed():
        return Verdict.skipped("CUDA_OVERSUBSCRIBE=true in the pod: HAMi spills over the slice into host memory by "
                               "configuration, so an over-slice allocation is allowed", subject=subject)
    if plan.over_mib is None:
        return Verdict.skipped(f"{plan.note}: there is no slice smaller than the card on {plan.node} to exceed",
                               subject=subject)
    a = out.alloc(plan.over_mib)
    if a is None:
        return Verdict.failed(subject, f"a {plan.over_mib} MiB allocation attempted", "the probe did not try it",
                              "report this as a clusterproof bug")
    if a.get("result") == OOM:
        if plan.sharing == "mps":
            # An MPS pod sees the card's real free memory: an OOM proves the limit only where the card had room.
            card_free = out.card_free_mib
            if card_free is None:
                return Verdict.skipped(f"{OOM} for {plan.over_mib} MiB, but nvidia-smi gave no memory.used: without "
                                       "the card's own free memory the limit cannot be told from a busy card; "
                                       + FIX_SMI, subject=subject)
            if card_free < plan.over_mib + CONTEXT_MAX_MIB:
                return Verdict.skipped(f"{OOM} for {plan.over_mib} MiB proves no limit: the whole card has only "
                                       f"{card_free} MiB free (a busy card); rerun when the GPU is idle",
                                       subject=subject)
        return Verdict.passed(subject, OOM, str(a.get("result")))
    observed = f"cuMemAlloc of {plan.over_mib} MiB returned {a.get('result')}"
    if a.get("rc") == 0:
        observed += f" (the pod can exceed its {plan.slice_mib} MiB slice)"
    if plan.sharing == "vgpu" and out.vgpu_loaded is False:
        observed += "; " + _not_loaded_note(out)
    preload = out.preload_failed()
    if preload:
        observed += f"; {preload}"
    return Verdict.failed(subject, f"{OOM} for {plan.over_mib} MiB (slice {plan.slice_mib} MiB)", observed,
                          FIX_HAMI if plan.sharing == "vgpu" else FIX_MPS)


def exec_shell_argv(probe_argv: list[str]) -> list[str]:
    """The probe as a user's `kubectl exec` shell runs it without the container's LD_PRELOAD: HAMi-core's
    hook must still come, from /etc/ld.so.preload (the other env, the limits included, stays as exec gives it)."""
    return ["/bin/sh", "-c", "unset LD_PRELOAD; exec " + shlex.join(probe_argv)]


def every_process(rule, runs: dict[str, ProbeOutput | None], plan: Plan, pod: str = "the GPU pod",
                  errors: dict[str, str] | None = None) -> Verdict:
    """One memory rule (visible_memory, over_slice_fails, ...) over every probe run in the pod: the container's
    own process and a kubectl exec shell. A failure in any run fails, naming it; else the first skip; else pass."""
    errors = errors or {}
    verdicts: dict[str, Verdict] = {}
    for label, out in runs.items():
        if out is None:
            verdicts[label] = Verdict.failed(f"the GPU probe in {pod} ({label})", "a result",
                                             errors.get(label) or "none",
                                             "pass a --gpu-probe-image that has /bin/sh and python3")
        else:
            verdicts[label] = rule(out, plan, f"{pod} ({label})" if len(runs) > 1 else pod)
    failed = {k: v for k, v in verdicts.items() if v.status == Status.FAIL}
    if failed:
        label, first = next(iter(failed.items()))
        observed = "; ".join(f"{k}: {v.observed}" for k, v in failed.items())
        fix = first.fix
        shell = runs.get(EXEC_SHELL)
        if plan.sharing == "vgpu" and EXEC_SHELL in failed and shell is not None and shell.vgpu_loaded is False:
            observed += ("; HAMi-core's libvgpu.so is not loaded in a shell opened with kubectl exec once LD_PRELOAD "
                         "is unset: it is not preloaded through /etc/ld.so.preload")
            fix = FIX_PRELOAD
        subject = first.subject.replace(f" ({label})", "") + (f" (in {', '.join(failed)})" if len(runs) > 1 else "")
        return Verdict.failed(subject, first.expected, observed, fix,
                              rows=[v.message for v in failed.values()] if len(failed) > 1 else [])
    for v in verdicts.values():
        if v.status != Status.PASS:
            return v
    first = next(iter(verdicts.values()))
    if len(verdicts) == 1:
        return first
    return Verdict.passed(first.subject.split(" (")[0] + f" (in {', '.join(verdicts)})", first.expected,
                          "; ".join(f"{k}: {v.observed}" for k, v in verdicts.items()))


def _held_problems(outs: dict[str, ProbeOutput]) -> list[str]:
    rows = []
    for pod, out in outs.items():
        others = ", ".join(p for p in outs if p != pod)
        for h in out.data.get("held") or []:
            if h.get("rc") != 0:
                rows.append(f"{pod}: holding {h.get('mib')} MiB of its own slice failed with {h.get('result')} while "
                            f"{others} held memory on the same GPU")
    return rows


def overlap(outs: dict[str, ProbeOutput]) -> tuple[bool | None, str]:
    """Whether each probe made its over-the-slice attempt while every other one held its context and allocation.

    From the probes' own time stamps (one node, one clock). None: a probe recorded no hold (an old probe, or
    one that never got so far); False: they missed each other.
    """
    windows: dict[str, tuple[float, float]] = {}
    tries: dict[str, list[float]] = {}
    for pod, out in outs.items():
        tl = out.data.get("timeline") or {}
        if not out.data.get("held") or tl.get("held") is None or tl.get("released") is None:
            return None, f"{pod}'s probe held no allocation (it allocated and freed at once)"
        windows[pod] = (float(tl["held"]), float(tl["released"]))
        tries[pod] = [float(a["t"]) for a in out.data.get("allocs", []) if a.get("t") is not None]
        during = out.data.get("mem_during") or {}
        if during.get("t") is not None:
            tries[pod].append(float(during["t"]))
        tries[pod] = sorted(set(tries[pod]))
        if not tries[pod]:
            return None, f"{pod}'s probe made no attempt while it held its memory"
    t0 = min(lo for lo, _ in windows.values())

    def at(t: float) -> str:
        return f"+{t - t0:.1f}s"

    for pod in outs:
        for other, (lo, hi) in windows.items():
            if other == pod:
                continue
            for t in tries[pod]:
                if not lo <= t <= hi:
                    return False, (f"{pod} tried at {at(t)}, outside {other}'s hold {at(lo)}..{at(hi)}")
    return True, "; ".join(f"{p} held its memory {at(lo)}..{at(hi)} and read and tried to exceed its slice at "
                           f"{', '.join(dict.fromkeys(at(t) for t in tries[p]))}" for p, (lo, hi) in windows.items())


def pair_keeps_limits(outs: dict[str, ProbeOutput], plans: dict[str, Plan], same_gpu: bool | None,
                      gpus: str = "") -> Verdict:
    """Two pods on one physical GPU, holding their contexts and allocations at the same time: each sees and is
    held to its own slice. Not proven (different or unknown GPUs, probes that missed each other) is a skip."""
    subject = "two pods on one GPU"
    for pod, out in outs.items():
        skip = _no_cuda_skip(f"{subject} ({pod})", out, plans[pod])
        if skip:
            return skip
    if same_gpu is None:
        return Verdict.skipped(f"cannot tell whether the two pods share one physical GPU ({gpus or 'no GPU UUID'}): "
                               "sharing was not proven, so nothing is judged; use a --gpu-probe-image whose libcuda "
                               "answers cuDeviceGetUuid, or give the pod nvidia-smi", subject=subject)
    if same_gpu is False:
        return Verdict.skipped(f"the two pods landed on different GPUs ({gpus}), so sharing was not exercised; free "
                               "a GPU or pin one with nvidia.com/use-gpuuuid", subject=subject)
    held = _held_problems(outs)
    if held:
        return Verdict.failed(subject, "each pod able to hold part of its own slice while the other holds its own",
                              f"{len(held)} problem(s): {held[0]}", FIX_HAMI, rows=held)
    together, when = overlap(outs)
    if together is not True:
        return Verdict.skipped(f"the two probes did not hold their memory at the same time ({when}), so sharing "
                               "was not exercised; rerun with a larger --timeout-scale", subject=subject)
    bad = []
    for pod, out in outs.items():
        plan = plans[pod]
        for v in (visible_memory(out, plan, pod), over_slice_fails(out, plan, pod)):
            if v.status == Status.FAIL:
                bad.append(f"{pod}: {v.observed} (expected {v.expected})")
            elif v.status == Status.SKIP:
                return Verdict.skipped(v.reason, subject=subject, requires=v.requires)
        during = out.data.get("mem_during") or {}
        if plan.sharing == "vgpu" and plan.slice_mib and during.get("total_mib") is not None \
                and not _close(int(during["total_mib"]), plan.slice_mib):
            bad.append(f"{pod}: while the other pod held memory, cuMemGetInfo total {during['total_mib']} MiB "
                       f"(expected its own {plan.slice_mib} MiB)")
    expected = "each pod limited to its own slice while both hold memory on the GPU"
    if bad:
        return Verdict.failed(subject, expected, f"{len(bad)} problem(s): {bad[0]}",
                              FIX_HAMI if any(p.sharing == "vgpu" for p in plans.values()) else FIX_MPS, rows=bad)
    return Verdict.passed(subject, expected, f"same GPU ({gpus}); {when}; "
                          + "; ".join(f"{p}: {o.summary()}" for p, o in outs.items()))


def probe_result_missing(error: str | None, exec_error: str | None, has_output: bool) -> Verdict | None:
    """GPU-003..005 need the probe pod's result: a skip pointing at GPU-002 when it has none; None: go on."""
    if error or not has_output:
        return Verdict.skipped(f"the GPU probe pod did not give a result (GPU-002 reports it): {error or exec_error}",
                               blames="GPU-002")
    return None


def pair_applicable(node: GpuNode, plan: Plan) -> Verdict | None:
    """GPU-006 applies where two pods share one GPU with a memory limit each; a skip saying why not, else None."""
    reason = {"none": f"{node.name} gives each pod a whole GPU: no two pods share one",
              "mig": f"{node.name} offers MIG instances: isolation is in hardware, no two pods share one",
              "time-slicing": f"{node.name} shares GPUs by time-slicing: no memory isolation by design, each "
                              "pod sees and may use the whole card; use HAMi, MPS or MIG for isolation"}
    if plan.sharing in reason:
        return Verdict.skipped(reason[plan.sharing], subject="two pods on one GPU")
    return None


def pair_pods_broken(node: str, start_errors: Sequence[str], probe_errors: Sequence[str] = ()) -> Verdict | None:
    """GPU-006's two pods must run and each give a probe result: a failure naming the pod that did not; else None."""
    if start_errors:
        return Verdict.failed(f"two GPU pods on {node}", "both Running", "; ".join(start_errors),
                              "free capacity on one GPU (or see GPU-002)")
    if probe_errors:
        return Verdict.failed(f"the GPU probe in two pods on {node}", "a result from each", "; ".join(probe_errors),
                              "pass a --gpu-probe-image that has python3")
    return None


def limit_mib(value: str | None) -> int | None:
    """HAMi-core's limit syntax: `2048m`, `2g`, `512k` or plain bytes."""
    if not value:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[iI]?[bB]?\s*", value)
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).lower()
    return {"": n // (1024 * 1024), "k": n // 1024, "m": n, "g": n * 1024}[unit]


def no_gpu_nodes_verdict() -> Verdict:
    return Verdict(Status.SKIP, "GPU nodes", "at least one node advertising nvidia.com/gpu", "none",
                   "install the NVIDIA device plugin or HAMi on the GPU nodes",
                   reason="no GPU nodes: no node has nvidia.com/gpu, nvidia.com/gpu.shared or nvidia.com/mig-* "
                          "in capacity, a HAMi/4pd register annotation or GFD labels; pass --require-gpu to fail "
                          "instead, or -m 'not gpu' to leave the GPU checks out",
                   requires=NEEDS_GPU)


def allocation_verdict(plan: Plan, *, error: str | None, node: str | None, annotations: dict[str, str],
                       output: ProbeOutput | None, exec_error: str | None, pod: str = "the GPU pod") -> Verdict:
    """A pod asking for one GPU (and a slice on HAMi) is scheduled, runs, and got what it asked for."""
    asked = ", ".join(f"{k}: {v}" for k, v in plan.resources.items())
    subject = f"{pod} asking for {asked} on {plan.node}"
    expected = f"Running on {plan.node}"
    if error:
        fix = "see GPU-001 for the node's advertisement; check the device plugin and the scheduler's events"
        if GPUMEM in error and plan.sharing == "vgpu":
            fix = ("the pod was not placed by HAMi's scheduler: check the hami-scheduler pod and its webhook, which "
                   "sets schedulerName on pods asking for nvidia.com/gpumem (is the namespace labelled "
                   "hami.io/webhook=ignore?)")
        elif "Insufficient" in error:
            fix = "free a GPU on the node or check its device plugin (GPU-001)"
        elif "pull" in error.lower() or "image" in error.lower():
            fix = "make the GPU probe image pullable on the node or pass --gpu-probe-image (see --print-images)"
        return Verdict.failed(subject, expected, error, fix)
    if node and node != plan.node:
        return Verdict.failed(subject, expected, f"running on {node}", "report this as a clusterproof bug")
    bad = []
    shown = []
    if plan.sharing == "vgpu":
        prefix = next((p for p in VGPU_PREFIXES if p + BIND_PHASE in annotations or p + ALLOCATED in annotations),
                      VGPU_PREFIXES[0])
        phase = annotations.get(prefix + BIND_PHASE)
        if phase != "success":
            bad.append(f"{prefix}{BIND_PHASE} is {phase!r}, expected 'success'")
        try:
            ctrs = parse_allocated(annotations.get(prefix + ALLOCATED))
        except ValueError as exc:
            ctrs = []
            bad.append(f"{prefix}{ALLOCATED} cannot be read: {exc}")
        devs = [d for c in ctrs for d in c]
        if not devs and not any(ALLOCATED in b for b in bad):
            bad.append(f"no {prefix}{ALLOCATED} annotation")
        for d in devs:
            shown.append(f"allocated {d.uuid} {d.mem_mib} MiB")
            if d.mem_mib != plan.slice_mib:
                bad.append(f"{prefix}{ALLOCATED} gives {d.uuid} {d.mem_mib} MiB, expected the {plan.slice_mib} "
                           "MiB slice")
    if output is None:
        bad.append(f"the probe gave no result: {exec_error}")
    elif plan.sharing == "vgpu":
        env = output.data.get("env") or {}
        lim = env.get("CUDA_DEVICE_MEMORY_LIMIT_0") or env.get("CUDA_DEVICE_MEMORY_LIMIT")
        shown.append(f"CUDA_DEVICE_MEMORY_LIMIT_0={lim}")
        if limit_mib(lim) != plan.slice_mib:
            bad.append(f"container env CUDA_DEVICE_MEMORY_LIMIT_0={lim!r}, expected {plan.slice_mib}m "
                       "(the device plugin's Allocate did not pass the slice)")
    if bad:
        fix = ("check the HAMi device plugin's logs for this pod's Allocate and the scheduler's bind" if plan.sharing
               == "vgpu" else "check the device plugin's logs")
        if output is None:
            fix = "pass a --gpu-probe-image that has python3 (libcuda comes from the node)"
        return Verdict.failed(subject, expected + " with its allocation recorded", "; ".join(bad), fix)
    return Verdict.passed(subject, expected, "; ".join(shown) or "Running")


def under_require_gpu(v: Verdict, require_gpu: bool) -> Verdict:
    """--require-gpu: a skip for a missing GPU or CUDA device (`requires`) becomes a failure; else `v` as it is."""
    if not (require_gpu and v.status == Status.SKIP and v.requires in (NEEDS_GPU, NEEDS_CUDA)):
        return v
    return Verdict.failed(v.subject, v.expected or "a CUDA device", v.observed or v.reason,
                          v.fix or "run on a GPU node with the NVIDIA driver", rows=[v.reason])


def apply_verdict(v: Verdict, require_gpu: bool) -> Verdict:
    """Turn a verdict into the check's outcome (checks.apply), a missing GPU failing under --require-gpu."""
    __tracebackhide__ = True
    from . import checks

    return checks.apply(under_require_gpu(v, require_gpu))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def pair_plans(node: GpuNode, plan: Plan, names: tuple[str, str] = ("gpu-pair-a", "gpu-pair-b")
               ) -> tuple[dict[str, Plan], dict[str, str]]:
    """Plans for two pods meant to share one physical GPU, and the pod annotations that pin them there.

    HAMi: different slices (the plan's and half as much again, both big enough for a CUDA context plus half
    the slice; a smaller second slice would be too small on real HAMi-core), pinned with
    nvidia.com/use-gpuuuid to the first healthy GPU. MPS: the daemon's limit is the same for both.
    """
    import copy

    a, b = copy.deepcopy(plan), copy.deepcopy(plan)
    ann: dict[str, str] = {}
    if plan.sharing == "vgpu" and plan.slice_mib:
        bigger = plan.slice_mib + plan.slice_mib // 2
        if plan.card_mib and plan.slice_mib + bigger > plan.card_mib:
            bigger = max(plan.card_mib - plan.slice_mib, MIN_SLICE_MIB)
        b.slice_mib = bigger
        b.resources = {**plan.resources, GPUMEM: b.slice_mib}
        b.note = f"HAMi slice of {b.slice_mib} MiB (nvidia.com/gpumem)"
        try:
            healthy = [d for d in parse_register(node.register) if d.health]
        except ValueError:
            healthy = []
        if healthy:
            ann[USE_UUID] = healthy[0].id
    return {names[0]: a, names[1]: b}, ann


def same_gpu(outputs: dict[str, ProbeOutput | None]) -> tuple[bool | None, str]:
    """Whether the pods' probes measured the same physical GPU (by UUID), and the UUIDs seen; None: cannot tell."""
    ids: dict[str, str] = {}
    for pod, out in outputs.items():
        if out is None:
            return None, f"{pod} gave no probe output"
        uuid, source = out.gpu_uuid
        if uuid is None:
            return None, f"{pod}: {source}"
        ids[pod] = uuid
    if len(ids) < 2:
        return None, "fewer than two probe outputs"
    text = ", ".join(f"{p}: {u}" for p, u in ids.items())
    return len(set(ids.values())) == 1, text
