"""The nightly CronJob on the testbed, as a user runs it: `kubectl apply -k`, a Job from the CronJob, reports on
the local-path volume, `pull`, and a fault injected between two runs showing as newly failing in the second."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clusterproof import kube, nightly
from conftest import ROOT
from testbed.api import Testbed

pytestmark = pytest.mark.testbed
FAULT, FAULT_NODE, OWNER = "fstab-swap", "tb-node-2", "HOST-008"  # a file on the node: the pods' network is untouched
SELECTION = ["-m", "host or nodes"]  # keeps each in-cluster run well under a minute


def kubectl(tb: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    from testbed.paths import bin_dir

    return subprocess.run([str(bin_dir(tb["version"]) / "kubectl"), "--kubeconfig", tb["kubeconfig"], *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def overlay(tmp_path: Path) -> Path:
    """A kustomize overlay of manifests/nightly that changes only the selection (what a user would do)."""
    d = tmp_path / "overlay"
    d.mkdir()
    base = os.path.relpath(ROOT / "manifests" / "nightly", d)  # kustomize refuses absolute roots
    (d / "kustomization.yaml").write_text(json.dumps({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [base],
        "patches": [{"target": {"group": "batch", "version": "v1", "kind": "CronJob", "name": nightly.CRONJOB},
                     "patch": json.dumps([{"op": "replace", "value": SELECTION,
                                           "path": "/spec/jobTemplate/spec/template/spec/containers/0/args"}])}],
    }))
    return d


def run_job(tb: dict, name: str, timeout: float = 240) -> str:
    """Create a Job from the CronJob and wait until it ends; its final condition (Complete or Failed)."""
    r = kubectl(tb, "-n", nightly.NAMESPACE, "create", "job", f"--from=cronjob/{nightly.CRONJOB}", name)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = kubectl(tb, "-n", nightly.NAMESPACE, "get", "job", name, "-o", "json")
        conditions = json.loads(r.stdout).get("status", {}).get("conditions") or [] if r.returncode == 0 else []
        done = [c["type"] for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
        if done:
            return done[0]
        time.sleep(2)
    logs = kubectl(tb, "-n", nightly.NAMESPACE, "logs", f"job/{name}", "--tail=40").stdout
    pods = kubectl(tb, "-n", nightly.NAMESPACE, "get", "pods", "-o", "wide").stdout
    pytest.fail(f"job {name} did not end within {timeout:.0f}s\n{pods}\n{logs}")


def logs(tb: dict, job: str) -> str:
    return kubectl(tb, "-n", nightly.NAMESPACE, "logs", f"job/{job}", "--tail=60").stdout


def test_nightly_cronjob_keeps_reports_compares_runs_and_pulls(testbed, testbed_api: Testbed, tmp_path):
    testbed_api.up()  # idempotent: imports the suite image when the checkout changed, deploys local-path
    ov = overlay(tmp_path)
    try:
        r = kubectl(testbed, "apply", "-k", str(ov))
        assert r.returncode == 0, r.stderr
        first = run_job(testbed, "nightly-first")   # how long it takes is bench/'s business, not a test's
        assert first == "Complete", logs(testbed, "nightly-first")
        api = kube.new_client(testbed["kubeconfig"], None)
        got = nightly.pull(api, tmp_path / "pulled", echo=lambda _m: None)
        assert len(got) == 1
        run1 = got[0]
        assert sorted(p.name for p in run1.iterdir()) == sorted(nightly.REPORT_FILES)
        doc1 = json.loads((run1 / "summary.json").read_text())
        assert doc1["verdict"] == "PASS" and doc1["compare"] is None, doc1["verdict_reason"]
        assert doc1["totals"]["passed"] > 0

        with testbed_api.fault(FAULT, node=FAULT_NODE):
            second = run_job(testbed, "nightly-second")
        assert second == "Failed", logs(testbed, "nightly-second")  # a failing check fails the Job

        got = nightly.pull(api, tmp_path / "pulled", last=1, echo=lambda _m: None)
        assert len(got) == 1 and got[0].name > run1.name
        run2 = got[0]
        assert os.readlink(tmp_path / "pulled" / "latest") == run2.name
        doc2 = json.loads((run2 / "summary.json").read_text())
        cmp = doc2["compare"]
        assert cmp["previous"]["run"] == doc1["run"] and cmp["previous"]["digest_valid"]
        newly = {(r["id"], r["target"]) for r in cmp["newly_failing"]}
        assert newly == {(OWNER, f"pod://{FAULT_NODE}")}, cmp
        assert cmp["still_failing"] == [] and cmp["fixed"] == []
        html = (run2 / "report.html").read_text()
        section = html.split('data-compare="newly_failing"', 1)[1].split("</div>", 1)[0]
        assert f"{OWNER} [pod://{FAULT_NODE}]" in section and "Newly failing: 1" in section

        fams = {f.name: f for f in text_string_to_metric_families((run2 / nightly.METRICS).read_text())}
        status = {(s.labels["id"], s.labels["target"]): s.value for s in fams["clusterproof_check_status"].samples}
        assert status[(OWNER, f"pod://{FAULT_NODE}")] == 3
        assert {s.labels["verdict"]: s.value for s in fams["clusterproof_run_verdict"].samples}["FAIL"] == 1
        assert fams["clusterproof_run_duration_seconds"].samples[0].value > 0
        assert {s.labels["change"]: s.value for s in fams["clusterproof_run_compared"].samples}["newly_failing"] == 1
    finally:
        r = kubectl(testbed, "delete", "-k", str(ov), "--ignore-not-found", "--wait=true", "--timeout=180s",
                    timeout=240)
        assert r.returncode == 0, r.stderr
        leftover = kubectl(testbed, "get", "pv", "-o", "jsonpath={.items[*].spec.claimRef.name}").stdout
        deadline = time.monotonic() + 60
        while nightly.CLAIM in leftover and time.monotonic() < deadline:  # the provisioner deletes the volume
            time.sleep(1)
            leftover = kubectl(testbed, "get", "pv", "-o", "jsonpath={.items[*].spec.claimRef.name}").stdout
        assert nightly.CLAIM not in leftover
