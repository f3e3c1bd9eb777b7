"""GPU area fixtures: the GPU nodes, the node the pod checks use, and a probe pod on it."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from clusterproof import gpu, runid
from clusterproof.checks import evidence
from clusterproof.gpu_pods import ProbePod, delete_pods, refresh, run_probe, start_probe_pods


@pytest.fixture(scope="session")
def gpu_nodes(cluster) -> list[gpu.GpuNode]:
    """The cluster's GPU nodes and how each offers its GPUs (HAMi/4pd, NVIDIA plugin, sharing)."""
    found = gpu.discover(cluster.nodes)
    evidence("GPU discovery from node capacity, allocatable, labels and annotations",
             "\n".join(n.describe() for n in found) or "no GPU nodes")
    return found


@pytest.fixture(scope="session")
def gpu_target(gpu_nodes) -> gpu.GpuNode | None:
    """The GPU node the pod checks use: one that slices memory if any, with GPUs allocatable if any."""
    order = {"vgpu": 0, "mps": 1, "mig": 2, "none": 3, "time-slicing": 4}
    usable = sorted(gpu_nodes, key=lambda n: (not any(a > 0 for _, a in n.resources.values()), order.get(n.sharing, 9),
                                              n.name))
    return usable[0] if usable else None


@pytest.fixture(scope="module")
def gpu_pod(request, core_v1, namespace, gpu_target) -> Iterator[ProbePod | None]:
    """One probe pod asking for one GPU (and a slice on HAMi) on the target node, probed once, and on HAMi once
    more from a kubectl exec shell without LD_PRELOAD (the hook must come from /etc/ld.so.preload)."""
    if gpu_target is None:
        yield None
        return
    run = runid.get(request.config)
    plan = gpu.plan_for(gpu_target)
    image = request.config.getoption("gpu_probe_image")
    pp = start_probe_pods(core_v1, namespace, image, [("gpu-probe", plan, {}, None)], run)[0]
    try:
        if pp.error is None:
            run_probe(core_v1, pp, plan.probe_allocs())
            if plan.sharing == "vgpu" and pp.output is not None and pp.output.no_cuda() is None:
                run_probe(core_v1, pp, plan.probe_allocs(), shell=True)
            refresh(core_v1, pp)
        if pp.pod is not None:
            evidence(f"pod {namespace}/{pp.name}", {"annotations": pp.annotations, "node": pp.pod.spec.node_name,
                                                     "phase": pp.pod.status.phase,
                                                     "limits": plan.resources, "plan": plan.note})
        yield pp
    finally:
        delete_pods(core_v1, namespace, [pp.name])
