"""--strict: a WARN verdict fails the sign-off (and the exit status) only under --strict."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterproof.results import Outcome, RunResult, TargetResult
from clusterproof.verdict import Verdict
from conftest import plugin_suite

ROOT = Path(__file__).resolve().parent.parent
WARN_CHECK = '''
import pytest
from clusterproof import checks
from clusterproof.verdict import Verdict

@pytest.mark.check("HOST-011")
def test_node_name_resolves():
    checks.apply(Verdict.warned("node name n1 on ssh://n1", "resolves", "does not resolve", "add it to /etc/hosts"))

@pytest.mark.check("HOST-003")
def test_ip_forward_enabled():
    checks.apply(Verdict.passed("net.ipv4.ip_forward on ssh://n1", "1", "1"))
'''
KUBECONFIG = """apiVersion: v1
kind: Config
current-context: c
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: t}}]
"""


def _tree(strict: bool) -> RunResult:
    run = RunResult("r", "now", exitstatus=0, strict=strict)
    run.add("HOST-003", "host", TargetResult("a", "ssh://n1", Outcome.PASSED))
    run.add("HOST-011", "host", TargetResult("b", "ssh://n1", Outcome.WARNED,
                                             verdicts=[Verdict.warned("n1", "resolves", "does not", "fix")]))
    return run


def test_warn_passes_the_sign_off_unless_strict() -> None:
    assert _tree(False).verdict() == ("PASS", "no check failed (1 warned, listed below)")
    verdict, why = _tree(True).verdict()
    assert verdict == "FAIL" and "1 check warned" in why and "--strict" in why
    back = RunResult.from_doc(_tree(True).to_doc())
    assert back.strict and back.verdict()[0] == "FAIL"
    assert not RunResult.from_doc(_tree(False).to_doc()).strict


def test_strict_without_warnings_still_passes() -> None:
    run = RunResult("r", "now", exitstatus=0, strict=True)
    run.add("HOST-003", "host", TargetResult("a", "ssh://n1", Outcome.PASSED))
    assert run.verdict()[0] == "PASS"


@pytest.mark.parametrize(("args", "verdict", "rc"), [((), "PASS", 0), (("--strict",), "FAIL", 1)])
def test_plugin_strict_sign_off_and_exit_status(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                args: tuple[str, ...], verdict: str, rc: int) -> None:
    plugin_suite(pytester, monkeypatch, {"suites/host/test_fake_kubeadm.py": WARN_CHECK}, KUBECONFIG)
    result = pytester.runpytest_subprocess("--kubeconfig", str(pytester.path / "kubeconfig"), *args, timeout=120)
    doc = json.loads((pytester.path / "reports" / "summary.json").read_text())
    assert doc["verdict"] == verdict, doc["verdict_reason"]
    assert doc["strict"] is bool(args)
    assert result.ret == rc
    result.stdout.fnmatch_lines([f"*clusterproof sign-off: {verdict}*", "*WARN HOST-011 [[]cluster[]]*"])
