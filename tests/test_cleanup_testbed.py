"""Nothing the suite creates outlives it: Ctrl-C deletes its namespaces, a crash is swept by the next run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.testbed
OWNED = "clusterproof.io/owned=true"
MODULE = "suites/pods/test_pod_namespaces.py"   # deploys pods into its own namespace


def kubectl(tb: dict, *args: str) -> subprocess.CompletedProcess:
    from testbed.paths import bin_dir

    return subprocess.run([str(bin_dir(tb["version"]) / "kubectl"), "--kubeconfig", tb["kubeconfig"], *args],
                          capture_output=True, text=True, timeout=60, check=False)


def owned_namespaces(tb: dict) -> dict[str, str]:
    """name -> phase of every namespace the suite labelled."""
    out = json.loads(kubectl(tb, "get", "namespaces", "-l", OWNED, "-o", "json").stdout or '{"items": []}')
    return {n["metadata"]["name"]: n["status"]["phase"] for n in out["items"]}


def start_suite(tb: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pytest", MODULE, "-p", "no:xdist", "-q",
                             f"--kubeconfig={tb['kubeconfig']}", f"--ssh-key={tb['ssh_key']}",
                             "--report-dir", "/tmp/cp-cleanup-reports"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            # as from a terminal: a run under a shell's background job inherits SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_new_namespace(tb: dict, before: set[str], proc: subprocess.Popen) -> str:
    """The run's new namespace, as soon as the module has put a pod in it (the module then waits for its pods and
    execs into them for several seconds: an interrupt sent now lands in a check, not after the last one)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        new = [n for n, phase in owned_namespaces(tb).items() if n not in before and phase == "Active"]
        if new and kubectl(tb, "-n", new[0], "get", "pods", "-o", "name").stdout.strip():
            return new[0]
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "suite ended early"
        time.sleep(0.2)
    raise AssertionError("the suite created no namespace with a pod within 90 s")


def gone_or_terminating(tb: dict, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if owned_namespaces(tb).get(name) in (None, "Terminating"):
            return True
        time.sleep(1)
    return False


def test_ctrl_c_deletes_the_runs_namespace(testbed: dict) -> None:
    before = set(owned_namespaces(testbed))
    proc = start_suite(testbed)
    try:
        ns = wait_for_new_namespace(testbed, before, proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, out[-2000:]          # pytest's "interrupted"
    assert "Traceback" not in out
    assert owned_namespaces(testbed).get(ns) is None, f"{ns} left behind after Ctrl-C"


def test_a_crashed_runs_namespace_is_swept_by_the_next_run(testbed: dict) -> None:
    before = set(owned_namespaces(testbed))
    proc = start_suite(testbed)
    ns = wait_for_new_namespace(testbed, before, proc)
    os.killpg(proc.pid, signal.SIGKILL)                # no finalizer runs: a real crash
    proc.wait(timeout=30)
    assert owned_namespaces(testbed).get(ns) == "Active"
    again = subprocess.run([sys.executable, "-m", "pytest", MODULE, "-p", "no:xdist", "-q", "-k", "share_net",
                            f"--kubeconfig={testbed['kubeconfig']}", f"--ssh-key={testbed['ssh_key']}",
                            "--report-dir", "/tmp/cp-cleanup-reports"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, check=False)
    assert again.returncode == 0, again.stdout[-2000:]
    assert gone_or_terminating(testbed, ns, 5), f"{ns} from the crashed run was not swept"
