"""GPUs: advertised and healthy, a GPU pod runs, and vGPU memory isolation checked by value.

Discovery (clusterproof.gpu.discover) finds GPU nodes from capacity/allocatable
(`nvidia.com/gpu`, `nvidia.com/gpu.shared`, `nvidia.com/mig-*`), HAMi/4pd register annotations and
GFD labels, and tells the setup per node: HAMi/4pd vGPU slices, or the NVIDIA plugin with its
sharing strategy (none, time-slicing, MPS, MIG). No GPU node: every check here skips with a reason
(`--require-gpu` fails instead).

The pod checks run manifests/gpu/probe.py (ctypes on libcuda, no CUDA toolkit) in a pod that asks
for one GPU, plus `nvidia.com/gpumem` on HAMi, from --gpu-probe-image. The memory checks need a
CUDA device in that pod; without one they skip naming what is missing (fail under --require-gpu).
Time-slicing has no memory isolation by design: the isolation checks say so in their skip reason
instead of failing. The verdicts live in clusterproof.gpu so they are tested on recorded outputs.
"""
from __future__ import annotations

import pytest

from clusterproof import gpu, runid
from clusterproof.checks import evidence, require
from clusterproof.gpu_pods import delete_pods, refresh, run_probe, start_probe_pods

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
    if gpu_pod.error or gpu_pod.output is None:
        why = gpu_pod.error or gpu_pod.exec_error
        pytest.skip(f"the GPU probe pod did not give a result (GPU-002 reports it): {why}")
    return gpu_pod


@pytest.mark.check("GPU-001")
def test_gpus_advertised_and_healthy(request, gpu_nodes, gpu_target):
    """Every GPU node MUST advertise its GPUs as allocatable and healthy, as its device plugin registered them.

    HAMi/4pd: the register annotation parses, every device is healthy, the handshake is fresh and
    capacity equals GPUs x split. NVIDIA plugin: allocatable equals capacity, and with GFD labels
    capacity equals nvidia.com/gpu.count x nvidia.com/gpu.replicas.
    """
    _target(request, gpu_target)
    now = gpu.now()
    rows = []
    for node in gpu_nodes:
        evidence(f"node {node.name} GPU view", {"setup": node.setup, "sharing": node.sharing,
                                                "resources": node.resources,
                                                "labels": {k: v for k, v in node.labels.items() if "nvidia" in k},
                                                "annotations": {k: v for k, v in node.annotations.items()
                                                                if k.startswith(gpu.VGPU_PREFIXES)}})
        rows += gpu.advertisement_problems(node, now)
    require(not rows, f"GPU advertisement on {len(gpu_nodes)} GPU node(s)",
            "every GPU allocatable and healthy, as the device plugin registered it",
            f"{len(rows)} problem(s): {rows[0] if rows else ''}",
            "check the device plugin on the node (its pod and logs; it must be registered with the kubelet in "
            "/var/lib/kubelet/device-plugins/) and the node's GPUs with nvidia-smi", rows=rows)


@pytest.mark.slow
@pytest.mark.check("GPU-002")
def test_pod_with_one_gpu_runs(request, gpu_target, gpu_pod):
    """A pod asking for one GPU (and a memory slice on HAMi) MUST be scheduled, run, and get what it asked for.

    HAMi/4pd: the bind phase is `success`, the allocated annotation names the slice and the
    container's CUDA_DEVICE_MEMORY_LIMIT_0 carries it. The pod is not privileged and sets no nodeName.
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
    """Inside a GPU pod the visible GPU memory MUST equal its slice (nvidia-smi and cuMemGetInfo agree).

    HAMi: both show nvidia.com/gpumem; MPS: cuMemGetInfo shows the pinned limit; an exclusive GPU
    shows the card. A pod on a HAMi node that sees the whole card has no isolation.
    """
    _target(request, gpu_target)
    pp = _ran(request, gpu_pod)
    gpu.apply_verdict(gpu.visible_memory(pp.output, pp.plan, f"pod {pp.name}"), _require_gpu(request))


@pytest.mark.slow
@pytest.mark.check("GPU-004")
def test_half_the_slice_allocates(request, gpu_target, gpu_pod):
    """A GPU pod MUST be able to allocate about half of its memory slice."""
    _target(request, gpu_target)
    pp = _ran(request, gpu_pod)
    gpu.apply_verdict(gpu.half_slice_allocates(pp.output, pp.plan, f"pod {pp.name}"), _require_gpu(request))


@pytest.mark.slow
@pytest.mark.check("GPU-005")
def test_allocation_beyond_the_slice_fails(request, gpu_target, gpu_pod):
    """An allocation beyond a pod's memory slice MUST fail with CUDA_ERROR_OUT_OF_MEMORY."""
    _target(request, gpu_target)
    pp = _ran(request, gpu_pod)
    gpu.apply_verdict(gpu.over_slice_fails(pp.output, pp.plan, f"pod {pp.name}"), _require_gpu(request))


@pytest.mark.slow
@pytest.mark.check("GPU-006")
def test_two_pods_on_one_gpu_keep_their_own_limits(request, core_v1, namespace, gpu_target):
    """Two pods sharing one physical GPU MUST each see and be held to their own memory slice."""
    target = _target(request, gpu_target)
    plan = gpu.plan_for(target)
    if plan.sharing in ("none", "mig", "time-slicing"):
        reason = {"none": f"{target.name} gives each pod a whole GPU: no two pods share one",
                  "mig": f"{target.name} offers MIG instances: isolation is in hardware, no two pods share one",
                  "time-slicing": f"{target.name} shares GPUs by time-slicing: no memory isolation by design, each "
                                  "pod sees and may use the whole card; use HAMi, MPS or MIG for isolation"}
        pytest.skip(reason[plan.sharing])
    plans, ann = gpu.pair_plans(target, plan)
    run = runid.get(request.config)
    image = request.config.getoption("gpu_probe_image")
    names = ["gpu-pair-a", "gpu-pair-b"]
    try:
        pps = start_probe_pods(core_v1, namespace, image,
                               [(n, plans[n], ann, plans[n].resources) for n in names], run)
        broken = [f"{p.name}: {p.error}" for p in pps if p.error]
        require(not broken, f"two GPU pods on {target.name}", "both Running", "; ".join(broken),
                "free capacity on one GPU (or see GPU-002)")
        for pp in pps:
            run_probe(core_v1, pp, pp.plan.probe_allocs())
            refresh(core_v1, pp)
        broken = [f"{p.name}: {p.exec_error}" for p in pps if p.output is None]
        require(not broken, f"the GPU probe in two pods on {target.name}", "a result from each", "; ".join(broken),
                "pass a --gpu-probe-image that has python3")
        same = gpu.same_gpu({p.name: p.annotations for p in pps}, {p.name: p.output for p in pps})
        v = gpu.pair_keeps_limits({p.name: p.output for p in pps}, {p.name: p.plan for p in pps}, same)
        gpu.apply_verdict(v, _require_gpu(request))
    finally:
        delete_pods(core_v1, namespace, names)
