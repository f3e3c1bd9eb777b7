"""The machinery never signs off PASS for a broken run, shown with real processes against the real testbed.

- An xdist worker SIGKILLed while it runs a check: the run is not PASS, the check it ran is an ERROR, and the
  totals in summary.json are pytest's.
- A skip chain that does not hold: a check skips blaming NODE-006 while the real NODE-006 passes on the
  testbed; the skip becomes a failure stating what was observed, and the run signs off FAIL.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_suite

pytestmark = pytest.mark.testbed


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_a_worker_killed_mid_check_never_signs_off_pass(testbed, tmp_path: Path) -> None:
    """hello-python's rollout runs for seconds in a worker; that worker is SIGKILLed while it is in a check."""
    reports = tmp_path / "reports"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
           "-n", "2", "--dist", "loadgroup", "--kubeconfig", testbed["kubeconfig"], "--ssh-key", testbed["ssh_key"],
           "--report-dir", str(reports), "suites/apps/test_hello_python.py", "suites/nodes/test_nodes.py"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 120
        seen_at = None
        # the workers are the run's python children; 8 s after both are up, one is in hello-python's rollout
        # (APP-001 waits seconds for 4 replicas) and the other is done with the quick node checks: kill both
        while time.monotonic() < deadline and not killed:
            time.sleep(0.5)
            workers = _children(proc.pid)
            if len(workers) >= 2 and seen_at is None:
                seen_at = time.monotonic()
            if seen_at is not None and time.monotonic() - seen_at > 8:
                for w in workers:
                    os.kill(w, signal.SIGKILL)
                killed = workers
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert killed, "no xdist worker to kill"
    assert proc.returncode != 0, out[-3000:]
    doc = _summary(reports)
    assert doc["verdict"] != "PASS", doc["verdict"]
    errors = [c for c in doc["checks"] if c["outcome"] == "error"]
    seen = [(c["id"], c["outcome"], c["phases"], (c.get("message") or "")[:160]) for c in doc["checks"]]
    assert errors, seen
    # each says why it has no verdict: xdist's crash report, or the phases the reporter saw
    assert all("crashed" in c["message"] or "no verdict" in c["message"] for c in errors), seen
    # the totals are the tree's, and the tree has every check pytest reported (nothing silently dropped)
    assert sum(doc["totals"].values()) == len(doc["checks"]), doc["totals"]
    # a killed worker never deletes its module's namespace: the controller's end-of-run sweep of its own run does
    from kubernetes import client

    from clusterproof import kube, runid

    core = client.CoreV1Api(kube.new_client(testbed["kubeconfig"], None))
    left = [ns.metadata.name for ns in core.list_namespace(label_selector=f"{runid.LABEL_RUN}={doc['run']}").items]
    assert left == [], left

CHAIN = '''
import pytest
from clusterproof import checks


@pytest.mark.check("DNS-001")
def test_dns_resolves():
    checks.skip("the cluster DNS has no ready endpoints; NODE-006 reports why", blames="NODE-006")
'''


def test_a_skip_blaming_a_check_that_passed_on_the_real_cluster_fails_the_run(testbed, pytester, monkeypatch) -> None:
    """The real NODE-006 (CoreDNS available on the testbed) beside a DNS-001 that skips blaming it."""
    shutil.copy(ROOT / "conftest.py", pytester.path / "conftest.py")
    (pytester.path / "suites" / "nodes").mkdir(parents=True)
    (pytester.path / "suites" / "network").mkdir(parents=True)
    shutil.copy(ROOT / "suites" / "nodes" / "test_nodes.py", pytester.path / "suites" / "nodes" / "test_nodes.py")
    (pytester.path / "suites" / "network" / "test_dns.py").write_text(CHAIN)
    shutil.copy(ROOT / "pytest.ini", pytester.path / "pytest.ini")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = pytester.run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                          "--kubeconfig", testbed["kubeconfig"], "--report-dir", str(pytester.path / "reports"),
                          "suites/nodes/test_nodes.py::test_coredns_available", "suites/network/test_dns.py",
                          timeout=300)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    doc = _summary(pytester.path / "reports")
    assert doc["verdict"] == "FAIL", doc["verdict"]
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["NODE-006"]["outcome"] == "passed"
    assert by_id["DNS-001"]["outcome"] == "failed"
    assert "skipped blaming NODE-006, but NODE-006 passed in this run" in by_id["DNS-001"]["message"]


def test_the_nodes_area_passes_on_the_healthy_testbed(testbed, pytester) -> None:
    """The baseline the two tests above break: the nodes area signs off PASS on the healthy testbed."""
    result = run_suite(pytester, str(ROOT / "suites" / "nodes" / "test_nodes.py"), "-p", "no:randomly",
                       "--report-dir", str(pytester.path / "reports"), testbed=testbed, timeout=300)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert _summary(pytester.path / "reports")["verdict"] in ("PASS", "PASS-with-warnings")
