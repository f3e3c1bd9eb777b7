"""GPU isolation verdicts on synthetic probe outputs: overlap, same GPU, MPS limits, busy cards, the exec shell.

Each output is written in the probe's format (manifests/gpu/probe.py, version 2) with the figures the real
components give (an H100 80GB HBM3: NVML total 81559 MiB, CUDA total 81089 MiB; a CUDA context about 520 MiB
under HAMi-core, measured on an H200). Every case here was judged wrongly by the earlier logic: named in
each test's docstring. Real-GPU recordings are re-judged in tests/test_gpu_verdicts.py.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from clusterproof import gpu
from clusterproof.facts import NodeFacts

DATA = Path(__file__).resolve().parent / "data" / "gpu"
UUID_A = "GPU-5a9c7f1e-3b2d-4c8e-9f61-0d2e7a4b8c13"
UUID_B = "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448"
CARD_NVML, CARD_CUDA = 81559, 81089
T0 = 1_780_000_000.0


def node(name="gpu-1", capacity=None, labels=None) -> NodeFacts:
    capacity = {"cpu": "32", **(capacity or {})}
    return NodeFacts(name=name, internal_ip="10.0.0.1", roles=["<none>"], kubelet_version="v1.35.4",
                     runtime_version="containerd://2.1", kernel_version="6.8", os_image="Ubuntu", pod_cidrs=[],
                     taints=[], annotations={}, labels=labels or {}, allocatable=dict(capacity), capacity=capacity)


def synth(total: int, free: int, *, smi_total: int | None = None, smi_used: int = 0, smi: bool = True,
          uuid: str | None = UUID_A, env: dict | None = None, allocs=(), held=(), timeline: dict | None = None,
          during: dict | None = None, mapped: list[str] | None = None, preload_entries=(), ld_preload=None
          ) -> gpu.ProbeOutput:
    """A probe output: CUDA's view, nvidia-smi's, the allocations (mib, result[, t]) and the holds."""
    def attempt(a):
        mib, result, *t = a
        rec = {"mib": mib, "rc": 0 if result == "CUDA_SUCCESS" else 2, "result": result}
        if t:
            rec["t"] = t[0]
        return rec

    cuda = {"lib": "libcuda.so.1", "error": None, "name": "NVIDIA H100 80GB HBM3", "device_total_mib": CARD_CUDA,
            "total_mib": total, "free_mib": free, "mem_info_rc": 0}
    if uuid:
        cuda["uuid"] = uuid
    rows = [{"index": "0", "uuid": uuid or UUID_A, "name": "NVIDIA H100 80GB HBM3",
             "total_mib": smi_total if smi_total is not None else total, "used_mib": smi_used}] if smi else []
    data = {"probe": "clusterproof-gpu", "version": 2, "env": env or {}, "cuda": cuda,
            "allocs": [attempt(a) for a in allocs], "held": [attempt(a) for a in held],
            "timeline": timeline or {}, "preload": {"present": bool(preload_entries), "entries": list(preload_entries),
                                                    "vgpu_mapped": mapped, "ld_preload_env": ld_preload},
            "smi": {"rows": rows, "error": None if smi else "nvidia-smi not found in PATH"}}
    if during:
        data["mem_during"] = during
    return gpu.ProbeOutput(data)


def mps_node(memory_label: bool = True):
    labels = {gpu.LABEL_COUNT: "1", gpu.LABEL_REPLICAS: "4", gpu.LABEL_SHARING: "mps"}
    if memory_label:
        labels[gpu.LABEL_MEMORY] = str(CARD_NVML)
    return gpu.discover([node("mps", capacity={"nvidia.com/gpu": "4"}, labels=labels)])[0]


# ------------------------------------------------------------------ GPU-003/005 on MPS

def test_mps_pod_without_a_limit_fails_even_without_the_memory_label():
    """Old: without nvidia.com/gpu.memory the expected figure was CUDA's own total, so the whole card passed."""
    plan = gpu.plan_for(mps_node(memory_label=False))
    assert plan.slice_mib is None and plan.replicas == 4
    out = synth(CARD_CUDA, CARD_CUDA - 520, smi_total=CARD_NVML)
    v = gpu.visible_memory(out, plan)
    assert v.status == "fail", v.message
    assert f"more than the {CARD_NVML // 4} MiB limit" in v.observed and "no pinned limit" in v.observed
    assert "/ 4 replicas" in v.expected


def test_mps_limit_from_the_replicas_the_plugin_advertises():
    """No replicas label: the plugin advertises GPUs x replicas, so capacity / gpu.count is the sharing config."""
    n = gpu.discover([node("m", capacity={"nvidia.com/gpu": "8"}, labels={
        gpu.LABEL_COUNT: "2", gpu.LABEL_SHARING: "mps", gpu.LABEL_MEMORY: str(CARD_NVML)})])[0]
    assert gpu.plan_for(n).slice_mib == CARD_NVML // 4


def test_mps_limit_in_the_pods_env_wins():
    plan = gpu.plan_for(mps_node())
    out = synth(CARD_CUDA, 3578, smi_total=CARD_NVML, smi_used=600,
                env={"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=4G,1=8G"})
    assert gpu.mps_limit(out, plan) == (4096, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4G,1=8G in the pod")
    assert gpu.visible_memory(out, plan).status == "pass"
    assert gpu.parse_mps_limit("512M") == 512 and gpu.parse_mps_limit("1=2G", device=0) is None


def test_busy_card_is_not_a_pass():
    """Old: free memory under the expected figure passed, whatever held the rest of the card."""
    plan = gpu.plan_for(mps_node())          # 81559 / 4 = 20389 MiB
    limited = synth(CARD_CUDA, 19870, smi_total=CARD_NVML, smi_used=300)
    assert gpu.visible_memory(limited, plan).status == "pass"
    busy = synth(CARD_CUDA, 15000, smi_total=CARD_NVML, smi_used=66000)
    v = gpu.visible_memory(busy, plan)
    assert v.status == "fail" and "busy card" in v.observed and "66000 of 81559 MiB used" in v.observed
    ambiguous = synth(CARD_CUDA, 20000, smi_total=CARD_NVML, smi_used=61000)
    v = gpu.visible_memory(ambiguous, plan)
    assert v.status == "skip" and "cannot tell the pinned limit from a busy card" in v.reason
    no_smi = synth(CARD_CUDA, 19870, smi=False)
    assert gpu.visible_memory(no_smi, plan).status == "skip"


def test_an_oom_on_a_busy_card_proves_no_limit():
    """Old: on MPS any CUDA_ERROR_OUT_OF_MEMORY over the slice passed GPU-005, also where the card was full."""
    plan = gpu.plan_for(mps_node())
    over = plan.over_mib
    assert over is not None
    full = synth(CARD_CUDA, 15000, smi_total=CARD_NVML, smi_used=66000, allocs=[(over, gpu.OOM)])
    v = gpu.over_slice_fails(full, plan)
    assert v.status == "skip" and "busy card" in v.reason
    idle = synth(CARD_CUDA, 19870, smi_total=CARD_NVML, smi_used=300, allocs=[(over, gpu.OOM)])
    assert gpu.over_slice_fails(idle, plan).status == "pass"


# ------------------------------------------------------------------ GPU-003 where nvidia-smi must agree

def test_exclusive_and_mig_without_nvidia_smi_fail():
    """Old: with nvidia-smi missing the comparison the MUST asks for was dropped silently, and the check passed."""
    raw = json.loads((DATA / "nvidia-exclusive.stdout").read_text())
    raw["smi"] = {"path": None, "rows": [], "error": "nvidia-smi not found in PATH"}
    out = gpu.ProbeOutput(raw)
    excl = gpu.plan_for(gpu.discover([node("e", capacity={"nvidia.com/gpu": "1"},
                                           labels={gpu.LABEL_MEMORY: str(CARD_NVML)})])[0])
    mig = gpu.plan_for(gpu.discover([node("mig", capacity={"nvidia.com/mig-1g.10gb": "7"})])[0])
    for plan in (excl, mig):
        v = gpu.visible_memory(out, plan)
        assert v.status == "fail", (plan.sharing, v.message)
        assert "nvidia-smi gave no memory.total (nvidia-smi not found in PATH)" in v.observed
        assert v.fix == gpu.FIX_SMI


# ------------------------------------------------------------------ GPU-004: slices too small for a context

def test_small_slices_adapt_the_probe_plan():
    """Old: half of any slice, so a 1024 MiB slice asked 512 MiB beside a ~520 MiB context (504 MiB free)."""
    def plan(m):
        return gpu.Plan("n", "hami", "vgpu", {}, m, True, CARD_NVML, True, f"HAMi slice of {m} MiB")

    assert plan(1024).probe_allocs() == [440, 1536]
    assert plan(2048).probe_allocs() == [1024, 3072]
    assert plan(600).within_mib is None
    out = synth(1024, 506, allocs=[(440, "CUDA_SUCCESS"), (1536, gpu.OOM)], env={"CUDA_DEVICE_MEMORY_LIMIT_0": "1024m"})
    v = gpu.half_slice_allocates(out, plan(1024))
    assert v.status == "pass" and "what is left of the 1024 MiB slice beside a CUDA context" in v.expected
    tiny = synth(600, 82, allocs=[(900, gpu.OOM)])
    v = gpu.half_slice_allocates(tiny, plan(600))
    assert v.status == "fail" and "too small for a CUDA context plus half the slice" in v.observed
    assert "82 MiB of it free after the CUDA context" in v.observed and "1168 MiB" in v.fix
    failed = synth(2048, 900, allocs=[(1024, gpu.OOM)])
    assert "only 900 MiB of the 2048 MiB slice are free" in gpu.half_slice_allocates(failed, plan(2048)).observed


def test_pair_slices_fit_a_context_plus_half():
    """Old: the second pod got half the slice (1024 MiB), too small for a context plus half of it."""
    hami = gpu.discover([node("h", capacity={"nvidia.com/gpu": "10"})])[0]
    hami.sharing, hami.setup = "vgpu", "hami"
    plans, _ = gpu.pair_plans(hami, gpu.plan_for(hami))
    slices = sorted(p.slice_mib for p in plans.values())
    assert slices == [2048, 3072]
    for p in plans.values():
        assert p.within_mib == p.slice_mib // 2 and p.within_mib + gpu.CONTEXT_MIB <= p.slice_mib
        assert p.resources[gpu.GPUMEM] == p.slice_mib


# ------------------------------------------------------------------ GPU-006: same GPU, at the same time

def hami_plan(m: int) -> gpu.Plan:
    return gpu.Plan("n", "hami", "vgpu", {gpu.GPUMEM: m}, m, True, CARD_NVML, True, f"HAMi slice of {m} MiB")


def holding(m: int, start: float, uuid: str = UUID_A, visible: str = UUID_A, over_result: str = gpu.OOM,
            total: int | None = None, held_result: str = "CUDA_SUCCESS") -> gpu.ProbeOutput:
    """A pair probe: holds half its slice from start+1, meets at start+10, tries 1.5x its slice, releases at +15."""
    total = total or m
    return synth(total, total - 520, uuid=uuid, env={"CUDA_DEVICE_MEMORY_LIMIT_0": f"{m}m",
                                                      "NVIDIA_VISIBLE_DEVICES": visible},
                 held=[(m // 2, held_result, start + 1)], allocs=[(m + m // 2, over_result, start + 10)],
                 timeline={"start": start, "ctx": start + 0.5, "held": start + 1, "sync": start + 10,
                           "released": start + 15},
                 during={"rc": 0, "total_mib": total, "free_mib": total - 520 - m // 2, "t": start + 10},
                 mapped=["/usr/local/vgpu/libvgpu.so"], preload_entries=["/usr/local/vgpu/libvgpu.so"])


PLANS = {"a": hami_plan(2048), "b": hami_plan(3072)}


def judge(outs):
    same, gpus = gpu.same_gpu(outs)
    return gpu.pair_keeps_limits(outs, PLANS, same, gpus)


def test_two_pods_holding_at_once_on_one_gpu_pass():
    outs = {"a": holding(2048, T0), "b": holding(3072, T0 + 0.4)}
    v = judge(outs)
    assert v.status == "pass", v.message
    assert UUID_A in v.observed and "held its memory" in v.observed


def test_probes_that_did_not_overlap_are_a_skip():
    """Old: GPU-006 ran the probes one after the other, each allocating and freeing at once, and passed."""
    v = judge({"a": holding(2048, T0), "b": holding(3072, T0 + 20)})
    assert v.status == "skip" and "did not hold their memory at the same time" in v.reason
    old_style = {"a": gpu.parse_probe((DATA / "hami-enforced.stdout").read_text()),
                 "b": gpu.parse_probe((DATA / "hami-enforced.stdout").read_text())}
    v = gpu.pair_keeps_limits(old_style, {"a": hami_plan(2048), "b": hami_plan(2048)}, True, "")
    assert v.status == "skip" and "held no allocation" in v.reason


def test_the_same_device_list_string_is_not_the_same_gpu():
    """Old: with the volume-mounts device-list strategy both pods read NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-
    container-devices, so two different GPUs looked like one; the probes' UUIDs tell them apart."""
    path = "/var/run/nvidia-container-devices"
    outs = {"a": holding(2048, T0, uuid=UUID_A, visible=path), "b": holding(3072, T0, uuid=UUID_B, visible=path)}
    same, gpus = gpu.same_gpu(outs)
    assert same is False and UUID_A in gpus and UUID_B in gpus
    v = judge(outs)
    assert v.status == "skip" and "different GPUs" in v.reason


def test_cannot_tell_the_gpu_is_a_skip_not_a_pass():
    """Old: "cannot tell whether they share a GPU" (None) went on to judge the limits and passed."""
    a, b = holding(2048, T0), holding(3072, T0)
    for o in (a, b):
        del o.data["cuda"]["uuid"]
        o.data["smi"]["rows"] = []
    same, gpus = gpu.same_gpu({"a": a, "b": b})
    assert same is None
    v = gpu.pair_keeps_limits({"a": a, "b": b}, PLANS, same, gpus)
    assert v.status == "skip" and "cannot tell whether the two pods share one physical GPU" in v.reason
    assert v.requires is None          # not a missing GPU: --require-gpu leaves it a skip


def test_a_pod_held_to_the_other_pods_slice_fails():
    outs = {"a": holding(2048, T0, total=3072), "b": holding(3072, T0)}
    v = judge(outs)
    assert v.status == "fail" and v.observed.startswith("2 problem(s): a: cuMemGetInfo total 3072 MiB")
    leak = {"a": holding(2048, T0, over_result="CUDA_SUCCESS"), "b": holding(3072, T0)}
    assert "can exceed its 2048 MiB slice" in judge(leak).observed
    starved = {"a": holding(2048, T0), "b": holding(3072, T0, held_result=gpu.OOM)}
    v = judge(starved)
    assert v.status == "fail" and "holding 1536 MiB of its own slice failed" in v.observed


# ------------------------------------------------------------------ GPU-003/005 in a kubectl exec shell

def test_the_limit_must_hold_in_a_kubectl_exec_shell():
    """Old: only the container's own process was probed, so a hook carried by LD_PRELOAD alone passed."""
    plan = hami_plan(2048)
    env = {"CUDA_DEVICE_MEMORY_LIMIT_0": "2048m"}
    own = synth(2048, 1528, env=env, allocs=[(1024, "CUDA_SUCCESS"), (3072, gpu.OOM)],
                mapped=["/usr/local/vgpu/libvgpu.so"], ld_preload="/usr/local/vgpu/libvgpu.so")
    shell = synth(CARD_CUDA, CARD_CUDA - 500, smi_total=CARD_NVML, env=env,
                  allocs=[(1024, "CUDA_SUCCESS"), (3072, "CUDA_SUCCESS")], mapped=[])
    for rule in (gpu.visible_memory, gpu.over_slice_fails):
        assert rule(own, plan).status == "pass"
        v = gpu.every_process(rule, {"probe": own, gpu.EXEC_SHELL: shell}, plan, "pod p")
        assert v.status == "fail" and gpu.EXEC_SHELL in v.subject
        assert "not preloaded through /etc/ld.so.preload" in v.observed and v.fix == gpu.FIX_PRELOAD
    preloaded = copy.deepcopy(own)
    preloaded.data["preload"].update(entries=["/usr/local/vgpu/libvgpu.so"], present=True, ld_preload_env=None)
    for rule in (gpu.visible_memory, gpu.over_slice_fails):
        v = gpu.every_process(rule, {"probe": own, gpu.EXEC_SHELL: preloaded}, plan, "pod p")
        assert v.status == "pass" and gpu.EXEC_SHELL in v.subject


def test_an_exec_shell_that_gave_nothing_fails_naming_it():
    plan = hami_plan(2048)
    own = synth(2048, 1528, allocs=[(3072, gpu.OOM)], mapped=["/usr/local/vgpu/libvgpu.so"])
    v = gpu.every_process(gpu.over_slice_fails, {"probe": own, gpu.EXEC_SHELL: None}, plan, "pod p",
                          {gpu.EXEC_SHELL: "exec failed: /bin/sh: not found"})
    assert v.status == "fail" and "/bin/sh: not found" in v.observed and "/bin/sh" in v.fix
