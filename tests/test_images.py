"""The testbed's image builder: valid OCI archives, cached, runnable, importable by ctr (no cluster needed)."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import layer_names
from testbed import images

EXPECTED = {
    images.PAUSE: {"Entrypoint": ["/pause"]},
    images.PROBE: {"Cmd": ["sleep", "3600"]},
    images.HELLO: {"Cmd": ["python3", "/app/main.py"], "WorkingDir": "/app"},
    images.COREDNS: {"Entrypoint": ["/coredns"]},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """All four images built into a private cache, with a stand-in coredns binary and a copy of the app."""
    root = tmp_path_factory.mktemp("images")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shutil.copy("/bin/true", bin_dir / "coredns")
    app = root / "app"
    shutil.copytree(images.HELLO_APP, app)
    mp = pytest.MonkeyPatch()
    mp.setattr(images, "IMAGES_DIR", root / "cache")
    mp.setattr(images, "HELLO_APP", app)
    try:
        yield images.build_images(bin_dir, echo=lambda _msg: None) | {"_bin_dir": bin_dir, "_app": app}
    finally:
        mp.undo()


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _blob(members: dict[str, bytes], digest: str) -> bytes:
    return members[f"blobs/sha256/{digest.split(':', 1)[1]}"]


@pytest.mark.parametrize("name", list(EXPECTED), ids=lambda n: n.rsplit("/", 1)[-1])
def test_archive_is_a_valid_oci_layout(built, name):
    members = _members(built[name])
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    assert len(index["manifests"]) == 1
    mdesc = index["manifests"][0]
    assert mdesc["annotations"][images.CONTAINERD_NAME] == name
    assert mdesc["annotations"][images.OCI_REF_NAME] == name
    assert mdesc["platform"] == {"architecture": "amd64", "os": "linux"}

    # Every descriptor's digest and size match the blob it points to.
    manifest_bytes = _blob(members, mdesc["digest"])
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == mdesc["digest"]
    assert len(manifest_bytes) == mdesc["size"]
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == images.MT_MANIFEST
    for desc in [manifest["config"], *manifest["layers"]]:
        blob = _blob(members, desc["digest"])
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == desc["digest"]
        assert len(blob) == desc["size"]

    config = json.loads(_blob(members, manifest["config"]["digest"]))
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(_blob(members, d["digest"]))).hexdigest()
                for d in manifest["layers"]]
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    for key, value in EXPECTED[name].items():
        assert config["config"][key] == value


def test_probe_and_hello_contents(built):
    probe = layer_names(built[images.PROBE])
    for path in ("bin/busybox", "bin/sh", "bin/wget", "bin/nc", "bin/nslookup", "usr/bin/python3.11",
                 "usr/lib/python3.11/os.py", "usr/lib64/ld-linux-x86-64.so.2", "tmp"):
        assert path in probe
    assert not any("/__pycache__/" in n or n.startswith("usr/lib/python3.11/test/") for n in probe)
    hello = layer_names(built[images.HELLO])
    assert {"app/main.py", f"{images.SITE_PACKAGES}/flask/__init__.py",
            f"{images.SITE_PACKAGES}/markupsafe/__init__.py"} <= hello
    assert not any(n.endswith(".so") for n in hello if n.startswith(images.SITE_PACKAGES))


def test_rebuild_only_on_change(built):
    before = {n: (p.stat().st_mtime_ns, images.read_archive(p)["digest"])
              for n, p in built.items() if not n.startswith("_")}
    again = images.build_images(built["_bin_dir"], echo=lambda _m: None)
    assert {n: (p.stat().st_mtime_ns, images.read_archive(p)["digest"]) for n, p in again.items()} == before

    main = built["_app"] / "main.py"
    main.write_text(main.read_text() + "\n# changed\n")
    changed = images.build_images(built["_bin_dir"], echo=lambda _m: None)
    for name, path in changed.items():
        digest_changed = images.read_archive(path)["digest"] != before[name][1]
        assert digest_changed == (name == images.HELLO), name


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_hello_image_serves_from_its_own_rootfs(built, tmp_path):
    rootfs = tmp_path / "rootfs"
    info = images.read_archive(built[images.HELLO])
    with tarfile.open(built[images.HELLO]) as tar:
        for desc in info["manifest"]["layers"]:
            blob = tar.extractfile(f"blobs/sha256/{desc['digest'].split(':', 1)[1]}")
            with tarfile.open(fileobj=blob, mode="r|gz") as layer:
                layer.extractall(rootfs, filter="tar")
    code = ("import sys; sys.path.insert(0, '/app'); import main; "
            "c = main.app.test_client(); r = c.get('/'); print(r.status_code, r.get_data(as_text=True))")
    proc = subprocess.run(["chroot", str(rootfs), "/bin/env", "NAME=Course", "/usr/bin/python3", "-c", code],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("200 Hello Course!\nHostname: ")
    script = "wget --help 2>&1 | head -1; nc --help 2>&1 | head -1"
    proc = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.stdout.count("BusyBox") == 2, proc.stdout + proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd") or not shutil.which("ctr"),
                    reason="needs root, containerd and ctr (apt-get install containerd)")
def test_ctr_imports_the_archives(built):
    tmp = Path(tempfile.mkdtemp(prefix="cp-ctd-", dir="/tmp"))  # short: unix socket paths are limited
    sock = tmp / "c.sock"
    (tmp / "config.toml").write_text(
        f'version = 2\nroot = "{tmp}/root"\nstate = "{tmp}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
        '[debug]\n  address = ""\n[metrics]\n  address = ""\n')
    log = (tmp / "log").open("w")
    proc = subprocess.Popen(["containerd", "--config", str(tmp / "config.toml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert sock.exists(), (tmp / "log").read_text()[-2000:]
        tars = {n: p for n, p in built.items() if not n.startswith("_")}
        images.import_images(str(sock), tars)
        listed = images._present(str(sock))
        assert {n: listed.get(n) for n in tars} == {n: images.read_archive(p)["digest"] for n, p in tars.items()}
        images.import_images(str(sock), tars)  # second time: everything is already there, nothing imported
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        subprocess.run(["umount", "-R", "-l", str(tmp)], capture_output=True, timeout=30, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
