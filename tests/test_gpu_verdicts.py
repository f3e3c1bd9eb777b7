"""clusterproof.gpu on recorded outputs: discovery, advertisement, allocation and memory verdicts."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from clusterproof import gpu
from clusterproof.facts import NodeFacts

DATA = Path(__file__).resolve().parent / "data" / "gpu"
ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
UUID = "GPU-5a9c7f1e-3b2d-4c8e-9f61-0d2e7a4b8c13"
REGISTER_JSON = json.dumps([{"id": UUID, "count": 10, "devmem": 81559, "devcore": 100,
                             "type": "NVIDIA-NVIDIA H100 80GB HBM3", "numa": 0, "mode": "hami-core", "health": True}])
REGISTER_OLD = ("GPU-00552014-5c87-89ac-b1a6-7b53aa24b0ec,10,32768,100,NVIDIA-Tesla V100-PCIE-32GB,0,true,0,hami-core:"
                "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448,10,32768,100,NVIDIA-Tesla V100-PCIE-32GB,0,true,1,hami-core:")


def node(name="gpu-1", capacity=None, allocatable=None, labels=None, annotations=None) -> NodeFacts:
    capacity = {"cpu": "32", "memory": "256Gi", **(capacity or {})}
    return NodeFacts(name=name, internal_ip="10.0.0.1", roles=["<none>"], kubelet_version="v1.35.4",
                     runtime_version="containerd://2.1", kernel_version="6.8", os_image="Ubuntu", pod_cidrs=[],
                     taints=[], annotations=annotations or {}, labels=labels or {},
                     allocatable={"cpu": "32", **(allocatable if allocatable is not None else capacity)},
                     capacity=capacity)


def hami_node(alloc="10", handshake=None, register=REGISTER_JSON, prefix="hami.io/"):
    hs = handshake if handshake is not None else "Reported 2025-06-01 11:59:40.123456789 +0000 UTC m=+3600.1"
    return node(capacity={"nvidia.com/gpu": "10"}, allocatable={"nvidia.com/gpu": alloc},
                labels={"gpu": "on"},
                annotations={prefix + "node-nvidia-register": register, prefix + "node-handshake": hs})


def probe(case: str) -> gpu.ProbeOutput:
    return gpu.parse_probe((DATA / f"{case}.stdout").read_text(), (DATA / f"{case}.stderr").read_text())


def hami_plan():
    return gpu.plan_for(gpu.discover([hami_node()])[0])


# ------------------------------------------------------------------ discovery

def test_discovery_finds_gpu_nodes_and_their_setup():
    nodes = [
        node("cpu-only"),
        hami_node(),
        node("gfd-ts", capacity={"nvidia.com/gpu": "32"},
             labels={gpu.LABEL_COUNT: "8", gpu.LABEL_REPLICAS: "4", gpu.LABEL_SHARING: "time-slicing",
                     gpu.LABEL_PRODUCT: "NVIDIA-A100-SXM4-80GB", gpu.LABEL_MEMORY: "81920"}),
        node("renamed", capacity={"nvidia.com/gpu.shared": "8"},
             labels={gpu.LABEL_COUNT: "2", gpu.LABEL_REPLICAS: "4"}),
        node("mig", capacity={"nvidia.com/mig-1g.10gb": "7"}),
        node("mps", capacity={"nvidia.com/gpu": "4"},
             labels={gpu.LABEL_COUNT: "1", gpu.LABEL_REPLICAS: "4", gpu.LABEL_SHARING: "mps",
                     gpu.LABEL_MEMORY: "81559"}),
        node("plain", capacity={"nvidia.com/gpu": "1"}),
        node("old-4pd", annotations={"4pd.io/node-nvidia-register": REGISTER_OLD},
             capacity={"nvidia.com/gpu": "20"}),
    ]
    found = {n.name: n for n in gpu.discover(nodes)}
    assert "cpu-only" not in found
    got = {k: (v.setup, v.sharing) for k, v in found.items()}
    assert got == {"gpu-1": ("hami", "vgpu"), "gfd-ts": ("nvidia", "time-slicing"),
                   "renamed": ("nvidia", "time-slicing"),
                   "mig": ("nvidia", "mig"), "mps": ("nvidia", "mps"), "plain": ("nvidia", "none"),
                   "old-4pd": ("4pd", "vgpu")}
    assert found["renamed"].resource == "nvidia.com/gpu.shared"
    assert found["mig"].resource == "nvidia.com/mig-1g.10gb"


def test_node_with_a_dead_plugin_stays_in_view():
    """Allocatable 0 (the kubelet keeps capacity for a while) and, later, no resource but the annotation."""
    gone = gpu.discover([hami_node(alloc="0")])
    assert len(gone) == 1
    probs = gpu.advertisement_problems(gone[0], NOW)
    assert any("allocatable 0 of capacity 10" in p for p in probs)
    later = node("gpu-1", annotations={"hami.io/node-nvidia-register": REGISTER_JSON})
    assert gpu.advertisement_problems(gpu.discover([later])[0], NOW)[0].endswith("no NVIDIA GPU resource in "
                                                                                  "capacity or allocatable")


# ------------------------------------------------------------------ advertisement

def test_healthy_hami_node_has_no_problems():
    assert gpu.advertisement_problems(gpu.discover([hami_node()])[0], NOW) == []


def test_old_register_format_and_4pd_prefix():
    n = gpu.discover([node("v100", capacity={"nvidia.com/gpu": "20"},
                           annotations={"4pd.io/node-nvidia-register": REGISTER_OLD,
                                        "4pd.io/node-handshake": "Requesting_2025.06.01 11:59:30"})])[0]
    assert gpu.advertisement_problems(n, NOW) == []
    devs = gpu.parse_register(REGISTER_OLD)
    assert [d.devmem for d in devs] == [32768, 32768] and devs[1].index == 1


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"register": REGISTER_JSON.replace('"health": true', '"health": false')}, "registered unhealthy"),
    ({"register": "{not json"}, "cannot be read"),
    ({"handshake": "Reported 2025-06-01 11:40:00.5 +0000 UTC m=+1.0"}, "stopped reporting"),
    ({"handshake": "Requesting_2025.06.01 11:50:00"}, "unanswered"),
    ({"handshake": "Deleted_2025.06.01 11:59:00"}, "dropped the node's devices"),
    ({"alloc": "7"}, "allocatable 7 of capacity 10"),
], ids=["unhealthy", "garbled", "stale-report", "unanswered", "deleted", "partly-allocatable"])
def test_hami_advertisement_problems(kwargs, needle):
    probs = gpu.advertisement_problems(gpu.discover([hami_node(**kwargs)])[0], NOW)
    assert any(needle in p for p in probs), probs


def test_nvidia_capacity_must_equal_count_times_replicas():
    ok = node("a", capacity={"nvidia.com/gpu": "32"}, labels={gpu.LABEL_COUNT: "8", gpu.LABEL_REPLICAS: "4"})
    bad = node("b", capacity={"nvidia.com/gpu": "8"}, labels={gpu.LABEL_COUNT: "8", gpu.LABEL_REPLICAS: "4"})
    a, b = gpu.discover([ok, bad])
    assert gpu.advertisement_problems(a, NOW) == []
    assert gpu.advertisement_problems(b, NOW) == [
        "b: nvidia.com/gpu capacity 8, expected nvidia.com/gpu.count 8 x nvidia.com/gpu.replicas 4 = 32"]


def test_handshake_and_allocated_formats():
    hs = gpu.parse_handshake("Reported 2025-06-01 13:59:50.1 +0200 CEST m=+5.0", NOW)
    assert hs.state == "reported" and abs(hs.age_s - 10) < 1
    ctrs = gpu.parse_allocated(f"{UUID},NVIDIA,2048,0:;")
    assert ctrs == [[gpu.Allocated(UUID, "NVIDIA", 2048, 0)]]
    assert gpu.encode_allocated(ctrs) == f"{UUID},NVIDIA,2048,0:;"
    assert gpu.limit_mib("2048m") == 2048 and gpu.limit_mib("2g") == 2048 and gpu.limit_mib(str(2 ** 31)) == 2048


def test_advertisement_verdict_passes_fails_and_skips():
    from clusterproof.verdict import Verdict

    ok = gpu.advertisement_verdict(gpu.discover([hami_node()]), NOW)
    assert isinstance(ok, Verdict) and ok.status == "pass", ok.message
    bad = gpu.advertisement_verdict(gpu.discover([hami_node(alloc="7")]), NOW)
    assert bad.status == "fail" and "allocatable 7 of capacity 10" in bad.observed and bad.rows
    assert "device plugin" in bad.fix
    none = gpu.advertisement_verdict([], NOW)
    assert none.status == "skip" and none.requires == gpu.NEEDS_GPU and "--require-gpu" in none.reason


# ------------------------------------------------------------------ plans

def test_plans_per_setup():
    p = hami_plan()
    assert p.resources == {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 2048}
    assert (p.slice_mib, p.within_mib, p.over_mib, p.probe_allocs()) == (2048, 1024, 3072, [1024, 3072])
    mps = gpu.plan_for(gpu.discover([node("m", capacity={"nvidia.com/gpu": "4"}, labels={
        gpu.LABEL_COUNT: "1", gpu.LABEL_REPLICAS: "4", gpu.LABEL_SHARING: "mps", gpu.LABEL_MEMORY: "81559"})])[0])
    assert mps.slice_mib == 81559 // 4 and not mps.nvml_limited and mps.over_mib is not None
    excl = gpu.plan_for(gpu.discover([node("e", capacity={"nvidia.com/gpu": "1"},
                                           labels={gpu.LABEL_MEMORY: "81559"})])[0])
    assert excl.over_mib is None and excl.probe_allocs() == [81559 // 2]


# ------------------------------------------------------------------ memory verdicts on recorded outputs

def test_limit_enforced_passes_every_memory_verdict():
    out, plan = probe("hami-enforced"), hami_plan()
    for fn in (gpu.visible_memory, gpu.half_slice_allocates, gpu.over_slice_fails):
        v = fn(out, plan)
        assert v.status == "pass", v.message
    assert out.preload_failed() is None


def test_limit_missing_shows_the_whole_card():
    out, plan = probe("hami-limit-missing"), hami_plan()
    v = gpu.visible_memory(out, plan)
    assert v.status == "fail"
    assert "nvidia-smi memory.total 81559 MiB" in v.observed and "the whole 81559 MiB card" in v.observed
    assert "libvgpu.so" in v.fix
    over = gpu.over_slice_fails(out, plan)
    assert over.status == "fail" and "can exceed its 2048 MiB slice" in over.observed
    assert gpu.half_slice_allocates(out, plan).status == "pass"


def test_preload_failed_is_named():
    out, plan = probe("hami-preload-failed"), hami_plan()
    assert "cannot be preloaded" in out.preload_failed()
    v = gpu.visible_memory(out, plan)
    assert v.status == "fail" and "cannot be preloaded" in v.observed
    assert "cannot be preloaded" in gpu.over_slice_fails(out, plan).observed


def test_no_cuda_skips_naming_the_missing_device():
    out, plan = probe("no-cuda"), hami_plan()
    for fn in (gpu.visible_memory, gpu.half_slice_allocates, gpu.over_slice_fails):
        v = fn(out, plan)
        assert v.status == "skip" and v.requires == gpu.NEEDS_CUDA
        assert "no CUDA device" in v.reason and "libcuda.so.1" in v.reason and "--require-gpu" in v.reason


def test_require_gpu_turns_the_no_cuda_skip_into_a_failure():
    from clusterproof.checks import CheckFailed

    v = gpu.visible_memory(probe("no-cuda"), hami_plan())
    with pytest.raises(pytest.skip.Exception):
        gpu.apply_verdict(v, require_gpu=False)
    with pytest.raises(CheckFailed) as info:
        gpu.apply_verdict(v, require_gpu=True)
    assert "libcuda.so.1 not found" in str(info.value)


def test_require_gpu_fails_a_missing_gpu_and_leaves_other_skips_alone():
    from clusterproof.checks import CheckFailed

    no_nodes = gpu.no_gpu_nodes_verdict()
    assert gpu.under_require_gpu(no_nodes, require_gpu=False) is no_nodes
    failed = gpu.under_require_gpu(no_nodes, require_gpu=True)
    assert failed.status == "fail" and "no GPU nodes" in failed.rows[0]
    with pytest.raises(CheckFailed):
        gpu.apply_verdict(no_nodes, require_gpu=True)
    exclusive = gpu.discover([node("e", capacity={"nvidia.com/gpu": "1"})])[0]
    by_design = gpu.pair_applicable(exclusive, gpu.plan_for(exclusive))
    assert by_design is not None and by_design.requires is None
    assert gpu.under_require_gpu(by_design, require_gpu=True) is by_design
    passed = gpu.half_slice_allocates(probe("hami-enforced"), hami_plan())
    assert gpu.apply_verdict(passed, require_gpu=True) is passed


def test_probe_result_missing_points_at_gpu_002():
    v = gpu.probe_result_missing(None, "no clusterproof-gpu JSON line [exit 127]", has_output=False)
    assert v is not None and v.status == "skip" and v.blames == "GPU-002" and "exit 127" in v.reason
    v = gpu.probe_result_missing("timed out after 90s waiting for GPU probe pod", None, has_output=False)
    assert v is not None and "timed out" in v.reason
    assert gpu.probe_result_missing(None, None, has_output=True) is None


def test_pair_applies_only_where_two_pods_share_a_gpu_with_limits():
    hami = gpu.discover([hami_node()])[0]
    assert gpu.pair_applicable(hami, gpu.plan_for(hami)) is None
    ts = gpu.discover([node("ts", capacity={"nvidia.com/gpu": "4"}, labels={
        gpu.LABEL_COUNT: "1", gpu.LABEL_REPLICAS: "4", gpu.LABEL_SHARING: "time-slicing"})])[0]
    v = gpu.pair_applicable(ts, gpu.plan_for(ts))
    assert v is not None and v.status == "skip" and "time-slicing" in v.reason
    mig = gpu.discover([node("mig", capacity={"nvidia.com/mig-1g.10gb": "7"})])[0]
    assert "MIG" in gpu.pair_applicable(mig, gpu.plan_for(mig)).reason


def test_pair_pods_broken_names_the_pod():
    assert gpu.pair_pods_broken("gpu-1", [], []) is None
    v = gpu.pair_pods_broken("gpu-1", ["gpu-pair-b: Insufficient nvidia.com/gpu"])
    assert v is not None and v.status == "fail" and "gpu-pair-b" in v.observed and v.expected == "both Running"
    v = gpu.pair_pods_broken("gpu-1", [], ["gpu-pair-a: exec failed"])
    assert v is not None and v.status == "fail" and "--gpu-probe-image" in v.fix


def test_exclusive_gpu_sees_the_card_and_has_no_slice_to_exceed():
    n = gpu.discover([node("e", capacity={"nvidia.com/gpu": "1"}, labels={gpu.LABEL_MEMORY: "81559"})])[0]
    plan = gpu.plan_for(n)
    out = probe("nvidia-exclusive")
    assert gpu.visible_memory(out, plan).status == "pass"       # 81089 (CUDA) vs 81559 (NVML): within 3 %
    assert gpu.over_slice_fails(out, plan).status == "skip"


def test_time_slicing_is_reported_not_failed():
    n = gpu.discover([node("ts", capacity={"nvidia.com/gpu": "4"}, labels={
        gpu.LABEL_COUNT: "1", gpu.LABEL_REPLICAS: "4", gpu.LABEL_SHARING: "time-slicing",
        gpu.LABEL_MEMORY: "81559"})])[0]
    plan = gpu.plan_for(n)
    out = probe("nvidia-exclusive")
    for fn in (gpu.visible_memory, gpu.over_slice_fails):
        v = fn(out, plan)
        assert v.status == "skip" and "time-slicing" in v.reason and "no memory" in v.reason and v.requires is None


def test_two_pods_on_one_gpu_need_proof_of_sharing():
    """Outputs of probes that allocated and freed at once prove no overlap (tests/test_gpu_isolation.py has more)."""
    good, leak = probe("hami-enforced"), probe("hami-limit-missing")
    plan = hami_plan()
    same, gpus = gpu.same_gpu({"a": good, "b": good})
    assert same is True and UUID in gpus                     # the one GPU nvidia-smi lists: measured, not a string
    v = gpu.pair_keeps_limits({"a": good, "b": leak}, {"a": plan, "b": plan}, same, gpus)
    assert v.status == "skip" and "held no allocation" in v.reason
    assert gpu.pair_keeps_limits({"a": good, "b": good}, {"a": plan, "b": plan}, False, gpus).status == "skip"


# ------------------------------------------------------------------ allocation verdict

def test_allocation_verdict_on_hami_annotations_and_env():
    plan = hami_plan()
    out = probe("hami-enforced")
    ann = {"hami.io/bind-phase": "success", "hami.io/vgpu-devices-allocated": f"{UUID},NVIDIA,2048,0:;"}
    ok = gpu.allocation_verdict(plan, error=None, node="gpu-1", annotations=ann, output=out, exec_error=None)
    assert ok.status == "pass", ok.message
    bad = gpu.allocation_verdict(plan, error=None, node="gpu-1",
                                 annotations={**ann, "hami.io/bind-phase": "failed"}, output=out, exec_error=None)
    assert bad.status == "fail" and "bind-phase is 'failed'" in bad.observed
    pending = gpu.allocation_verdict(plan, error="timed out after 90s waiting for GPU probe pod ns/p to run on gpu-1; "
                                     "last observed: not scheduled: Unschedulable 0/3 nodes are available: 3 "
                                     "Insufficient nvidia.com/gpumem.", node=None, annotations={}, output=None,
                                     exec_error=None)
    assert pending.status == "fail" and "hami-scheduler" in pending.fix
    no_python = gpu.allocation_verdict(plan, error=None, node="gpu-1", annotations=ann, output=None,
                                       exec_error="no clusterproof-gpu JSON line [exit 127]")
    assert no_python.status == "fail" and "--gpu-probe-image" in no_python.fix


def test_probe_line_is_found_among_other_output():
    text = "[HAMI-core Msg(1:2:libvgpu.c:836)]: Initializing.....\n" + (DATA / "hami-enforced.stdout").read_text()
    out = gpu.parse_probe(text)
    assert out.cuda_total_mib == 2048 and out.other_lines
    with pytest.raises(ValueError, match="no clusterproof-gpu JSON line"):
        gpu.parse_probe("python3: not found\n")


# ------------------------------------------------------------------ recordings from real GPUs, when present

RECORDED = sorted((ROOT / "gpu-verify" / "recorded").glob("*/verdicts.json"))


@pytest.mark.skipif(not RECORDED, reason="no real-GPU recording under gpu-verify/recorded/ yet "
                                         "(run gpu-verify/verify.sh on a GPU machine)")
@pytest.mark.parametrize("path", RECORDED, ids=[p.parent.name for p in RECORDED])
def test_recorded_real_gpu_runs_keep_their_verdicts(path):
    """Re-judge the probe outputs a real GPU gave with today's logic: the verdicts must not change."""
    from importlib import util

    spec = util.spec_from_file_location("gpu_verify", ROOT / "gpu-verify" / "verify.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.rejudge(path) == []
    recorded = json.loads(path.read_text())
    for case in [*recorded["cases"], *recorded.get("pairs", [])]:
        for v in case.get("verdicts", []):
            assert v.get("as_expected", v["status"] == "pass"), (case["name"], v["message"])


HAMI_RECORDED = [p for p in RECORDED if json.loads(p.read_text()).get("hami_core", {}).get("lib")]


@pytest.mark.skipif(not HAMI_RECORDED, reason="no HAMi-core run recorded from a real GPU yet: run "
                                               "gpu-verify/verify.sh --require-hami on a GPU machine with "
                                               "gpu-verify/.build/libvgpu.so (gpu-verify/README.md)")
@pytest.mark.parametrize("path", HAMI_RECORDED, ids=[p.parent.name for p in HAMI_RECORDED])
def test_recorded_hami_core_runs_cover_every_case(path):
    """A HAMi-core recording holds the limits of several sizes, the pair at once, and the three negative controls."""
    rec = json.loads(path.read_text())
    ran = {c["name"] for c in rec["cases"] if c["status"] == "ran"}
    assert {"hami-600m", "hami-1024m", "hami-2048m", "hami-8192m", "hami-pair-a", "hami-pair-b", "hami-no-limit",
            "hami-no-lib", "hami-exec-shell", "hami-exec-env-only"} <= ran
    assert rec["hami_core"]["hami_core"]["commit"] == json.loads(
        (ROOT / "gpu-verify" / "hami-core.lock.json").read_text())["hami_core"]["commit"]
    pair = next(p for p in rec["pairs"] if p["name"] == "hami-pair")
    assert [v["status"] for v in pair["verdicts"]] == ["pass"]
    bad = next((p for p in rec["pairs"] if p["name"] == "hami-pair-nolimit"), None)
    if bad is not None:  # recorded from 2026-11-28-h200-2 on: the pair's negative control
        assert [v["status"] for v in bad["verdicts"]] == ["fail"]
    by_name = {c["name"]: c for c in rec["cases"]}
    for negative in ("hami-no-limit", "hami-no-lib", "hami-exec-env-only"):
        assert "fail" in [v["status"] for v in by_name[negative]["verdicts"]], negative
