"""gpu-verify/hami_core.py: HAMi-core's libvgpu.so built from its pinned, hash-checked inputs, with the hooks exported.

The build (seconds; cached in ~/.cache/clusterproof/hami-core) needs the inputs the lock file pins: HAMi-core's
commit (GitHub, or $HAMI_CORE_GIT for a clone or mirror), the nvidia-cuda-runtime-cu12 wheel (pip) and the go-nvml
module (go). A test skips, naming what to provide, only when one of them cannot be fetched here.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from importlib import util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = util.spec_from_file_location("hami_core", ROOT / "gpu-verify" / "hami_core.py")
    assert spec and spec.loader
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hc = _load()


def _build(**kw) -> Path:
    try:
        return hc.build(echo=lambda _m: None, **kw)
    except hc.InputUnavailable as exc:
        pytest.skip(f"a HAMi-core build input cannot be fetched here: {exc}")


@pytest.fixture(scope="module")
def libvgpu() -> Path:
    """libvgpu.so built as HAMi-core's build.sh does (Debug), or the cached build of the same inputs."""
    return _build()


def test_lock_pins_exact_inputs():
    lock = hc.lock()
    assert len(lock["hami_core"]["commit"]) == 40 and len(lock["hami_core"]["tree"]) == 40
    assert len(lock["cuda_h"]["wheel_sha256"]) == 64 and lock["cuda_h"]["requirement"].count("==") == 1
    assert lock["nvml_h"]["sum"].startswith("h1:") and lock["nvml_h"]["version"].startswith("v")
    assert "-DCMAKE_BUILD_TYPE=Debug" in lock["cmake_options"]


def test_nothing_of_hami_core_is_in_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                             check=True).stdout.split()
    assert not [f for f in tracked if f.endswith(("libvgpu.c", "multiprocess_memory_limit.c", "libvgpu.so"))]
    assert not str(hc.CACHE).startswith(str(ROOT))


def test_debug_build_exports_the_cuda_and_nvml_hooks(libvgpu):
    nm = shutil.which("nm")
    assert nm, "binutils' nm is needed to read the exports"
    out = subprocess.run([nm, "-D", "--defined-only", str(libvgpu)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    for sym in ("cuMemAlloc_v2", "cuMemFree_v2", "cuMemGetInfo_v2", "cuInit", "nvmlDeviceGetMemoryInfo", "dlsym"):
        assert sym in exported, sym
    info = hc.check(libvgpu)
    assert info["cu_hooks"] > 100 and info["nvml_hooks"] > 100
    meta = json.loads((libvgpu.parent / "build.json").read_text())
    assert meta["hami_core"]["commit"] == hc.lock()["hami_core"]["commit"]
    assert meta["sha256"] == hc.provenance(libvgpu)["sha256_now"]
    assert "-DCMAKE_BUILD_TYPE=Debug" in meta["cmake_options"]


def test_release_build_hides_the_cuda_hooks_and_check_refuses_it():
    """The trap on the H200: a Release build limits nvidia-smi but not CUDA; check() names it."""
    lib = _build(release=True)
    with pytest.raises(hc.BuildError, match="no cu\\* hooks at all: a Release build"):
        hc.check(lib)


def test_a_source_without_the_pinned_commit_is_refused(libvgpu, tmp_path, monkeypatch):
    """The build names the exact commit: a tree id that does not match the lock fails, whatever the source."""
    real = hc.CACHE / "HAMi-core.git"
    monkeypatch.setattr(hc, "CACHE", tmp_path / "cache")
    pinned = hc.lock()
    bad = json.loads(json.dumps(pinned))
    bad["hami_core"]["tree"] = "0" * 40
    monkeypatch.setattr(hc, "lock", lambda: bad)
    with pytest.raises(hc.BuildError, match="has tree 8c2b30b2"):
        hc.fetch_source(tmp_path / "src", tmp_path / "log", source=str(real))
    missing = json.loads(json.dumps(pinned))
    missing["hami_core"]["commit"] = "1" * 40
    monkeypatch.setattr(hc, "lock", lambda: missing)
    monkeypatch.delenv("HAMI_CORE_GIT", raising=False)
    missing["hami_core"]["repository"] = str(real)
    with pytest.raises(hc.InputUnavailable, match="could not be fetched"):
        hc.fetch_source(tmp_path / "src2", tmp_path / "log", source=str(real))
