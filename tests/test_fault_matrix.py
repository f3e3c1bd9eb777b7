"""The fault matrix: each fault the catalog names fails the checks that own it and nothing undeclared.

The testbed runs are one test per fault (so xdist or -k can shard them); the bookkeeping is tested
without a cluster."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from clusterproof import catalog
from testbed import matrix

FAULTS = list(matrix.plan())

# What the owners' messages say under a fault, beyond "expected" and "fix" (every owner's message has those): the
# object, the value observed, the command that fixes it. The fault's row in the matrix asserts them.
MESSAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "taint --node tb-node-2": {"NODE-005": (
        "tb-node-2", "clusterproof.io/fault=true:NoSchedule",
        "kubectl taint nodes tb-node-2 clusterproof.io/fault:NoSchedule-")},
    "coredns-scale-zero": {"NODE-006": (
        "kube-system/coredns", "scaled to 0", "kubectl -n kube-system scale deployment coredns --replicas=2")},
    "cni-config-remove --node tb-node-2": {"CNI-002": ("node tb-node-2", "/etc/cni/net.d")},
    "kube-router-stop --node tb-node-2": {"CNI-001": (
        "kube-system/kube-router: pod kube-router-", "on tb-node-2: Pending, init container install-cni "
        "ErrImageNeverPull", "kubectl -n kube-system describe pod kube-router-")},
    "kube-proxy-stop --node tb-node-2": {"APP-003": ("tb-node-2",), "APP-004": ("node tb-node-2", "fix: kube-proxy")},
    "app-break --value selector": {"APP-006": ("matches no pod",)},
    "app-break --value unready": {"APP-001": ("without becoming ready", "404")},
    "cri-socket-remove --node tb-node-2": {"CRI-001": (
        "CRI socket on ssh://tb-node-2: expected a socket at one of /run/containerd/containerd.sock",)},
    "runtime-stop --node tb-node-2": {"CRI-001": ("on ssh://tb-node-2",), "NODE-001": ("tb-node-2 Ready=False",)},
    "sysctl --node tb-node-2 --value net.ipv4.ip_forward=0": {"HOST-003": (
        "net.ipv4.ip_forward on ssh://tb-node-2: expected 1, observed 0",)},
    "sysctl-persist-remove --node tb-node-2": {"HOST-005": ("net.ipv4.ip_forward persisted on ssh://tb-node-2: "
                                                            "expected 1",)},
    "fstab-swap --node tb-node-2": {"HOST-008": ("/etc/fstab on ssh://tb-node-2: expected no active swap entry",)},
    "kube-router-no-policy": {"CNI-006": (
        "CNI kube-router enforces NetworkPolicy, but not here", "np-denied (denied) -> np-server",
        "connected, expected blocked", "--run-firewall=true", "kubectl -n kube-system logs ds/kube-router")},
    "apiserver-shutting-down": {"CP-003": ("/readyz HTTP 500", "failing: shutdown", "this API server is shutting "
                                                                                      "down")},
    "apiserver-cert-expiring": {"CP-004": ("kube-apiserver serving certificate", "days left", "kubeadm certs renew")},
    "kubelet-cert-expired --node tb-node-2": {"CP-004": (
        "kubelet serving certificate of tb-node-2", "expired 1 day ago", "serverTLSBootstrap")},
    "gpu-plugin-stop": {"GPU-001": ("GPU advertisement on 1 GPU node(s): expected every GPU allocatable and healthy",
                                    "tb-node-2: nvidia.com/gpu allocatable 0 of capacity", "device plugin")},
}


def test_message_expectations_name_faults_of_the_plan() -> None:
    planned = {str(f): owners for f, owners in matrix.plan().items()}
    for fault, checks in MESSAGES.items():
        assert fault in planned, fault
        assert set(checks) <= set(planned[fault]), (fault, planned[fault])


def test_plan_covers_every_fault_the_catalog_names() -> None:
    named = {f for c in catalog.CATALOG.values() for f in c.faults}
    assert set(FAULTS) == named
    owners = matrix.plan()
    assert all(c.id in owners[f] for c in catalog.CATALOG.values() for f in c.faults)


def test_unexpected_failures_are_those_no_owner_explains() -> None:
    run = matrix.FaultRun(catalog.Fault("runtime-stop", node="tb-node-2"), ["CRI-002", "NODE-001"])
    matrix.read(run, {"verdict": "FAIL", "checks": [
        {"id": "CRI-002", "nodeid": "a", "outcome": "failed", "message": "down"},
        {"id": "CRI-003", "nodeid": "b", "outcome": "skipped"},        # a dependent may also skip
        {"id": "POD-001", "nodeid": "c", "outcome": "failed", "message": "x"},    # depends on NODE-001: declared
        {"id": "HOST-004", "nodeid": "d", "outcome": "error", "message": "y"},    # nobody declared it
        {"id": "HOST-004", "nodeid": "e", "outcome": "passed"},
    ]})
    assert run.unexpected == ["HOST-004"]
    assert run.outcomes["HOST-004"] == "error"
    table = matrix.rows([run])
    row = next(r for r in table if r.check == "CRI-002")
    assert row.owner_failed and row.unexpected == ["HOST-004"]
    assert next(r for r in table if r.check == "NODE-001").owner_failed is False
    assert next(r for r in table if r.check == "HOST-009").owner_failed is None
    text = matrix.render_text(table)
    assert "CRI-002   runtime-stop --node tb-node-2" in text and "NO (not run)" in text


def test_gpu_memory_checks_have_rows_from_real_gpu_recordings() -> None:
    """GPU-003..006 cannot fail on the CUDA-less testbed; their rows are recorded negative controls from a real GPU."""
    got = matrix.recorded_rows()
    assert set(got) == {"GPU-003", "GPU-004", "GPU-005", "GPU-006"}
    assert all(r.owner_failed and r.fault.startswith("real GPU: ") for r in got.values())
    table = matrix.rows([])
    assert {r.check for r in table if r.owner_failed} == set(got)
    # every other check without a run says so
    assert all(r.owner_failed is None for r in table if r.check not in got)


def test_recorded_rows_need_an_expected_failure(tmp_path) -> None:
    rec = tmp_path / "x"
    rec.mkdir()
    (rec / "verdicts.json").write_text(json.dumps({"cases": [
        {"name": "ok", "verdicts": [{"check": "visible memory", "status": "pass", "expect": "pass"}]},
        {"name": "surprise", "verdicts": [{"check": "over the slice fails", "status": "fail", "expect": "pass"}]},
        {"name": "neg", "verdicts": [{"check": "half the slice allocates", "status": "fail", "expect": "fail"}]}]}))
    assert list(matrix.recorded_rows(tmp_path)) == ["GPU-004"]


@pytest.mark.testbed
@pytest.mark.matrix
@pytest.mark.parametrize("fault", FAULTS, ids=[str(f).replace(" ", "") for f in FAULTS])
def test_fault_fails_its_owners_and_nothing_undeclared(testbed, testbed_api, fault: catalog.Fault) -> None:
    run = matrix.FaultRun(fault, matrix.plan()[fault])
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cp-matrix-") as tmp:
        try:
            with testbed_api.fault(fault.name, fault.node, fault.value):
                matrix.settle(fault)
                matrix.read(run, matrix.run_suite(testbed_api.kubeconfig(), testbed_api.ssh_key(), Path(tmp), 2))
        finally:
            matrix.wait_healed()
    run.seconds = round(time.monotonic() - t0, 1)
    out = os.environ.get("CLUSTERPROOF_MATRIX_OUT")  # bin/selftest keeps each row for the README's table
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        name = str(fault).replace(" ", "").replace("/", "_")
        (Path(out) / f"{name}.json").write_text(json.dumps(matrix.to_json([run], []), indent=1))
    # a warning owner (a WARN-severity check that failed, or a check that warned: a certificate close to expiry)
    # fails the sign-off only under --strict; any other failure (an owner, or a dependent of a warning owner: a
    # cgroup-driver mismatch stops pods) makes it FAIL
    hard = [c for c in run.failed if run.outcomes.get(c) != "warned"]
    assert run.sign_off == ("FAIL" if hard else "PASS"), run.outcomes
    assert sorted(set(run.owners) - set(run.failed)) == [], f"owners that did not fail: {run.outcomes}"
    assert run.unexpected == [], {k: run.failed[k] for k in run.unexpected}
    # each owner says what it expected, what it saw and the fix (a check that timed out or crashed says neither)
    for owner in run.owners:
        msg = run.failed[owner]
        assert "expected" in msg and "fix" in msg and "Traceback" not in msg, (owner, msg)
        for text in MESSAGES.get(str(fault), {}).get(owner, ()):
            assert text in msg, (owner, text, msg)


def test_runs_round_trip_through_json_and_newest_wins() -> None:
    fault = catalog.Fault("swap-on")
    old = matrix.FaultRun(fault, ["HOST-004"], {"HOST-004": "swap on", "NODE-002": "x"}, seconds=50.0)
    new = matrix.FaultRun(fault, ["HOST-004"], {"HOST-004": "swap on"}, {"HOST-004": "failed"}, "FAIL", 40.0)
    docs = [matrix.to_json([r], matrix.rows([r])) for r in (old, new)]
    docs.append({"runs": [{"fault": "a-fault-nobody-names", "owners": []}]})
    runs = matrix.load_runs(json.loads(json.dumps(docs)))
    assert len(runs) == 1 and runs[0].seconds == 40.0 and runs[0].unexpected == []
    row = next(r for r in matrix.rows(runs) if r.check == "HOST-004")
    assert row.owner_failed and row.seconds == 40.0
    assert "| HOST-004 | `swap-on` | yes | - | 40 s |" in matrix.render_markdown(matrix.rows(runs), "2026-11-28")
