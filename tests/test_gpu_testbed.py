"""The GPU checks (suites/gpu) against the testbed's fake GPU device plugin on tb-node-2.

Healthy: advertisement (GPU-001) and allocation (GPU-002) pass for real through the kubelet's
device-plugin API; the memory checks skip naming the missing CUDA device, and fail with
--require-gpu. The plugin stopped (fault gpu-plugin-stop) is a row of the fault matrix (tests/test_fault_matrix.py):
GPU-001 fails there with its message asserted.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import ROOT, junit_outcomes, run_suite

pytestmark = pytest.mark.testbed

SUITE = str(ROOT / "suites" / "gpu")
NODE = "tb-node-2"
PROBE_IMAGE = "localhost/clusterproof/probe:1"   # busybox + python3 stdlib; no libcuda, as on any CPU node
CHECKS = {
    "GPU-001": "test_gpus_advertised_and_healthy",
    "GPU-002": "test_pod_with_one_gpu_runs",
    "GPU-003": "test_pod_sees_its_memory_slice",
    "GPU-004": "test_half_the_slice_allocates",
    "GPU-005": "test_allocation_beyond_the_slice_fails",
    "GPU-006": "test_two_pods_on_one_gpu_keep_their_own_limits",
}
MEMORY = ("GPU-003", "GPU-004", "GPU-005", "GPU-006")


def outcomes(pytester: pytest.Pytester, testbed: dict, *args: str) -> tuple[dict[str, str], dict[str, str]]:
    """Run the GPU checks; (check id -> passed|failed|error|skipped|missing, check id -> message)."""
    junit = pytester.path / "junit.xml"
    result = run_suite(pytester, SUITE, "-p", "no:randomly", "--junitxml", str(junit),
                       "--report-dir", str(pytester.path / "reports"), "--gpu-probe-image", PROBE_IMAGE, *args,
                       testbed=testbed)
    assert junit.exists(), result.stdout.str()[-3000:] + result.stderr.str()[-3000:]
    return junit_outcomes(junit, CHECKS, result.stdout.str()[-2000:])


def gpu_allocatable(testbed: dict) -> str | None:
    r = subprocess.run(["kubectl", "--kubeconfig", testbed["kubeconfig"], "get", "node", NODE, "-o", "json"],
                       capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)["status"].get("allocatable", {}).get("nvidia.com/gpu")


def wait_allocatable(testbed: dict, want, timeout: float = 90) -> str | None:
    deadline = time.monotonic() + timeout
    seen = gpu_allocatable(testbed)
    while time.monotonic() < deadline and not want(seen):
        time.sleep(2)
        seen = gpu_allocatable(testbed)
    return seen


@pytest.fixture
def gpu_testbed(testbed):
    """The testbed with the fake GPU plugin advertising on tb-node-2 (skips when the testbed has no plugin)."""
    seen = wait_allocatable(testbed, lambda v: v not in (None, "0"), timeout=60)
    if seen in (None, "0"):
        pytest.skip(f"{NODE} advertises no nvidia.com/gpu (allocatable {seen}): the testbed's fake GPU plugin is "
                    "not running; python -m testbed up starts it")
    return testbed


def test_healthy_testbed_advertises_and_allocates_memory_checks_skip(pytester, gpu_testbed):
    got, messages = outcomes(pytester, gpu_testbed)
    assert (got["GPU-001"], got["GPU-002"]) == ("passed", "passed"), messages
    for cid in MEMORY:
        assert got[cid] == "skipped", (cid, messages[cid])
        assert "no CUDA device in the GPU pod on tb-node-2" in messages[cid], messages[cid]
        assert "libcuda.so.1" in messages[cid] and "--require-gpu" in messages[cid]


def test_require_gpu_fails_the_memory_checks(pytester, gpu_testbed):
    got, messages = outcomes(pytester, gpu_testbed, "--require-gpu")
    assert (got["GPU-001"], got["GPU-002"]) == ("passed", "passed"), messages
    for cid in MEMORY:
        assert got[cid] == "failed", (cid, messages[cid])
        assert "expected a CUDA device in the pod" in messages[cid] and "libcuda.so.1 not found" in messages[cid]
