"""The reporting plugin on small fake check modules: files, areas, digest, compare, redaction, xdist.

No cluster: the runs pass a kubeconfig whose API server does not answer, so the fingerprint
degrades to "no cluster reached" and the reports are still written.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path

import pytest

from clusterproof import catalog
from clusterproof.results import EXIT_INCOMPLETE
from conftest import plugin_suite

ROOT = Path(__file__).resolve().parent.parent

# Planted secrets: none of these may appear in any report file or in the terminal output.
JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6InBsYW50ZWQifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cGxhbnRlZCJ9"
       ".UExBTlRFRC1TSUdOQVRVUkUtMTIzNDU2")
KC_TOKEN = "kc-token-planted-0123456789abcdef"
PASSWORD = "Plant3d-Passw0rd-Xyz"
ENV_SECRET = "env-secret-value-7f3a9c1d"
BEARER = "planted-bearer-Tok3n-abcdef"
KEY_BODY = "MIIEpAIBAAKCAQEAplantedPrivateKeyBodyLine0123456789abcdefABCDEF"
KEY_PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\n"
KEY_DATA = base64.b64encode(KEY_PEM.encode()).decode()
SECRETS = [JWT, KC_TOKEN, PASSWORD, ENV_SECRET, BEARER, KEY_BODY, KEY_DATA]

KUBECONFIG = f"""apiVersion: v1
kind: Config
current-context: planted
clusters:
- name: planted
  cluster:
    server: https://127.0.0.1:1
contexts:
- name: planted
  context: {{cluster: planted, user: planted}}
users:
- name: planted
  user:
    token: {KC_TOKEN}
    client-key-data: {KEY_DATA}
"""

HOST = '''
import os
import pytest
from clusterproof import checks

@pytest.mark.check("HOST-001")
@pytest.mark.parametrize("node", ["ssh://node-1", "ssh://node-2"])
def test_ip_forward_enabled(node):
    """net.ipv4.ip_forward MUST be 1 on every node."""
    value = "0" if node == "ssh://node-2" and os.environ.get("FAKE_FAULT") == "ip_forward" else "1"
    checks.evidence(f"{node}: cat /proc/sys/net/ipv4/ip_forward", value + "\\n")
    checks.require(value == "1", f"net.ipv4.ip_forward on {node}", 1, value,
                   "sysctl -w net.ipv4.ip_forward=1 and persist it in /etc/sysctl.d/k8s.conf")

@pytest.mark.check("HOST-002")
def test_swap_off():
    """Swap MUST be off on every node."""
    checks.evidence("cat /proc/swaps", "Filename\\tType\\tSize\\tUsed\\tPriority\\n")
'''

NETWORK = '''
import os
import pytest
from clusterproof import checks

@pytest.mark.check("DNS-001")
def test_dns_resolves_kubernetes_default():
    """kubernetes.default MUST resolve from a pod."""
    checks.evidence("kubectl exec probe -- nslookup kubernetes.default", "Address: 198.19.240.1")
    if os.environ.get("FAKE_FAULT") == "dns":
        checks.fail("nslookup kubernetes.default from pod probe", "198.19.240.1", "NXDOMAIN",
                    "scale CoreDNS back up: kubectl -n kube-system scale deploy coredns --replicas=2")

@pytest.mark.check("CNI-001")
def test_pod_to_pod():
    """A pod MUST reach a pod on another node."""
'''

NODES = '''
import json
import logging
import os
from pathlib import Path
import pytest
from clusterproof import checks

@pytest.mark.check("NODE-001")
def test_nodes_ready(pytestconfig):
    """Every node MUST be Ready."""
    planted = json.loads(Path("planted.json").read_text())  # values unknown to the redactor: patterns must catch them
    kubeconfig = Path(pytestconfig.getoption("kubeconfig")).read_text()
    checks.evidence("kubectl config view --raw", kubeconfig)
    checks.evidence("env", "CLUSTERPROOF_PLANTED_SECRET=" + os.environ["CLUSTERPROOF_PLANTED_SECRET"])
    checks.evidence("curl -v https://api", "> Authorization: Bearer " + planted["bearer"] + "\\n< HTTP/1.1 200 OK")
    checks.evidence("cat key.pem", planted["pem"])
    print("connecting with", os.environ["CLUSTERPROOF_PLANTED_SECRET"])
    logging.getLogger("fake").warning("login password=%s token %s", planted["password"], planted["jwt"])
    checks.fail("node node-2", "Ready=True", f"Ready=False (Authorization: Bearer {planted['bearer']} rejected)",
                "check the kubelet on node-2: journalctl -u kubelet")
'''

PODS = '''
import pytest
from clusterproof import checks
from kubernetes.client.exceptions import ApiException

@pytest.fixture
def exec_pod():
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = (\'{"kind":"Status","message":"pods \\\\"probe\\\\" is forbidden: User \\\\"system:serviceaccount:\'
                \'clusterproof:clusterproof\\\\" cannot create resource \\\\"pods/exec\\\\" in API group \\\\"\\\\" \'
                \'in the namespace \\\\"cp-pods-1\\\\"","reason":"Forbidden","code":403}\')
    raise exc

@pytest.mark.check("POD-001")
def test_app_shares_pause_namespaces(exec_pod):
    """The app container MUST share the pause container's net, ipc and uts namespaces."""
'''

GPU = '''
import pytest
from clusterproof import checks

@pytest.mark.check("GPU-001")
def test_gpu_advertised():
    """Nodes with GPUs MUST advertise nvidia.com/gpu."""
    checks.skip("no node advertises nvidia.com/gpu; pass --require-gpu to fail instead")
'''

FORBIDDEN_MSG = ("forbidden: create pods/exec in cp-pods-1 for system:serviceaccount:clusterproof:clusterproof; "
                 "grant it in manifests/rbac/clusterrole.yaml")


def make_suite(pytester: pytest.Pytester, with_secrets: bool = True, with_forbidden: bool = True) -> Path:
    """A small fake suite under suites/<area>/ with the real options and reporting plugins."""
    pytester.makeconftest('pytest_plugins = ["fixtures.options", "fixtures.reporting"]\n')
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\njunit_family = xunit2\n")
    files = {"suites/host/test_fake_host.py": HOST, "suites/network/test_fake_network.py": NETWORK,
             "suites/gpu/test_fake_gpu.py": GPU}
    if with_secrets:
        files["suites/nodes/test_fake_nodes.py"] = NODES
    if with_forbidden:
        files["suites/pods/test_fake_pods.py"] = PODS
    for name, text in files.items():
        p = pytester.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (pytester.path / "planted.json").write_text(json.dumps({"bearer": BEARER, "password": PASSWORD, "jwt": JWT,
                                                             "pem": KEY_PEM}))
    kc = pytester.path / "kubeconfig"
    kc.write_text(KUBECONFIG)
    return kc


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester with the fake suite, planted secrets in the environment and no real cluster."""
    make_suite(pytester)
    monkeypatch.setenv("CLUSTERPROOF_PLANTED_SECRET", ENV_SECRET)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("FAKE_FAULT", raising=False)
    return pytester


RUNNER_ARGS = ["--html=reports/report.html", "--self-contained-html", "--junitxml=reports/junit.xml"]


def run(pytester: pytest.Pytester, *args: str, subprocess_: bool = False) -> pytest.RunResult:
    base = ["--kubeconfig", str(pytester.path / "kubeconfig"), "-p", "no:randomly", *RUNNER_ARGS]
    if subprocess_:
        return pytester.runpytest_subprocess(*base, *args, timeout=240)
    return pytester.runpytest(*base, *args)


def load_summary(pytester: pytest.Pytester, folder: str = "reports") -> dict:
    return json.loads((pytester.path / folder / "summary.json").read_text())


def by_id(doc: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for c in doc["checks"]:
        out.setdefault(c["id"], []).append(c)
    return out


def assert_valid_files(folder: Path) -> tuple[dict, ET.Element, str]:
    doc = json.loads((folder / "summary.json").read_text())
    assert doc["schema"] == "clusterproof.summary/2"
    junit = ET.parse(folder / "junit.xml").getroot()
    html = (folder / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html>")
    external = re.findall(r'(?:src|href)\s*=\s*["\']?(?:https?:)?//[^"\'\s>]+', html, re.IGNORECASE)
    assert external == []
    assert not re.search(r"<link\b[^>]*stylesheet", html), "the stylesheet must be inline"
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html)
    assert "@import" not in html
    return doc, junit, html


def test_three_files_are_written_and_valid(suite: pytest.Pytester) -> None:
    result = run(suite)
    result.assert_outcomes(passed=5, failed=1, skipped=1, errors=1)
    doc, junit, html = assert_valid_files(suite.path / "reports")
    assert junit.tag == "testsuites" and junit.get("verdict") == "FAIL"
    assert sum(int(x.get("tests")) for x in junit.iter("testsuite")) == 8
    assert {x.get("name") for x in junit.iter("testsuite")} == {"host", "nodes", "network", "pods", "gpu"}
    cases = junit.iter("testcase")
    assert len(list(cases)) == 8
    assert 'id="clusterproof-header"' in html
    assert "SIGN-OFF: FAIL" in html
    assert "Cluster fingerprint" in html
    assert "no cluster reached" in html
    fp = doc["fingerprint"]
    assert fp["error"].startswith("no cluster reached")
    assert "127.0.0.1:1" in fp["error"]
    assert doc["suite_version"]
    assert doc["started"] <= doc["finished"]
    result.stdout.fnmatch_lines(["*clusterproof sign-off: FAIL*", "*summary: reports*summary.json*sha256*"])


def test_summary_per_area_and_per_check(suite: pytest.Pytester) -> None:
    run(suite)
    doc = load_summary(suite)
    areas = doc["areas"]
    assert areas["host"] == {"verdict": "PASS", "total": 3, "passed": 3, "warned": 0, "failed": 0, "error": 0,
                             "skipped": 0, "xfailed": 0, "xpassed": 0, "checks": ["HOST-001", "HOST-002"]}
    assert areas["nodes"]["verdict"] == "FAIL"
    assert areas["nodes"]["failed"] == 1
    assert areas["pods"]["verdict"] == "FAIL"
    assert areas["pods"]["error"] == 1
    assert areas["gpu"]["verdict"] == "SKIPPED"
    assert areas["runtime"]["verdict"] == "NOT RUN"
    assert areas["apps"]["verdict"] == "NOT RUN"
    assert doc["verdict"] == "FAIL"
    assert doc["totals"]["failed"] == 1
    assert doc["totals"]["error"] == 1
    checks = by_id(doc)
    host1 = checks["HOST-001"]
    assert [c["target"] for c in host1] == ["ssh://node-1", "ssh://node-2"]
    assert host1[0]["evidence"] == [{"source": "ssh://node-1: cat /proc/sys/net/ipv4/ip_forward", "output": "1\n"}]
    assert host1[0]["must"] == catalog.get("HOST-001").must   # the catalog's, not the test's docstring
    node = checks["NODE-001"][0]
    assert node["outcome"] == "failed"
    assert node["area"] == "nodes"
    assert node["verdict"]["expected"] == "Ready=True"
    assert node["verdict"]["fix"].startswith("check the kubelet")
    assert isinstance(node["duration"], float)
    gpu = checks["GPU-001"][0]
    assert gpu["outcome"] == "skipped"
    assert "--require-gpu" in gpu["message"]
    html = (suite.path / "reports" / "report.html").read_text()
    for area in ("host", "runtime", "nodes", "network", "pods", "apps", "gpu"):
        assert f'data-area="{area}"' in html


def test_forbidden_check_says_which_permission(suite: pytest.Pytester) -> None:
    result = run(suite)
    pod = by_id(load_summary(suite))["POD-001"][0]
    assert pod["outcome"] == "error"
    assert pod["verdict"]["status"] == "error"
    assert pod["verdict"]["subject"] == "permission create pods/exec in cp-pods-1"
    assert pod["verdict"]["fix"] == "grant it in manifests/rbac/clusterrole.yaml"
    result.stdout.fnmatch_lines([f"*{FORBIDDEN_MSG}*"])


def test_verdict_pass_lists_skips(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    make_suite(pytester, with_secrets=False, with_forbidden=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = run(pytester)
    result.assert_outcomes(passed=5, skipped=1)
    doc = load_summary(pytester)
    assert doc["verdict"] == "PASS"
    assert "1 skipped" in doc["verdict_reason"]
    html = (pytester.path / "reports" / "report.html").read_text()
    assert "SIGN-OFF: PASS" in html
    assert 'id="cp-skipped"' in html
    assert "GPU-001" in html


def verify(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clusterproof.verify", *map(str, paths)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_digest_tells_an_edit_apart(suite: pytest.Pytester) -> None:
    run(suite)
    folder = suite.path / "reports"
    summary, html = folder / "summary.json", folder / "report.html"
    ok = verify(summary, html)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("VALID") == 2

    doc = json.loads(summary.read_text())
    for c in doc["checks"]:
        if c["outcome"] == "failed":
            c["outcome"] = "passed"
    doc["verdict"] = "PASS"
    summary.write_text(json.dumps(doc, indent=1))
    bad = verify(summary)
    assert bad.returncode == 1
    assert bad.stdout.startswith("ALTERED")

    original = html.read_text()
    html.write_text(original.replace("SIGN-OFF: FAIL", "SIGN-OFF: PASS"))
    bad_html = verify(html)
    assert bad_html.returncode == 1
    assert "sign-off header" in bad_html.stdout
    start = original.index("data-jsonblob=")
    table = original[start:].replace("journalctl -u kubelet", "nothing to do", 1)
    assert table != original[start:]
    html.write_text(original[:start] + table)
    bad_row = verify(html)
    assert bad_row.returncode == 1
    assert "test_nodes_ready: its check block" in bad_row.stdout
    (folder / "not-a-report.json").write_text("{}")
    assert verify(folder / "not-a-report.json").returncode == 2


def test_compare_shows_exactly_the_injected_failure(suite: pytest.Pytester, monkeypatch) -> None:
    run(suite, "--report-dir", "healthy", "--html=healthy/report.html", "--junitxml=healthy/junit.xml")
    healthy = suite.path / "healthy" / "summary.json"
    assert healthy.is_file()

    monkeypatch.setenv("FAKE_FAULT", "dns")
    result = run(suite, "--compare", str(healthy))
    cmp = load_summary(suite)["compare"]
    assert [r["nodeid"] for r in cmp["newly_failing"]] == [
        "suites/network/test_fake_network.py::test_dns_resolves_kubernetes_default"]
    assert cmp["newly_failing"][0]["label"] == "DNS-001"
    assert cmp["fixed"] == []
    assert sorted(r["id"] for r in cmp["still_failing"]) == ["NODE-001", "POD-001"]
    assert cmp["previous"]["digest_valid"] is True
    result.stdout.fnmatch_lines(["*newly failing: 1*", "*DNS-001*test_dns_resolves_kubernetes_default*",
                                 "*fixed: 0*", "*still failing: 2*"])
    html = (suite.path / "reports" / "report.html").read_text()
    assert 'data-compare="newly_failing"><b>Newly failing: 1</b>' in html

    monkeypatch.delenv("FAKE_FAULT")
    run(suite, "--compare", str(suite.path / "reports" / "summary.json"), "--report-dir", "healed",
        "--html=healed/report.html", "--junitxml=healed/junit.xml")
    cmp = load_summary(suite, "healed")["compare"]
    assert [r["id"] for r in cmp["fixed"]] == ["DNS-001"]
    assert cmp["newly_failing"] == []


def test_compare_rejects_a_file_that_is_not_a_summary(suite: pytest.Pytester) -> None:
    (suite.path / "prev.json").write_text('{"hello": 1}')
    result = run(suite, "--compare", "prev.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--compare prev.json: not a clusterproof summary.json*"])


def test_no_planted_secret_in_any_report_file(suite: pytest.Pytester) -> None:
    result = run(suite, "-o", "log_level=INFO", "--log-file=reports/run.log")
    folder = suite.path / "reports"
    files = {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}
    assert {"report.html", "junit.xml", "summary.json", "run.log"} <= set(files)
    texts = {**files, "terminal": "\n".join(result.outlines + result.errlines)}
    leaks = [(name, s[:12]) for name, text in texts.items() for s in SECRETS if s in text]
    assert leaks == []
    node = by_id(load_summary(suite))["NODE-001"][0]
    shown = json.dumps(node)
    assert "[REDACTED]" in shown
    assert "kubectl config view --raw" in shown
    assert "login password=[REDACTED]" in files["run.log"]


def test_works_under_xdist(suite: pytest.Pytester) -> None:
    result = run(suite, "-n", "2", subprocess_=True)
    result.assert_outcomes(passed=5, failed=1, skipped=1, errors=1)
    doc, junit, html = assert_valid_files(suite.path / "reports")
    assert len(list(junit.iter("testcase"))) == 8
    ids = by_id(doc)
    assert set(ids) == {"HOST-001", "HOST-002", "DNS-001", "CNI-001", "NODE-001", "POD-001", "GPU-001"}
    assert ids["HOST-002"][0]["evidence"][0]["source"] == "cat /proc/swaps"
    assert ids["NODE-001"][0]["verdict"]["observed"].startswith("Ready=False")
    assert doc["areas"]["host"]["passed"] == 3
    assert doc["verdict"] == "FAIL"
    texts = [html, (suite.path / "reports" / "junit.xml").read_text(), json.dumps(doc),
             "\n".join(result.outlines + result.errlines)]
    assert [s[:12] for s in SECRETS for t in texts if s in t] == []
    assert verify(suite.path / "reports" / "summary.json", suite.path / "reports" / "report.html").returncode == 0


def test_report_dir_alone_gives_all_three_files(suite: pytest.Pytester) -> None:
    suite.runpytest("--kubeconfig", str(suite.path / "kubeconfig"), "--report-dir", "out")
    assert {p.name for p in (suite.path / "out").iterdir()} >= {"report.html", "junit.xml", "summary.json"}


CHAIN = '''
import os
import pytest
from clusterproof import checks

@pytest.mark.check("NODE-006")
def test_coredns_available():
    if os.environ.get("FAKE_FAULT") == "coredns":
        checks.fail("deployment kube-system/coredns", "2/2 available", "0/2 available", "scale it up")

@pytest.mark.check("DNS-001")
def test_dns_resolves():
    checks.skip("the cluster DNS has no ready endpoints; NODE-006 reports why", blames="NODE-006")
'''
CHAIN_MSG = ("skipped blaming NODE-006, but NODE-006 passed in this run: the cluster DNS has no ready endpoints; "
             "NODE-006 reports why")


@pytest.fixture
def chain_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """DNS-001 always skips blaming NODE-006; NODE-006 fails only under FAKE_FAULT=coredns."""
    monkeypatch.delenv("FAKE_FAULT", raising=False)
    return plugin_suite(pytester, monkeypatch, {"suites/network/test_chain.py": CHAIN}, KUBECONFIG)


def test_a_broken_skip_chain_fails_the_run_in_every_file(chain_suite: pytest.Pytester) -> None:
    result = run(chain_suite)
    result.assert_outcomes(passed=1, failed=1)           # the terminal tells the tree's outcome too
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*clusterproof sign-off: FAIL (1 check failed or errored)*",
                                 "FAILED suites/network/test_chain.py::test_dns_resolves - skipped blaming NODE*"])
    assert "made it a failure" in result.stdout.str()
    folder = chain_suite.path / "reports"
    doc, junit, html = assert_valid_files(folder)
    assert doc["verdict"] == "FAIL" and doc["exitstatus"] == 1 and doc["notes"] == []
    dns = by_id(doc)["DNS-001"][0]
    assert dns["outcome"] == "failed" and dns["message"] == CHAIN_MSG
    assert dns["verdict"]["status"] == "fail" and dns["verdict"]["observed"] == CHAIN_MSG
    assert [v["status"] for v in dns["verdicts"]] == ["fail", "skip"]
    assert doc["totals"]["failed"] == 1 and doc["totals"]["skipped"] == 0 and doc["totals"]["passed"] == 1
    assert doc["areas"]["network"]["verdict"] == "FAIL" and doc["areas"]["network"]["failed"] == 1
    assert junit.get("verdict") == "FAIL"
    failure = junit.find("testsuite[@name='network']/testcase/failure")
    assert failure is not None and CHAIN_MSG in (failure.get("message") or "")
    assert junit.find(".//skipped") is None
    assert "SIGN-OFF: FAIL" in html and "1 passed, 0 warned, 1 failed, 0 errors, 0 skipped" in html
    blob = re.search(r'data-jsonblob="([^"]*)"', html)
    assert blob is not None
    table = json.loads(unescape(blob.group(1)))
    rows = table["tests"]["suites/network/test_chain.py::test_dns_resolves"]
    assert [r["result"] for r in rows] == ["Failed"]
    ok = verify(folder / "summary.json", folder / "report.html")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_skip_whose_owner_failed_stands(chain_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FAULT", "coredns")
    result = run(chain_suite)
    result.assert_outcomes(failed=1, skipped=1)
    doc = load_summary(chain_suite)
    assert doc["verdict"] == "FAIL" and doc["notes"] == []
    dns = by_id(doc)["DNS-001"][0]
    assert dns["outcome"] == "skipped"
    assert dns["message"] == "the cluster DNS has no ready endpoints; NODE-006 reports why"
    folder = chain_suite.path / "reports"
    assert verify(folder / "summary.json", folder / "report.html").returncode == 0


def test_a_skip_whose_owner_was_deselected_says_so(chain_suite: pytest.Pytester) -> None:
    result = run(chain_suite, "-k", "not coredns")
    result.assert_outcomes(skipped=1, deselected=1)
    doc = load_summary(chain_suite)
    assert doc["verdict"] == "INCOMPLETE"
    # a run that cannot sign off does not exit 0: its own status, and the file says the same
    assert result.ret == EXIT_INCOMPLETE and doc["exitstatus"] == EXIT_INCOMPLETE
    assert doc["notes"] == ["DNS-001 skipped blaming NODE-006, but NODE-006 was not run (deselected): run NODE-006 "
                            "too to know whether the skip stands"]
    dns = by_id(doc)["DNS-001"][0]
    assert dns["outcome"] == "skipped" and "the owner NODE-006 was not run in this run" in dns["message"]
    folder = chain_suite.path / "reports"
    html = (folder / "report.html").read_text()
    assert "SIGN-OFF: INCOMPLETE" in html and "the owner NODE-006 was not run in this run" in html
    ok = verify(folder / "summary.json", folder / "report.html")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_broken_skip_chain_fails_under_xdist(chain_suite: pytest.Pytester) -> None:
    result = run(chain_suite, "-n", "2", subprocess_=True)
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    doc = load_summary(chain_suite)
    assert doc["verdict"] == "FAIL" and by_id(doc)["DNS-001"][0]["message"] == CHAIN_MSG
    folder = chain_suite.path / "reports"
    assert verify(folder / "summary.json", folder / "report.html").returncode == 0


def test_an_error_without_a_report_of_its_own_says_why() -> None:
    from fixtures.reporting import _machinery_message

    assert "crashed" in _machinery_message({"setup": "passed", "???": "failed"})
    assert "never run" in _machinery_message({"setup": "passed"})
    assert "no verdict" in _machinery_message({"setup": "passed", "call": "weird"})
