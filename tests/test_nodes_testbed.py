"""The NODE/CNI/DNS/POD checks against the real testbed: healthy passes; each fault fails exactly its check.

Faults are healed in a finally. Another engineer may inject a fault at the same time, so a
surprising result is re-run once before it is believed (cluster_checks.run_until).
"""
from __future__ import annotations

import pytest
from cluster_checks import dns_endpoints, node_ready, run_until, wait_until

pytestmark = pytest.mark.testbed


def test_healthy_testbed_passes_every_check(pytester, testbed) -> None:
    run = run_until(pytester, testbed, lambda r: not r.failed)
    assert run.checks, run.stdout[-3000:]
    assert not run.failed, run.explain()
    ids = {c["id"] for c in run.checks}
    assert {"NODE-001", "NODE-006", "CNI-002", "CNI-005", "DNS-001", "DNS-002", "POD-001", "POD-003"} <= ids
    print(f"healthy run: {len(run.checks)} checks in {run.seconds:.1f}s")


def test_tainted_node_fails_only_node_005(pytester, testbed, testbed_api) -> None:
    with testbed_api.fault("taint", node="tb-node-1"):
        run = run_until(pytester, testbed, lambda r: r.failed_ids == {"NODE-005"})
    assert run.failed_ids == {"NODE-005"}, run.explain()
    msg = run.message("NODE-005")
    assert "tb-node-1" in msg and "clusterproof.io/fault=true:NoSchedule" in msg, msg
    assert "kubectl taint nodes tb-node-1 clusterproof.io/fault:NoSchedule-" in msg, msg
    assert run.outcome("NODE-004") == {"passed"}


def test_coredns_scaled_to_zero_fails_only_node_006(pytester, testbed, testbed_api) -> None:
    with testbed_api.fault("coredns-scale-zero"):
        wait_until("the kube-dns Service to lose its endpoints", lambda: dns_endpoints(testbed) == 0, 90)
        run = run_until(pytester, testbed, lambda r: r.failed_ids == {"NODE-006"})
    assert run.failed_ids == {"NODE-006"}, run.explain()
    msg = run.message("NODE-006")
    assert "kube-system/coredns" in msg and "scaled to 0" in msg, msg
    assert "kubectl -n kube-system scale deployment coredns --replicas=2" in msg, msg
    assert run.outcome("DNS-001") == {"skipped"} and run.outcome("DNS-002") == {"skipped"}


def test_cni_config_removed_fails_only_cni_002_on_that_node(pytester, testbed, testbed_api) -> None:
    try:
        with testbed_api.fault("cni-config-remove", node="tb-node-2"):
            wait_until("tb-node-2 to report its network not ready", lambda: not node_ready(testbed, "tb-node-2"),
                       90)
            run = run_until(pytester, testbed, lambda r: set(r.failed) == {
                "suites/network/test_cni.py::test_cni_config_on_every_host[ssh://tb-node-2]"})
    finally:
        wait_until("tb-node-2 Ready again", lambda: node_ready(testbed, "tb-node-2"), 120)
    assert set(run.failed) == {"suites/network/test_cni.py::test_cni_config_on_every_host[ssh://tb-node-2]"}, \
        run.explain()
    msg = run.message("CNI-002")
    assert "node tb-node-2" in msg and "/etc/cni/net.d" in msg, msg
    assert run.outcome("NODE-001") == {"skipped"}
