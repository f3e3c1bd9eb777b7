"""GPUs: advertised and healthy, a GPU pod runs, and vGPU memory isolation checked by value.

Discovery (clusterproof.gpu.discover) finds GPU nodes from capacity/allocatable
(`nvidia.com/gpu`, `nvidia.com/gpu.shared`, `nvidia.com/mig-*`), HAMi/4pd register annotations and
GFD labels, and tells the setup per node: HAMi/4pd vGPU slices, or the NVIDIA plugin with its
sharing strategy (none, time-slicing, MPS, MIG). No GPU node: every check here skips with a reason
(`--require-gpu` fails instead).

The pod checks run manifests/gpu/probe.py (ctypes on libcuda, no CUDA toolkit) in a pod that asks
for one GPU, plus `nvidia.com/gpumem` on HAMi, from --gpu-probe-image; on HAMi the probe runs a
second time from a kubectl exec shell without the container's LD_PRELOAD, where the limit must
still hold (HAMi-core preloaded through /etc/ld.so.preload). The memory checks need a CUDA device
in that pod; without one they skip naming what is missing (fail under --require-gpu).
Time-slicing has no memory isolation by design: the isolation checks say so in their skip reason
instead of failing. What was not proven (two pods on different or unknown GPUs, probes that did
not overlap, an MPS limit that cannot be told from a busy card) is a skip with its reason. The
rules live in clusterproof.gpu and return clusterproof.verdict.Verdict, so they are tested on
recorded outputs; the checks gather and hand them to `gpu.apply_verdict`.
"""
from __future__ import annotations

import pytest

from clusterproof import gpu, runid, timeouts
from clusterproof.checks import evidence
from clusterproof.gpu_pods import delete_pods, refresh, run_probes_together, start_probe_pods

pytestmark = [pytest.mark.gpu, pytest.mark.xdist_group("gpu")]


def _require_gpu(request) -> bool:
    return bool(request.config.getoption("require_gpu"))


def _target(request, gpu_target) -> gpu.GpuNode:
    __tracebackhide__ = True
    if gpu_target is None:
        gpu.apply_verdict(gpu.no_gpu_nodes_verdict(), _require_gpu(request))
    return gpu_target


def _ran(request, gpu_pod):
    """The module's probe pod when it ran and gave a result; otherwise skip, pointing at GPU-002."""
    __tracebackhide__ = True
    missing = gpu.probe_result_missing(gpu_pod.error, gpu_pod.exec_error, gpu_pod.output is not None)
    if missing is not None:
        gpu.apply_verdict(missing, _require_gpu(request))
    return gpu_pod


@pytest.mark.check("GPU-001")
def test_gpus_advertised_and_healthy(request, gpu_nodes, gpu_target):
    """Reads the GPU nodes' capacity, allocatable, labels and annotations (no pod).

    HAMi/4pd: the register annotation parses, every device is healthy, the handshake is fresh and
    capacity equals GPUs x split. NVIDIA plugin: allocatable equals capacity, and with GFD labels
    capacity equals nvidia.com/gpu.count x nvidia.com/gpu.replicas.
    """
    _target(request, gpu_target)
    for node in gpu_nodes:
        evidence(f"node {node.name} GPU view", {"setup": node.setup, "sharing": node.sharing,
                                                "resources": node.resources,
                                                "labels": {k: v for k, v in node.labels.items() if "nvidia" in k},
                                                "annotations": {k: v for k, v in node.annotations.items()
                                                                if k.startswith(gpu.VGPU_PREFIXES)}})
    gpu.apply_verdict(gpu.advertisement_verdict(gpu_nodes, gpu.now()), _require_gpu(request))


@pytest.mark.slow
@pytest.mark.check("GPU-002")
def test_pod_with_one_gpu_runs(request, gpu_target, gpu_pod):
    """The module's probe pod: not privileged, no nodeName (the scheduler places it).

    HAMi/4pd: the bind phase is `success`, the allocated annotation names the slice and the
    container's CUDA_DEVICE_MEMORY_LIMIT_0 carries it.
    """
    _target(request, gpu_target)
    v = gpu.allocation_verdict(gpu_pod.plan, error=gpu_pod.error,
                               node=gpu_pod.pod.spec.node_name if gpu_pod.pod is not None else None,
                               annotations=gpu_pod.annotations, output=gpu_pod.output, exec_error=gpu_pod.exec_error,
                               pod=f"pod {gpu_pod.namespace}/{gpu_pod.name}")
    gpu.apply_verdict(v, _require_gpu(request))


@pytest.mark.slow
@pytest.mark.check("GPU-003")
def test_pod_sees_its_memory_slice(request, gpu_target, gpu_pod):
    """What the slice is depends on the setup (cuMemGetInfo and nvidia-smi inside the pod).

    HAMi: both show nvidia.com/gpumem, in the container's process and in a kubectl exec shell;
    MPS: cuMemGetInfo's free shows the pinned limit the plugin configured (the pod's env, GFD's
    labels, the advertised replicas), told apart from a busy card by what nvidia-smi says is free;
    an exclusive GPU shows the card, and nvidia-smi must agree where it is not limited separately.
    """
    _target(request, gpu_target)
    pp = _ran(request, gpu_pod)
    v = gpu.every_process(gpu.visible_memory, pp.runs(), pp.plan, f"pod {pp.name}", pp.run_errors())
    gpu.apply_verdict(v, _require_gpu(request))


@pytest.mark.slow
@pytest.mark.check("GPU-004")
def test_half_the_slice_allocates(request, gpu_target, gpu_pod):
    """Half, because the CUDA context counts against the limit: the whole slice never fits.

    A slice too small for a context (about 520 MiB under HAMi-core) plus half gets what is left beside
    the context; one too small for even that fails saying so.
    """
    _target(request, gpu_target)
    pp = _ran(request, gpu_pod)
    gpu.apply_verdict(gpu.half_slice_allocates(pp.output, pp.plan, f"pod {pp.name}"), _require_gpu(request))


@pytest.mark.slow
@pytest.mark.check("GPU-005")
def test_allocation_beyond_the_slice_fails(request, gpu_target, gpu_pod):
    """The probe asks for the slice plus half of it (at least 256 MiB more).

    Skipped where no slice is smaller than the card, or where CUDA_OVERSUBSCRIBE=true lets HAMi spill over.
    """
    _target(request, gpu_target)
    pp = _ran(request, gpu_pod)
    v = gpu.every_process(gpu.over_slice_fails, pp.runs(), pp.plan, f"pod {pp.name}", pp.run_errors())
    gpu.apply_verdict(v, _require_gpu(request))


@pytest.mark.slow
@pytest.mark.check("GPU-006")
def test_two_pods_on_one_gpu_keep_their_own_limits(request, core_v1, namespace, gpu_target):
    """HAMi: two slices of different sizes pinned to one GPU with nvidia.com/use-gpuuuid; MPS: the node's GPU.

    Both probes run at once: each holds about half its slice, they meet, each tries to exceed its own
    slice while the other holds its memory, and they hold on a while longer; their time stamps prove
    the overlap. The same physical GPU is proven by the UUID each probe reads (cuDeviceGetUuid).
    """
    target = _target(request, gpu_target)
    plan = gpu.plan_for(target)
    not_here = gpu.pair_applicable(target, plan)
    if not_here is not None:
        gpu.apply_verdict(not_here, _require_gpu(request))
    plans, ann = gpu.pair_plans(target, plan)
    run = runid.get(request.config)
    image = request.config.getoption("gpu_probe_image")
    names = ["gpu-pair-a", "gpu-pair-b"]
    try:
        pps = start_probe_pods(core_v1, namespace, image,
                               [(n, plans[n], ann, plans[n].resources) for n in names], run)
        broken = gpu.pair_pods_broken(target.name, [f"{p.name}: {p.error}" for p in pps if p.error])
        if broken is not None:
            gpu.apply_verdict(broken, _require_gpu(request))
        lead, hold = timeouts.scaled(gpu.PAIR_LEAD_S), timeouts.scaled(gpu.PAIR_HOLD_S)
        run_probes_together(core_v1, pps, {p.name: p.plan.pair_probe_args(lead, hold) for p in pps})
        for pp in pps:
            refresh(core_v1, pp)
        broken = gpu.pair_pods_broken(target.name, [], [f"{p.name}: {p.exec_error}" for p in pps if p.output is None])
        if broken is not None:
            gpu.apply_verdict(broken, _require_gpu(request))
        outs = {p.name: p.output for p in pps if p.output is not None}
        same, gpus = gpu.same_gpu(dict(outs))
        evidence("GPU-006: the GPU each probe measured, and the scheduler's word", {
            "measured": gpus, "allocated": {p.name: {k: v for k, v in p.annotations.items() if gpu.ALLOCATED in k}
                                            for p in pps}})
        v = gpu.pair_keeps_limits(outs, {p.name: p.plan for p in pps}, same, gpus)
        gpu.apply_verdict(v, _require_gpu(request))
    finally:
        delete_pods(core_v1, namespace, names)
