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


def test_a_skip_that_blames_a_passing_check_becomes_a_failure() -> None:
    blame = Verdict.skipped("br_netfilter is not loaded (HOST-001 fails with the fix)", blames="HOST-001")
    ok = _run(("HOST-001", "n1", Outcome.FAILED, []), ("HOST-002", "n1", Outcome.SKIPPED, [blame]))
    assert ok.check_skip_chains() == []
    assert ok.notes == [] and ok.verdict()[0] == "FAIL" and ok.leaves()[1][1].outcome == Outcome.SKIPPED
    broken = _run(("HOST-001", "n1", Outcome.PASSED, []), ("HOST-002", "n1", Outcome.SKIPPED, [blame]))
    broken.leaves()[1][1].message = blame.reason
    changed = broken.check_skip_chains()
    assert [c.id for c, _ in changed] == ["HOST-002"]
    c, t = broken.leaves()[1]
    assert c.id == "HOST-002" and t.outcome == Outcome.FAILED
    assert t.message == ("skipped blaming HOST-001, but HOST-001 passed in this run: br_netfilter is not loaded "
                         "(HOST-001 fails with the fix)")
    assert t.verdict is not None and t.verdict.status == Status.FAIL and t.verdict.observed == t.message
    assert t.verdicts[1] == blame                      # the skip's own verdict is kept, after the failure
    assert broken.notes == [] and broken.verdict() == ("FAIL", "1 check failed or errored")
    doc = broken.to_doc()
    assert doc["totals"]["failed"] == 1 and doc["totals"]["skipped"] == 0 and doc["areas"]["host"]["failed"] == 1
    assert RunResult.from_doc(doc).leaves()[1][1].outcome == Outcome.FAILED
    failure = ET.fromstring(report.render_junit(broken)).find("testsuite/testcase/failure")
    assert failure is not None and "but HOST-001 passed in this run" in (failure.get("message") or "")
    header = report.render_header(broken, "d")
    assert 'data-verdict="FAIL"' in header and "1 failed, 0 errors, 0 skipped" in header
    assert "skipped blaming HOST-001, but HOST-001 passed in this run" in header

    stranger = Verdict.skipped("GPU-002 reports it", blames="GPU-002")
    wrong = _run(("HOST-002", "n1", Outcome.SKIPPED, [stranger]), ("HOST-003", "n1", Outcome.PASSED, []))
    wrong.check_skip_chains()
    assert wrong.verdict()[0] == "FAIL"
    assert wrong.leaves()[0][1].message.startswith(
        "skipped blaming GPU-002, which is not among its dependencies (HOST-001)")
    # a check without dependencies may blame none
    lonely = _run(("HOST-003", "n1", Outcome.SKIPPED, [Verdict.skipped("x", blames="HOST-001")]),
                  ("HOST-001", "n1", Outcome.FAILED, []))
    lonely.check_skip_chains()
    t3 = next(t for c, t in lonely.leaves() if c.id == "HOST-003")
    assert t3.outcome == Outcome.FAILED and "not among its dependencies (none)" in t3.message


def test_a_skip_blaming_a_deselected_check_stays_a_skip_and_says_so() -> None:
    blame = Verdict.skipped("br_netfilter is not loaded", blames="HOST-001")
    run = _run(("HOST-003", "n1", Outcome.PASSED, []), ("HOST-002", "n1", Outcome.SKIPPED, [blame]))
    changed = run.check_skip_chains()
    c, t = run.leaves()[1]
    assert changed == [(c, t)] and t.outcome == Outcome.SKIPPED
    assert "the owner HOST-001 was not run in this run" in t.message
    assert run.notes == ["HOST-002 [n1] skipped blaming HOST-001, but HOST-001 was not run (deselected): "
                         "run HOST-001 too to know whether the skip stands"]
    assert run.verdict()[0] == "INCOMPLETE"
    assert "Why the run is incomplete" in report.render_header(run, "d")


def test_a_skip_may_blame_a_check_that_itself_skipped_for_a_failure() -> None:
    """POD-001 skips for a NotReady node; NODE-001 skips because CNI-002 owns that finding; CNI-002 failed."""
    pod = Verdict.skipped("no Ready node to run a pod on; NODE-001 reports why", blames="NODE-001")
    node = Verdict.skipped("NotReady only because the runtime network is not ready", blames="CNI-002")
    chain = _run(("CNI-002", "n2", Outcome.FAILED, []), ("NODE-001", None, Outcome.SKIPPED, [node]),
                 ("POD-001", "n2", Outcome.SKIPPED, [pod]))
    assert chain.check_skip_chains() == []
    assert chain.notes == [] and chain.verdict()[0] == "FAIL"
    assert [t.outcome for t in chain.targets].count(Outcome.SKIPPED) == 2
    broken = _run(("CNI-002", "n2", Outcome.PASSED, []), ("NODE-001", None, Outcome.SKIPPED, [node]),
                  ("POD-001", "n2", Outcome.SKIPPED, [pod]))
    assert len(broken.check_skip_chains()) == 2
    assert broken.notes == [] and broken.verdict() == ("FAIL", "2 checks failed or errored")
    msgs = {c.id: t.message for c, t in broken.leaves()}
    assert msgs["NODE-001"] == "skipped blaming CNI-002, but CNI-002 passed in this run: m"
    assert msgs["POD-001"] == ("skipped blaming NODE-001, but NODE-001 skipped blaming CNI-002, and CNI-002 passed "
                               "in this run: m")
    # the chain ends in a check that was not run: the skips stand, and say so
    open_end = _run(("NODE-001", None, Outcome.SKIPPED, [node]), ("POD-001", "n2", Outcome.SKIPPED, [pod]),
                    ("NODE-002", None, Outcome.PASSED, []))
    open_end.check_skip_chains()
    assert [t.outcome for t in open_end.targets].count(Outcome.SKIPPED) == 2
    assert len(open_end.notes) == 2 and all("CNI-002 was not run" in n for n in open_end.notes)
    assert open_end.verdict()[0] == "INCOMPLETE"
    # an owner that skipped without blaming anything did not fail either
    alone = _run(("NODE-001", None, Outcome.SKIPPED, [Verdict.skipped("no nodes listed")]),
                 ("POD-001", "n2", Outcome.SKIPPED, [pod]))
    alone.check_skip_chains()
    assert alone.leaves()[1][1].outcome == Outcome.FAILED
    assert "NODE-001 only skipped (for its own reason, not a failure)" in alone.leaves()[1][1].message
