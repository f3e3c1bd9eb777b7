"""The hello-python checks (suites/apps) against the real testbed: every check passes on the healthy cluster.

Their faults (kube-proxy stopped, the app-break watcher's Service selecting nothing and readiness probe
asking a path that does not exist, the app image removed) are rows of the fault matrix
(tests/test_fault_matrix.py), which also asserts what each owner's message says.
"""
from __future__ import annotations

import sys

import pytest

from conftest import ROOT, junit_outcomes, run_suite

pytestmark = pytest.mark.testbed

SUITE = str(ROOT / "suites" / "apps" / "test_hello_python.py")
CHECKS = {
    "APP-001": "test_rollout_completes",
    "APP-002": "test_pod_ip_answers_from_another_pod",
    "APP-003": "test_service_answers_on_cluster_ip_and_dns_name",
    "APP-004": "test_nodeport_answers_on_every_node",
    "APP-005": "test_every_ready_replica_answers",
    "APP-006": "test_endpoints_match_ready_pods",
}


def outcomes(pytester: pytest.Pytester, testbed: dict, *args: str) -> tuple[dict[str, str], dict[str, str]]:
    """Run the hello-python checks; (check id -> passed|failed|error|skipped, check id -> message)."""
    junit = pytester.path / "junit.xml"
    result = run_suite(pytester, SUITE, "-p", "no:randomly", "--junitxml", str(junit), *args, testbed=testbed)
    assert junit.exists(), result.stdout.str()[-3000:] + result.stderr.str()[-3000:]
    return junit_outcomes(junit, CHECKS, result.stdout.str()[-2000:])


def test_healthy_testbed_passes_every_app_check(pytester, testbed):
    got, messages = outcomes(pytester, testbed)
    assert got == dict.fromkeys(CHECKS, "passed"), messages


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-c", str(ROOT / "tests" / "pytest.ini")]))
