#!/usr/bin/env python3
"""Build HAMi-core's libvgpu.so from pinned, hash-checked inputs, cached outside the checkout.

    python3 gpu-verify/hami_core.py build [--out DIR] [--source GIT] [--release]   # prints the library's path
    python3 gpu-verify/hami_core.py check LIB                                      # the hook symbols exported?

Nothing of HAMi-core lives in this repository: every input is fetched at build time and checked
against gpu-verify/hami-core.lock.json, then built under ~/.cache/clusterproof/hami-core
($CLUSTERPROOF_CACHE moves it):

- HAMi-core (Apache-2.0) at the pinned commit, whose tree id must match, fetched with git from
  $HAMI_CORE_GIT (a local clone or mirror, or a URL) or else from GitHub;
- cuda.h and friends from the `nvidia-cuda-runtime-cu12` wheel (pip download, sha256 checked);
- nvml.h from the `github.com/NVIDIA/go-nvml` Go module (go mod download, its h1: sum checked);
- link stubs for libcuda.so.1 / libnvidia-ml.so.1 compiled here (HAMi-core dlopens the real ones).

The build is HAMi-core's own build.sh: CMake with -DCMAKE_BUILD_TYPE=Debug and the hook options,
`make vgpu`, its test/ directory left out (it wants nvcc). A Release build compiles with
-fvisibility=hidden and exports no cu* hooks: nvidia-smi then shows the limit (NVML hooks work)
while CUDA allocations exceed it, so `check` refuses a library without them.

Needs git, cc, cmake, make, nm, python3 -m pip and go (for nvml.h); builds in seconds. A missing
input that cannot be fetched (offline, no go) raises InputUnavailable, naming what to provide.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "hami-core.lock.json"
RECIPE = 1          # bump when the build steps below change: a new cache key
_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)
CACHE_ROOT = Path(os.environ.get("CLUSTERPROOF_CACHE", _HOME / ".cache" / "clusterproof"))
CACHE = CACHE_ROOT / "hami-core"
STUB_C = "/* clusterproof link stub: HAMi-core dlopens the real driver library at run time */\n" \
         "void clusterproof_link_stub(void) {}\n"


class InputUnavailable(RuntimeError):
    """A build input could not be fetched (offline, a tool missing): nothing is wrong with the recipe."""


class BuildError(RuntimeError):
    """The inputs were there and the build or its checks failed."""


def lock() -> dict:
    return json.loads(LOCK.read_text())


def cache_key(release: bool = False) -> str:
    text = json.dumps(lock(), sort_keys=True) + f"recipe={RECIPE};release={release}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run(argv: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 600, unavailable: bool = False) -> subprocess.CompletedProcess:
    """Run a build step, appending its output to the log; failure raises (InputUnavailable for fetches)."""
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        fh.flush()
        try:
            p = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            err = InputUnavailable if unavailable else BuildError
            raise err(f"{argv[0]}: {exc}") from None
        fh.write(p.stdout)
    if p.returncode != 0:
        last = (p.stdout.strip().splitlines() or ["no output"])[-1]
        err = InputUnavailable if unavailable else BuildError
        raise err(f"`{' '.join(argv[:4])} ...` exited {p.returncode}: {last[:300]} (log {log})")
    return p


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise InputUnavailable(f"{tool} is not on PATH (needed to build HAMi-core's libvgpu.so)")
    return path


# ------------------------------------------------------------------ inputs

def fetch_source(dest: Path, log: Path, source: str | None = None) -> dict:
    """HAMi-core's tree at the pinned commit, extracted into dest; the tree id is checked."""
    pin = lock()["hami_core"]
    commit, tree = pin["commit"], pin["tree"]
    git = _need("git")
    bare = CACHE / "HAMi-core.git"
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    if not (bare / "HEAD").exists():
        bare.parent.mkdir(parents=True, exist_ok=True)
        _run([git, "init", "--quiet", "--bare", str(bare)], log, env=env)

    def have() -> bool:
        p = subprocess.run([git, "--git-dir", str(bare), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True, timeout=60, check=False, env=env)
        return p.returncode == 0

    tried = []
    candidates = [c for c in (source, os.environ.get("HAMI_CORE_GIT"), pin["repository"]) if c]
    for cand in dict.fromkeys(candidates):
        if have():
            break
        # By commit id first (GitHub serves any reachable commit); a mirror that refuses that gets all branches.
        error = ""
        for refspec in ([commit], ["+refs/heads/*:refs/remotes/src/*"]):
            try:
                _run([git, "--git-dir", str(bare), "fetch", "--quiet", "--no-tags", cand, *refspec], log, env=env,
                     timeout=300, unavailable=True)
            except InputUnavailable as exc:
                error = str(exc)
                continue
            if have():
                break
        if not have():
            tried.append(f"{cand}: {error or 'fetched, but the commit is not there'}")
    if not have():
        raise InputUnavailable(f"HAMi-core commit {commit} could not be fetched ("
                               + "; ".join(tried)[:600] + "): set HAMI_CORE_GIT to a clone or mirror of "
                               f"{pin['repository']} that has it")
    got = subprocess.run([git, "--git-dir", str(bare), "rev-parse", f"{commit}^{{tree}}"], capture_output=True,
                         text=True, timeout=60, check=False).stdout.strip()
    if got != tree:
        raise BuildError(f"HAMi-core commit {commit} has tree {got}, the lock file pins {tree}")
    archive = subprocess.run([git, "--git-dir", str(bare), "archive", "--format=tar", commit], capture_output=True,
                             timeout=120, check=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return {"commit": commit, "tree": tree}


def drop_tests(src: Path) -> None:
    """HAMi-core's test/ needs nvcc (find_package(CUDA)); the library does not."""
    cml = src / "CMakeLists.txt"
    text = cml.read_text()
    line = "add_subdirectory(test)"
    if text.count(line) != 1:
        raise BuildError(f"{cml}: expected one `{line}` to leave out, found {text.count(line)}")
    cml.write_text(text.replace(line, "# add_subdirectory(test)  (left out by clusterproof: it needs nvcc)"))


def cuda_headers(include: Path, log: Path) -> dict:
    """cuda.h and friends from the pinned nvidia-cuda-runtime-cu12 wheel."""
    pin = lock()["cuda_h"]
    wheel = CACHE / "downloads" / pin["wheel"]
    if not wheel.exists() or _sha256(wheel) != pin["wheel_sha256"]:
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                  "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                  "--python-version", "3.12", "-d", tmp, pin["requirement"]], log, timeout=600, unavailable=True)
            got = Path(tmp) / pin["wheel"]
            if not got.exists():
                raise InputUnavailable(f"pip download {pin['requirement']} gave {sorted(os.listdir(tmp))}, "
                                       f"not {pin['wheel']}")
            digest = _sha256(got)
            if digest != pin["wheel_sha256"]:
                raise BuildError(f"{pin['wheel']} has sha256 {digest}, the lock file pins {pin['wheel_sha256']}")
            got.replace(wheel)
    prefix = pin["include"]
    include.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                target = include / name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
    digest = _sha256(include / "cuda.h")
    if digest != pin["cuda_h_sha256"]:
        raise BuildError(f"cuda.h from {pin['wheel']} has sha256 {digest}, the lock file pins {pin['cuda_h_sha256']}")
    return {"wheel": pin["wheel"], "wheel_sha256": pin["wheel_sha256"]}


def go_env() -> dict[str, str]:
    """As testbed/build.py: the module cache under the project's cache, modules only, this toolchain."""
    return {**os.environ, "GOMODCACHE": str(CACHE_ROOT / "go" / "mod"), "GOCACHE": str(CACHE_ROOT / "go" / "build"),
            "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}


def nvml_header(include: Path, log: Path) -> dict:
    """nvml.h from the pinned github.com/NVIDIA/go-nvml module (its go.sum hash checked)."""
    pin = lock()["nvml_h"]
    go = _need("go")
    spec = f"{pin['module']}@{pin['version']}"
    p = _run([go, "mod", "download", "-json", spec], log, cwd=Path("/"), env=go_env(), timeout=600,
             unavailable=True)
    try:
        info = json.loads(p.stdout)
    except json.JSONDecodeError:
        raise InputUnavailable(f"go mod download {spec} answered no JSON: {p.stdout[-200:]}") from None
    if info.get("Error") or "Dir" not in info:
        raise InputUnavailable(f"go mod download {spec}: {info.get('Error') or 'no Dir'}")
    if info.get("Sum") != pin["sum"]:
        raise BuildError(f"{spec} has sum {info.get('Sum')}, the lock file pins {pin['sum']}")
    header = Path(info["Dir"]) / pin["path"]
    digest = _sha256(header)
    if digest != pin["sha256"]:
        raise BuildError(f"{spec} {pin['path']} has sha256 {digest}, the lock file pins {pin['sha256']}")
    include.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(header, include / "nvml.h")
    return {"module": spec, "sum": pin["sum"]}


def link_stubs(out: Path, log: Path) -> None:
    """Empty libcuda.so / libnvidia-ml.so with the real sonames, only for the link step."""
    cc = shutil.which("cc") or _need("gcc")
    out.mkdir(parents=True, exist_ok=True)
    (out / "stub.c").write_text(STUB_C)
    for name in ("libcuda", "libnvidia-ml"):
        _run([cc, "-shared", "-fPIC", f"-Wl,-soname,{name}.so.1", "-o", str(out / f"{name}.so"), str(out / "stub.c")],
             log)


# ------------------------------------------------------------------ build and check

def exports(lib: Path) -> set[str]:
    """Names of the functions the library exports (nm -D --defined-only)."""
    nm = _need("nm")
    p = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, timeout=60,
                       check=False)
    if p.returncode != 0:
        raise BuildError(f"nm -D {lib}: {p.stderr.strip()[:200]}")
    return {parts[2] for parts in (line.split() for line in p.stdout.splitlines())
            if len(parts) == 3 and parts[1] in ("T", "W", "i")}


def check(lib: Path) -> dict:
    """The hooks HAMi-core needs exported, else BuildError naming the missing ones (the Release trap)."""
    names = exports(lib)
    missing = [s for s in lock()["required_exports"] if s not in names]
    cu = sorted(n for n in names if n.startswith("cu"))
    nvml = sorted(n for n in names if n.startswith("nvml"))
    if missing:
        hint = (" (no cu* hooks at all: a Release build, -fvisibility=hidden; nvidia-smi would show the limit while "
                "CUDA allocations exceed it; build with -DCMAKE_BUILD_TYPE=Debug as HAMi-core's build.sh does)"
                if not cu else "")
        raise BuildError(f"{lib} does not export {', '.join(missing)}{hint}")
    return {"cu_hooks": len(cu), "nvml_hooks": len(nvml), "required": lock()["required_exports"]}


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return "?"
    return (out.strip().splitlines() or ["?"])[0]


@contextlib.contextmanager
def _locked():
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(source: str | None = None, release: bool = False, echo=print) -> Path:
    """libvgpu.so built from the pinned inputs (or the cached build of them); returns its path."""
    key = cache_key(release)
    final = CACHE / f"build-{key}"
    lib = final / "libvgpu.so"
    with _locked():
        if lib.exists() and (final / "build.json").exists():
            return lib
        work = CACHE / f"work-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log = work / "build.log"
        echo(f"building HAMi-core libvgpu.so in {work} (log {log})")
        src_info = fetch_source(work / "src", log, source)
        drop_tests(work / "src")
        cuda_info = cuda_headers(work / "cuda" / "include", log)
        nvml_info = nvml_header(work / "cuda" / "include", log)
        link_stubs(work / "stubs", log)
        cmake, make = _need("cmake"), _need("make")
        options = list(lock()["cmake_options"])
        if release:
            options = [o if not o.startswith("-DCMAKE_BUILD_TYPE=") else "-DCMAKE_BUILD_TYPE=Release" for o in options]
        env = {**os.environ, "CUDA_HOME": str(work / "cuda"), "GIT_CEILING_DIRECTORIES": str(work),
               "SOURCE_DATE_EPOCH": "0"}
        _run([cmake, "-S", str(work / "src"), "-B", str(work / "build"), *options,
              f"-DCMAKE_MAKE_PROGRAM={make}", f"-DCMAKE_SHARED_LINKER_FLAGS=-L{work / 'stubs'}",
              f"-DCMAKE_C_FLAGS=-ffile-prefix-map={work}=/hami-core"], log, env=env)
        _run([cmake, "--build", str(work / "build"), "--target", "vgpu", "--", f"-j{os.cpu_count() or 2}"], log,
             env=env, timeout=1200)
        built = work / "build" / "libvgpu.so"
        if not built.exists():
            raise BuildError(f"the build finished without {built} (log {log})")
        hooks: dict | str
        try:
            hooks = check(built)
        except BuildError as exc:
            if not release:
                raise
            hooks = str(exc)
        meta = {"hami_core": src_info, "cuda_h": cuda_info, "nvml_h": nvml_info, "cmake_options": options,
                "recipe": RECIPE, "cache_key": key, "sha256": _sha256(built), "exports": hooks,
                "cc": _tool_version([shutil.which("cc") or "gcc", "--version"]),
                "cmake": _tool_version([cmake, "--version"])}
        final_tmp = CACHE / f"build-{key}.tmp"
        shutil.rmtree(final_tmp, ignore_errors=True)
        final_tmp.mkdir()
        shutil.copyfile(built, final_tmp / "libvgpu.so")
        shutil.copyfile(log, final_tmp / "build.log")
        (final_tmp / "build.json").write_text(json.dumps(meta, indent=1) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        final_tmp.rename(final)
        shutil.rmtree(work, ignore_errors=True)
        echo(f"built {lib} (sha256 {meta['sha256']})")
        return lib


def provenance(lib: Path) -> dict:
    """What a library is: its build.json beside it (when built here) and its own sha256."""
    meta_path = lib.parent / "build.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["path"] = str(lib)
    meta["sha256_now"] = _sha256(lib)
    return meta


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="hami_core.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="Build (or reuse the cached) libvgpu.so and print its path")
    b.add_argument("--out", type=Path, help="Also copy libvgpu.so and build.json into this folder")
    b.add_argument("--source", help="A git clone, mirror or URL of HAMi-core holding the pinned commit")
    b.add_argument("--release", action="store_true", help="Build type Release (shows the hidden-hooks trap)")
    c = sub.add_parser("check", help="Check that a libvgpu.so exports HAMi-core's hooks")
    c.add_argument("lib", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check":
            print(json.dumps(check(args.lib)))
            return 0
        lib = build(args.source, args.release, echo=lambda m: print(m, file=sys.stderr))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for name in ("libvgpu.so", "build.json"):
                shutil.copyfile(lib.parent / name, args.out / name)
            lib = args.out / "libvgpu.so"
        print(lib)
        return 0
    except InputUnavailable as exc:
        print(f"hami_core.py: a build input is unavailable: {exc}", file=sys.stderr)
        return 3
    except BuildError as exc:
        print(f"hami_core.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
