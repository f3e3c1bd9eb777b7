"""Fixtures shared by the project's own tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed.api import Testbed  # noqa: E402  (found through the path above)


def testbed_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:  # noqa: PT028 (a helper)
    """Run `python -m testbed ARGS` from the repository root (for tests of the CLI; others use Testbed)."""
    return subprocess.run([sys.executable, "-m", "testbed", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


testbed_cli.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="session")
def testbed() -> dict:
    """The running local testbed (kubeconfig, nodes, ssh key); skips when it is not up.

    CI (.ci/run) brings it up first; CLUSTERPROOF_REQUIRE_TESTBED=1 turns the skip into a failure.
    """
    st = Testbed().status()
    if not st.healthy:
        bad = "; ".join(f"{c.name}{f'[{c.node}]' if c.node else ''}: {c.detail}" for c in st.unhealthy())
        msg = f"testbed not healthy (python -m testbed up): {(bad or 'not up')[:600]}"
        if os.environ.get("CLUSTERPROOF_REQUIRE_TESTBED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    doc = st.to_json()
    if len(doc.get("nodes") or []) != 2 or doc.get("cni") != "kube-router" or doc.get("bootstrap") != "processes":
        msg = (f"the project's tests need the two-node kube-router testbed of processes (faults name tb-node-2 and "
               f"kube-router, and restart components as processes), this one has {len(doc.get('nodes') or [])} "
               f"node(s), {doc.get('cni')} and {doc.get('bootstrap')}: "
               "python -m testbed up --nodes 2 --cni kube-router --bootstrap processes")
        if os.environ.get("CLUSTERPROOF_REQUIRE_TESTBED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return doc


@pytest.fixture(scope="session")
def testbed_api(testbed: dict) -> Testbed:
    """The running testbed's API, e.g. `with testbed_api.fault("taint", node="tb-node-1"):` (healed after)."""
    return Testbed()


def run_suite(pytester: pytest.Pytester, *args: str, testbed: dict | None = None, timeout: float = 900):
    """Run the real suite (suites/ with the root conftest) in a subprocess, against the testbed."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
           "-c", str(ROOT / "pytest.ini")]
    if testbed:
        cmd += ["--kubeconfig", testbed["kubeconfig"], "--ssh-key", testbed["ssh_key"]]
    return pytester.run(*cmd, *args, timeout=timeout)


def junit_outcomes(junit: Path, checks: dict[str, str], fallback: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """From a suite run's junit.xml: (check id -> passed|failed|error|skipped|missing, check id -> message).

    `checks` maps a check ID to its test function; a parametrized check takes its worst case.
    """
    by_name: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome, message = {"failure": "failed"}.get(tag, tag), (el.get("message") or "") + (el.text or "")
        name = case.get("name", "").split("[")[0]
        if by_name.get(name, ("passed",))[0] == "passed":  # a teardown error is reported as a second case
            by_name[name] = (outcome, message)
    seen = {cid: by_name.get(fn, ("missing", fallback)) for cid, fn in checks.items()}
    return {c: o for c, (o, _) in seen.items()}, {c: m for c, (_, m) in seen.items()}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def layer_names(archive: Path) -> set[str]:
    """Every path in every layer of an OCI image archive built by testbed.images."""
    from testbed import images

    info = images.read_archive(archive)
    names: set[str] = set()
    with tarfile.open(archive) as tar:
        for desc in info["manifest"]["layers"]:
            blob = tar.extractfile(f"blobs/sha256/{desc['digest'].split(':', 1)[1]}")
            with tarfile.open(fileobj=blob, mode="r|gz") as layer:
                names |= {m.name for m in layer}
    return names


def plugin_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, files: dict[str, str],
                 kubeconfig: str) -> pytest.Pytester:
    """A small fake suite (FILES: path under the pytester dir -> text) run with the real options and reporting
    plugins, a kubeconfig file beside it, and this checkout on PYTHONPATH."""
    pytester.makeconftest('pytest_plugins = ["fixtures.options", "fixtures.reporting"]\n')
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (pytester.path / "kubeconfig").write_text(kubeconfig)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return pytester
