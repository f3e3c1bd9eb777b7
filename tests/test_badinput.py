"""Bad input to the real suite: one clear line, a distinct exit status, no traceback, fast."""
from __future__ import annotations

import time

import nshosts
import pytest

from clusterproof import kube
from conftest import closed_port

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}
users:
- name: u
  user: {{token: t}}
contexts:
- name: only
  context: {{cluster: c, user: u}}
current-context: only
"""


def run(tmp_path, *args: str, timeout: float = 60) -> nshosts.SuiteRun:
    return nshosts.run_suite("suites/host", *args, report_dir=tmp_path / "reports", timeout=timeout)


def assert_one_clear_line(r: nshosts.SuiteRun, code: int, text: str) -> None:
    out = r.stdout + r.stderr
    assert r.rc == code, out[-2000:]
    assert "Traceback" not in out and "File \"" not in out, out[-2000:]
    lines = [ln for ln in out.splitlines() if text in ln]
    assert len(lines) >= 1, out[-2000:]
    assert len(lines[0]) < 400


@pytest.fixture
def kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(port=closed_port()))
    return path


def test_missing_kubeconfig(tmp_path):
    r = run(tmp_path, "--kubeconfig", str(tmp_path / "nope"))
    assert_one_clear_line(r, kube.EXIT_KUBECONFIG, f"kubeconfig {tmp_path / 'nope'} does not exist")


def test_unreadable_kubeconfig(tmp_path):
    (tmp_path / "adir").mkdir()  # root reads any file; a folder cannot be read as one
    r = run(tmp_path, "--kubeconfig", str(tmp_path / "adir"))
    assert_one_clear_line(r, kube.EXIT_KUBECONFIG, "cannot be read")


def test_kubeconfig_that_is_not_one(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("this: [is not\n")
    r = run(tmp_path, "--kubeconfig", str(bad))
    assert_one_clear_line(r, kube.EXIT_KUBECONFIG, "is not a valid kubeconfig")


def test_unknown_context(tmp_path, kubeconfig):
    r = run(tmp_path, "--kubeconfig", str(kubeconfig), "--context", "elsewhere")
    assert_one_clear_line(r, kube.EXIT_CONTEXT, "context 'elsewhere' is not in")
    assert "known contexts: only" in r.stdout + r.stderr


def test_api_server_that_does_not_answer_fails_within_10s(tmp_path, kubeconfig):
    t0 = time.monotonic()
    r = run(tmp_path, "--kubeconfig", str(kubeconfig))
    took = time.monotonic() - t0
    assert_one_clear_line(r, kube.EXIT_API, "does not answer")
    assert took < 10, f"took {took:.1f}s"


def test_api_server_that_does_not_answer_with_the_pod_transport(tmp_path, kubeconfig):
    r = run(tmp_path, "--kubeconfig", str(kubeconfig), "--host-transport=pod")
    assert_one_clear_line(r, kube.EXIT_API, "does not answer")


def test_ssh_host_down(tmp_path):
    port = closed_port()
    t0 = time.monotonic()
    r = run(tmp_path, "--hosts", f"ssh://root@127.0.0.1:{port}")
    assert_one_clear_line(r, kube.EXIT_SSH, "clusterproof: unreachable: host ssh://127.0.0.1 unreachable over SSH")
    assert "Connection refused" in r.stdout
    assert set(v.outcome for v in r.verdicts.values()) == {"error"}
    assert time.monotonic() - t0 < 60


def test_pod_transport_with_hosts_is_a_usage_error(tmp_path):
    r = run(tmp_path, "--hosts", "ssh://root@127.0.0.1", "--host-transport=pod")
    assert_one_clear_line(r, kube.EXIT_USAGE, "--hosts/--ansible-inventory choose SSH hosts")
