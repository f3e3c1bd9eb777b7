"""The suite image (testbed/suite_image.py): what it holds, that it is keyed by content, that it runs as uid 10001.

Built into the real cache (~/.cache/clusterproof/images): `python -m testbed up` has built it already, so
these tests only read it (a cold build is about half a minute: pip install of the suite's requirements).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from clusterproof import nightly
from conftest import layer_names
from testbed import images, suite_image


@pytest.fixture(scope="module")
def archive() -> Path:
    """The suite image's OCI archive (built when the cache lacks it)."""
    return suite_image.build(echo=lambda _m: None)


def test_suite_requirements_are_the_first_block_of_requirements_txt() -> None:
    reqs = suite_image.suite_requirements()
    names = {r.split("<")[0].split(">")[0].split("=")[0].lower() for r in reqs}
    assert {"pytest", "pytest-xdist", "pytest-html", "kubernetes"} <= names
    assert not names & {"ruff", "mypy", "grpcio", "grpcio-tools", "cryptography", "prometheus_client"}


def test_image_name_config_and_contents(archive: Path) -> None:
    info = images.read_archive(archive)
    assert info["name"] == suite_image.SUITE == nightly.SUITE_IMAGE
    cfg = info["config"]["config"]
    assert cfg["User"] == "10001:10001" and cfg["WorkingDir"] == "/opt/clusterproof"
    assert "HOME=/tmp" in cfg["Env"] and "PYTHONDONTWRITEBYTECODE=1" in cfg["Env"]
    names = layer_names(archive)
    site = images.SITE_PACKAGES
    for path in ("opt/clusterproof/clusterproof/nightly.py", "opt/clusterproof/conftest.py",
                 "opt/clusterproof/pytest.ini", "opt/clusterproof/suites/host/test_host_kernel.py",
                 "opt/clusterproof/fixtures/reporting.py", "opt/clusterproof/manifests/nightly/kustomization.yaml",
                 "opt/clusterproof/manifests/probe/daemonset.yaml", f"{site}/kubernetes/__init__.py",
                 f"{site}/kubernetes/__pycache__/__init__.cpython-311.pyc", f"{site}/_pytest/__init__.py",
                 f"{site}/xdist/__init__.py", f"{site}/pytest_html/__init__.py", f"{site}/testinfra/__init__.py",
                 "usr/lib/python3.11/__pycache__/tempfile.cpython-311.pyc", "usr/bin/python3.11", "bin/tar",
                 "bin/base64", "etc/passwd"):
        assert path in names, path
    assert not any(n.startswith(("opt/clusterproof/testbed", "opt/clusterproof/tests", f"{site}/bin/"))
                   or "/__pycache__/" in n and n.startswith("opt/") for n in names)


def test_content_key_follows_the_suites_files_only(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "repo"
    for d in suite_image.SUITE_DIRS:
        (root / d).mkdir(parents=True)
        (root / d / "a.py").write_text(f"# {d}\n")
    for f in suite_image.SUITE_FILES:
        shutil.copy(suite_image.ROOT / f, root / f)
    monkeypatch.setattr(suite_image, "ROOT", root)
    key = suite_image.content_key()
    (root / "clusterproof" / "__pycache__").mkdir()
    (root / "clusterproof" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    (root / "tests").mkdir()
    (root / "tests" / "t.py").write_text("x")
    assert suite_image.content_key() == key
    (root / "suites" / "a.py").write_text("# changed\n")
    assert suite_image.content_key() != key


def test_a_second_build_reuses_the_archive(archive: Path) -> None:
    before = (archive.stat().st_mtime_ns, images.read_archive(archive)["digest"])
    again = suite_image.build(echo=lambda _m: None)
    assert (again.stat().st_mtime_ns, images.read_archive(again)["digest"]) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_image_runs_the_nightly_module_as_uid_10001(archive: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    info = images.read_archive(archive)
    with tarfile.open(archive) as tar:
        for desc in info["manifest"]["layers"]:
            blob = tar.extractfile(f"blobs/sha256/{desc['digest'].split(':', 1)[1]}")
            with tarfile.open(fileobj=blob, mode="r|gz") as layer:
                layer.extractall(rootfs, filter="tar")
    doc = {"run": "r", "started": "2026-11-28T02:30:00+00:00", "finished": "2026-11-28T02:31:00+00:00",
           "verdict": "PASS", "checks": []}
    (rootfs / "tmp" / "summary.json").write_text(json.dumps(doc))
    env = ["/bin/env", "-i", *info["config"]["config"]["Env"]]
    code = ("import os, kubernetes.client, pytest, xdist, pytest_html, testinfra, paramiko, yaml; "
            "print(os.getuid(), os.environ['HOME'])")
    r = subprocess.run(["chroot", "--userspec=10001:10001", str(rootfs), *env, "python3", "-c", code],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["10001", "/tmp"]
    r = subprocess.run(["chroot", "--userspec=10001:10001", str(rootfs), *env, "sh", "-c",
                        "cd /opt/clusterproof && python3 -m clusterproof.nightly metrics /tmp/summary.json"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'clusterproof_run_verdict{verdict="PASS"} 1' in r.stdout
