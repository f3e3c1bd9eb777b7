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

    @property
    def half_mib(self) -> int:
        """About half the slice: the CUDA context counts against the limit, so the whole slice never fits."""
        return self.slice_mib // 2 if self.slice_mib else 1024

    @property
    def over_mib(self) -> int | None:
        if not self.slice_mib or not self.isolated:
            return None
        over = self.slice_mib + max(self.slice_mib // 2, 256)
        if self.card_mib and over >= self.card_mib * 0.9:
            return None
        return over

    def probe_allocs(self) -> list[int]:
        return [m for m in (self.half_mib, self.over_mib) if m]


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


def plan_for(node: GpuNode, slice_mib: int = SLICE_MIB) -> Plan:
    card = card_mib(node)
    res = {node.resource: 1}
    if node.sharing == "vgpu":
        want = slice_mib if not card or card >= 2 * slice_mib else max(card // 4, 256)
        res[GPUMEM] = want
        return Plan(node.name, node.setup, "vgpu", res, want, True, card, True,
                    f"HAMi slice of {want} MiB (nvidia.com/gpumem) on a {card or '?'} MiB card")
    replicas = node.label_int(LABEL_REPLICAS, 1) or 1
    if node.sharing == "mps":
        limit = card // replicas if card else None
        return Plan(node.name, node.setup, "mps", res, limit, True, card, False,
                    f"MPS sharing: {card or '?'} MiB / {replicas} replicas (pinned memory limit)")
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
        return next((a for a in self.data.get("allocs", []) if a.get("mib") == mib), None)

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

    def summary(self) -> str:
        c = self.cuda
        parts = [f"cuMemGetInfo total {c.get('total_mib')} MiB free {c.get('free_mib')} MiB" if c.get("lib")
                 else f"no CUDA ({c.get('error')})"]
        if self.smi.get("rows"):
            parts.append(f"nvidia-smi memory.total {self.smi_total_mib} MiB")
        elif self.smi.get("error"):
            parts.append(f"nvidia-smi: {self.smi['error']}")
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


def visible_memory(out: ProbeOutput, plan: Plan, pod: str = "the GPU pod") -> Verdict:
    """The pod sees its slice: cuMemGetInfo total (and nvidia-smi where the setup limits NVML too)."""
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
    expected = plan.slice_mib
    if expected is None:                      # MIG: what CUDA sees is the instance; nvidia-smi must agree
        expected = cuda_total
    assert expected is not None               # _no_cuda_skip returned above when cuMemGetInfo gave no total
    preload = out.preload_failed()
    bad = []
    free = out.cuda.get("free_mib")
    if plan.sharing == "mps" and expected is not None and free is not None:
        # Measured on an H200 (driver 580): an MPS client's pinned limit shows in cuMemGetInfo's *free*
        # (limit minus the client's context), while total stays the whole card.
        if free <= expected + max(TOLERANCE_MIN_MIB, TOLERANCE * expected):
            return Verdict.passed(subject, f"at most {expected} MiB free (MPS pinned limit)", seen)
        bad.append(f"cuMemGetInfo free {free} MiB")
    elif cuda_total is not None and not _close(cuda_total, expected):
        bad.append(f"cuMemGetInfo total {cuda_total} MiB")
    if plan.nvml_limited and smi_total is not None and not _close(smi_total, expected):
        bad.append(f"nvidia-smi memory.total {smi_total} MiB")
    if not bad:
        return Verdict.passed(subject, f"{expected} MiB", seen)
    card = plan.card_mib
    whole = card and any(_close(v, card) for v in (cuda_total, smi_total) if v is not None)
    observed = ", ".join(bad)
    if whole and plan.isolated:
        observed += f" (the whole {card} MiB card: the limit is not applied)"
    if preload:
        observed += f"; {preload}"
    if plan.isolated and not out.limit_env() and plan.sharing == "vgpu":
        observed += "; no CUDA_DEVICE_MEMORY_LIMIT_* in the container's environment"
    fix = FIX_HAMI if plan.sharing == "vgpu" else (
        "check the MPS control daemon of the NVIDIA device plugin (sharing.mps) and its pinned memory limit"
        if plan.sharing == "mps" else "check the GPU node's driver and the device plugin's configuration")
    return Verdict.failed(subject, f"{expected} MiB ({plan.note})", observed, fix)


def half_slice_allocates(out: ProbeOutput, plan: Plan, pod: str = "the GPU pod") -> Verdict:
    subject = f"allocating half the slice in {pod} on {plan.node}"
    skip = _no_cuda_skip(subject, out, plan)
    if skip:
        return skip
    mib = plan.half_mib
    a = out.alloc(mib)
    if a is None:
        return Verdict.failed(subject, f"a {mib} MiB allocation attempted", "the probe did not try it",
                       "report this as a clusterproof bug")
    if a.get("rc") == 0:
        return Verdict.passed(subject, f"{mib} MiB allocated", str(a.get("result")))
    return Verdict.failed(subject, f"cuMemAlloc of {mib} MiB (half of {plan.slice_mib} MiB) to succeed",
                   f"{a.get('result')} ({out.summary()})",
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
        return Verdict.passed(subject, OOM, str(a.get("result")))
    observed = f"cuMemAlloc of {plan.over_mib} MiB returned {a.get('result')}"
    if a.get("rc") == 0:
        observed += f" (the pod can exceed its {plan.slice_mib} MiB slice)"
    preload = out.preload_failed()
    if preload:
        observed += f"; {preload}"
    return Verdict.failed(subject, f"{OOM} for {plan.over_mib} MiB (slice {plan.slice_mib} MiB)", observed,
                   FIX_HAMI if plan.sharing == "vgpu" else "check the MPS pinned memory limit of the device plugin")


def pair_keeps_limits(outs: dict[str, ProbeOutput], plans: dict[str, Plan], same_gpu: bool | None) -> Verdict:
    """Two pods on one physical GPU: each sees and is held to its own slice."""
    subject = "two pods on one GPU"
    for pod, out in outs.items():
        skip = _no_cuda_skip(f"{subject} ({pod})", out, plans[pod])
        if skip:
            return skip
    if same_gpu is False:
        return Verdict.skipped("the two pods landed on different GPUs, so sharing was not exercised; free a GPU or "
                               "pin one with nvidia.com/use-gpuuuid", subject=subject)
    bad = []
    for pod, out in outs.items():
        for v in (visible_memory(out, plans[pod], pod), over_slice_fails(out, plans[pod], pod)):
            if v.status == Status.FAIL:
                bad.append(f"{pod}: {v.observed} (expected {v.expected})")
            elif v.status == Status.SKIP:
                return Verdict.skipped(v.reason, subject=subject, requires=v.requires)
    if bad:
        return Verdict.failed(subject, "each pod limited to its own slice",
                       f"{len(bad)} problem(s): {bad[0]}", FIX_HAMI)
    return Verdict.passed(subject, "each pod limited to its own slice",
                   "; ".join(f"{p}: {o.summary()}" for p, o in outs.items()))


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

    HAMi: different slices (the plan's and half of it), pinned with nvidia.com/use-gpuuuid to the
    first healthy GPU. MPS: the daemon's limit is the same for both; the node's only GPU is shared.
    """
    import copy

    a, b = copy.deepcopy(plan), copy.deepcopy(plan)
    ann: dict[str, str] = {}
    if plan.sharing == "vgpu" and plan.slice_mib:
        b.slice_mib = max(plan.slice_mib // 2, 256)
        b.resources = {**plan.resources, GPUMEM: b.slice_mib}
        b.note = f"HAMi slice of {b.slice_mib} MiB (nvidia.com/gpumem)"
        try:
            healthy = [d for d in parse_register(node.register) if d.health]
        except ValueError:
            healthy = []
        if healthy:
            ann[USE_UUID] = healthy[0].id
    return {names[0]: a, names[1]: b}, ann


def _gpu_ids(annotations: dict[str, str], out: ProbeOutput | None) -> set[str] | None:
    for p in VGPU_PREFIXES:
        try:
            ctrs = parse_allocated(annotations.get(p + ALLOCATED))
        except ValueError:
            continue
        ids = {d.uuid for c in ctrs for d in c}
        if ids:
            return ids
    if out is not None:
        env = out.data.get("env") or {}
        vis = env.get("NVIDIA_VISIBLE_DEVICES", "")
        if vis and vis not in ("all", "void", "none"):
            return {v.strip() for v in vis.split(",") if v.strip()}
        rows = out.smi.get("rows") or []
        if rows and rows[0].get("uuid"):
            return {r["uuid"] for r in rows}
    return None


def same_gpu(annotations: dict[str, dict[str, str]], outputs: dict[str, ProbeOutput | None]) -> bool | None:
    """Whether the pods got the same physical GPU (None: cannot tell)."""
    ids = [_gpu_ids(annotations.get(p, {}), outputs.get(p)) for p in annotations]
    if any(i is None for i in ids) or len(ids) < 2:
        return None
    return all(i == ids[0] for i in ids[1:])
