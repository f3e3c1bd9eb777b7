"""The verdict type and the result tree: outcomes, the sign-off, and reports rendered from the tree."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from clusterproof import report
from clusterproof.results import Outcome, RunResult, TargetResult, combine
from clusterproof.verdict import Status, Verdict, worst


@pytest.mark.parametrize(("phases", "outcome"), [
    ({"setup": "passed", "call": "passed", "teardown": "passed"}, Outcome.PASSED),
    ({"setup": "passed", "call": "failed", "teardown": "passed"}, Outcome.FAILED),
    ({"setup": "failed", "teardown": "passed"}, Outcome.ERROR),
    ({"setup": "skipped", "teardown": "passed"}, Outcome.SKIPPED),
    ({"setup": "passed", "call": "passed", "teardown": "failed"}, Outcome.ERROR),
    # xdist reports a crashed worker's test with the phase "???": never a pass
    ({"setup": "passed", "???": "failed"}, Outcome.ERROR),
    ({"???": "failed"}, Outcome.ERROR),
    # set up but never called (the run stopped under it)
    ({"setup": "passed"}, Outcome.ERROR),
    ({"setup": "passed", "call": "weird"}, Outcome.ERROR),
], ids=["pass", "fail", "setup-error", "skip", "teardown-error", "crashed-after-setup", "crashed", "never-called",
        "unknown-outcome"])
def test_combine_never_passes_what_did_not_finish(phases: dict[str, str], outcome: Outcome) -> None:
    assert combine(phases) == outcome


def test_verdict_message_and_round_trip() -> None:
    v = Verdict.failed("node n1", "Ready=True", "Ready=False", "restart the kubelet", rows=[f"r{i}" for i in range(12)])
    assert v.message.startswith("node n1: expected Ready=True, observed Ready=False; fix: restart the kubelet")
    assert "... and 2 more" in v.message
    assert Verdict.from_dict(v.to_dict()) == v
    s = Verdict.skipped("no GPU; pass --require-gpu", blames=None, requires="cuda")
    assert s.status == "skip" and s.message == "no GPU; pass --require-gpu" and s.to_dict()["requires"] == "cuda"
    with pytest.raises(ValueError):
        Verdict("maybe", "x")


def test_worst_folds_per_object_verdicts() -> None:
    ok = Verdict.passed("a")
    bad1 = Verdict.failed("n1", "1", "0", "fix1")
    bad2 = Verdict.failed("n2", "1", "0", "fix2")
    err = Verdict.errored("n3", "API 500")
    assert worst([ok, ok], "all").status == Status.PASS
    assert worst([ok, bad1], "all") == bad1
    merged = worst([bad1, ok, bad2], "all nodes", "1")
    assert merged.status == Status.FAIL and merged.rows == ("n1: 0", "n2: 0") and merged.fix == "fix1; fix2"
    assert worst([bad1, err], "all") == err


def _run(*leaves: tuple[str, str | None, Outcome, list[Verdict]], notes: list[str] | None = None) -> RunResult:
    run = RunResult("run-1", "2026-11-27T00:00:00+00:00", "2026-11-27T00:01:00+00:00", 0, "0.1.0",
                    {"server": "https://198.19.0.1:6443", "nodes": []}, notes=list(notes or []))
    for i, (cid, target, outcome, verdicts) in enumerate(leaves):
        run.add(cid, "other", TargetResult(f"suites/x.py::t{i}", target, outcome, 0.5, verdicts, message="m"))
    return run


def test_sign_off_from_the_tree() -> None:
    warn = Verdict.warned("node n1", "hostname resolves", "no answer", "add it to /etc/hosts")
    assert _run(("NODE-001", None, Outcome.PASSED, []), ("NODE-002", "n1", Outcome.WARNED, [warn])).verdict() == (
        "PASS", "no check failed (1 warned, listed below)")
    assert _run(("NODE-001", None, Outcome.PASSED, []), ("HOST-001", "n1", Outcome.ERROR, [])).verdict()[0] == "FAIL"
    assert _run(("NODE-001", None, Outcome.SKIPPED, [])).verdict() == ("INCOMPLETE", "no check ran to a verdict")
    assert _run(("NODE-001", None, Outcome.PASSED, []), notes=["worker gw1 crashed"]).verdict() == (
        "INCOMPLETE", "worker gw1 crashed")
    run = _run(("HOST-001", "ssh://n1", Outcome.PASSED, []), ("HOST-001", "ssh://n2", Outcome.FAILED, []),
               ("CRI-001", "ssh://n1", Outcome.PASSED, []))
    assert [a.name for a in run.areas] == ["host", "runtime"]          # areas from the catalog, in its order
    host = run.area("host")
    assert [c.id for c in host.checks] == ["HOST-001"] and len(host.checks[0].targets) == 2
    assert host.checks[0].outcome == Outcome.FAILED and host.verdict == "FAIL"
    assert run.area("gpu").verdict == "NOT RUN"


def test_reports_render_the_same_tree_after_a_json_round_trip() -> None:
    fail = Verdict.failed("node n2", "1", "0", "sysctl -w net.ipv4.ip_forward=1")
    run = _run(("HOST-003", "ssh://n1", Outcome.PASSED, [Verdict.passed("n1")]),
               ("HOST-003", "ssh://n2", Outcome.FAILED, [fail]), ("GPU-001", None, Outcome.SKIPPED, []))
    doc = report.seal(run.to_doc())
    again = RunResult.from_doc(doc)
    assert again.to_doc() | {"digest": doc["digest"]} == doc
    digest = doc["digest"]["value"]
    assert report.render_header(again, digest) == report.render_header(run, digest)
    assert 'data-verdict="FAIL"' in report.render_header(run, digest)
    c, t = again.leaves()[1]
    assert "sysctl -w net.ipv4.ip_forward=1" in report.render_check(c, t)


def test_junit_is_rendered_from_the_tree() -> None:
    fail = Verdict.failed("node n2", "1", "0", "fix it")
    warn = Verdict.warned("node n1", "x", "y", "z")
    run = _run(("HOST-003", "ssh://n2", Outcome.FAILED, [fail]), ("HOST-003", "ssh://n1", Outcome.WARNED, [warn]),
               ("NODE-001", None, Outcome.ERROR, [Verdict.errored("nodes", "API 500")]),
               ("GPU-001", None, Outcome.SKIPPED, []))
    root = ET.fromstring(report.render_junit(run, "abc"))
    assert root.get("verdict") == "FAIL" and root.get("digest") == "abc"
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites["host"].get("tests") == "2" and suites["host"].get("failures") == "1"
    failure = suites["host"].find("testcase/failure")
    assert failure is not None and failure.get("message") == "node n2: expected 1, observed 0; fix: fix it"
    assert suites["nodes"].find("testcase/error") is not None
    assert suites["gpu"].find("testcase/skipped") is not None
    warned = [c for c in suites["host"].iter("testcase") if c.find("system-out") is not None]
    assert len(warned) == 1 and warned[0].find("failure") is None


def test_a_skip_that_blames_a_passing_check_does_not_sign_off() -> None:
    blame = Verdict.skipped("br_netfilter is not loaded (HOST-001 fails with the fix)", blames="HOST-001")
    ok = _run(("HOST-001", "n1", Outcome.FAILED, []), ("HOST-002", "n1", Outcome.SKIPPED, [blame]))
    ok.check_skip_chains()
    assert ok.notes == [] and ok.verdict()[0] == "FAIL"
    broken = _run(("HOST-001", "n1", Outcome.PASSED, []), ("HOST-002", "n1", Outcome.SKIPPED, [blame]))
    broken.check_skip_chains()
    assert broken.verdict()[0] == "INCOMPLETE"
    assert "HOST-002 [n1] skipped blaming HOST-001, but HOST-001 passed" in broken.verdict()[1]
    deselected = _run(("HOST-003", "n1", Outcome.PASSED, []), ("HOST-002", "n1", Outcome.SKIPPED, [blame]))
    deselected.check_skip_chains()
    assert deselected.notes == [] and deselected.verdict()[0] == "PASS"
    stranger = Verdict.skipped("GPU-002 reports it", blames="GPU-002")
    wrong = _run(("HOST-002", "n1", Outcome.SKIPPED, [stranger]), ("HOST-003", "n1", Outcome.PASSED, []))
    wrong.check_skip_chains()
    assert "not among its dependencies (HOST-001)" in wrong.verdict()[1]


def test_a_skip_may_blame_a_check_that_itself_skipped_for_a_failure() -> None:
    """POD-001 skips for a NotReady node; NODE-001 skips because CNI-002 owns that finding; CNI-002 failed."""
    pod = Verdict.skipped("no Ready node to run a pod on; NODE-001 reports why", blames="NODE-001")
    node = Verdict.skipped("NotReady only because the runtime network is not ready", blames="CNI-002")
    chain = _run(("CNI-002", "n2", Outcome.FAILED, []), ("NODE-001", None, Outcome.SKIPPED, [node]),
                 ("POD-001", "n2", Outcome.SKIPPED, [pod]))
    chain.check_skip_chains()
    assert chain.notes == [] and chain.verdict()[0] == "FAIL"
    broken = _run(("CNI-002", "n2", Outcome.PASSED, []), ("NODE-001", None, Outcome.SKIPPED, [node]),
                  ("POD-001", "n2", Outcome.SKIPPED, [pod]))
    broken.check_skip_chains()
    assert len(broken.notes) == 2 and broken.verdict()[0] == "INCOMPLETE"
