"""The hello-python checks (suites/apps) against the real testbed: healthy passes, each fault fails its owner.

Faults, all from outside the suite through the testbed's fault API: kube-proxy stopped on tb-node-1
(ClusterIP and NodePort fail, Pod IP passes), and the app-break watcher patching the app the suite
deploys (its Service selecting nothing; its readiness probe asking a path that does not exist).
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


def test_kube_proxy_stopped_fails_cluster_ip_and_nodeport_only(pytester, testbed, testbed_api):
    with testbed_api.fault("kube-proxy-stop", node="tb-node-1"):
        got, messages = outcomes(pytester, testbed)
    assert got == {"APP-001": "passed", "APP-002": "passed", "APP-003": "failed", "APP-004": "failed",
                   "APP-005": "passed", "APP-006": "passed"}, messages
    assert "tb-node-1" in messages["APP-003"] and "expected" in messages["APP-003"]
    assert "node tb-node-1" in messages["APP-004"] and "fix: kube-proxy" in messages["APP-004"]
    assert "node tb-node-2" not in messages["APP-004"]


def test_selector_matching_nothing_fails_endpoints_check(pytester, testbed, testbed_api):
    with testbed_api.fault("app-break", value="selector"):
        got, messages = outcomes(pytester, testbed)
    assert got == {"APP-001": "passed", "APP-002": "passed", "APP-003": "skipped", "APP-004": "skipped",
                   "APP-005": "skipped", "APP-006": "failed"}, messages
    assert "matches no pod" in messages["APP-006"] and "fix:" in messages["APP-006"]
    assert "APP-006" in messages["APP-003"]


def test_replicas_never_ready_fail_rollout_check(pytester, testbed, testbed_api):
    with testbed_api.fault("app-break", value="unready"):
        got, messages = outcomes(pytester, testbed)
    assert got["APP-001"] == "failed", messages
    assert "without becoming ready" in messages["APP-001"] and "404" in messages["APP-001"]
    # the others judge whatever replicas did get ready (a first ReplicaSet may), or skip blaming APP-001
    for c in CHECKS:
        if c != "APP-001":
            assert got[c] == "passed" or (got[c] == "skipped" and "APP-001" in messages[c]), (c, messages)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-c", str(ROOT / "tests" / "pytest.ini")]))
