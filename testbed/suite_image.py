"""The suite image: clusterproof itself, for nightly runs inside the cluster (manifests/nightly).

Built like the testbed's other images (testbed/images.py: layers from this machine, no registry):
Debian's python3.11 and busybox (the probe image's base layer), byte code for its stdlib, a
site-packages layer with the suite's requirements (the first block of requirements.txt, `pip
install --target` into a staging folder cached by those requirements), and the repository's
clusterproof/, fixtures/, suites/, manifests/, conftest.py and pytest.ini at /opt/clusterproof.
It runs as uid 10001 with HOME=/tmp, so a read-only root file system and the `restricted` Pod
Security level fit it.

The whole image is keyed by its inputs' content (the files, the requirements, the interpreter and
this builder): when nothing changed, `build` returns the cached archive after hashing those files,
without assembling any layer, so `python -m testbed up` stays fast.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from clusterproof.nightly import SUITE_IMAGE

from . import images
from .errors import TestbedError
from .images import IMAGES_DIR, PATH_ENV, PYTHON, STDLIB, STDLIB_SKIP_DIRS, Entry, ImageSpec, Layer
from .paths import CACHE

SUITE = SUITE_IMAGE
ROOT = Path(__file__).resolve().parent.parent
APP_DIR = "opt/clusterproof"
SUITE_DIRS = ("clusterproof", "fixtures", "suites", "manifests")
SUITE_FILES = ("conftest.py", "pytest.ini", "requirements.txt")
SITE = CACHE / "suite-site"
PIP_CACHE = CACHE / "pip"
UID = 10001
ENV = [PATH_ENV, "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "LANG=C.UTF-8", "HOME=/tmp",
       f"PYTHONPATH=/{APP_DIR}"]
# Byte code that is valid whatever the files' mtimes (layers store mtime 0): `unchecked-hash`.
_COMPILE = r"""
import json, os, py_compile, sys
src, out, skip = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
for root, dirs, files in os.walk(src):
    dirs[:] = [d for d in dirs if d not in skip]
    for name in files:
        if name.endswith(".py"):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            cfile = os.path.join(out, os.path.dirname(rel), "__pycache__", name[:-3] + ".cpython-311.pyc")
            py_compile.compile(path, cfile=cfile, dfile=path, doraise=False, quiet=2,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def suite_requirements(path: Path | None = None) -> list[str]:
    """The requirements of the suite: requirements.txt up to its second comment block (the testbed's and tests')."""
    reqs: list[str] = []
    for line in (path or ROOT / "requirements.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if line.strip().startswith("#") and reqs:
            break
        if text:
            reqs.append(text)
    return reqs


def app_files() -> dict[str, Path]:
    """Image path -> source for the repository files the image holds (no byte code, no hidden files)."""
    out: dict[str, Path] = {}
    for d in SUITE_DIRS:
        for root, dirs, files in os.walk(ROOT / d):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
            for name in sorted(files):
                path = Path(root) / name
                if name.startswith(".") or path.suffix == ".pyc" or not path.is_file():
                    continue
                out[f"{APP_DIR}/{path.relative_to(ROOT)}"] = path
    for name in SUITE_FILES:
        out[f"{APP_DIR}/{name}"] = ROOT / name
    return out


def content_key() -> str:
    """A digest of everything the image is made from; a new one means the image must be rebuilt."""
    h = hashlib.sha256()
    for part in (Path(__file__), Path(images.__file__)):
        h.update(part.read_bytes())
    h.update(_python_id().encode())
    h.update("\n".join(suite_requirements()).encode())
    for dest, src in sorted(app_files().items()):
        h.update(f"\0{dest}\0{os.access(src, os.X_OK)}\0".encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:32]


def _python_id() -> str:
    st = PYTHON.stat() if PYTHON.exists() else None
    return f"{PYTHON}:{st.st_size if st else 0}:{st.st_mtime_ns if st else 0}"


def _archive() -> Path:
    return IMAGES_DIR / images._archive_name(SUITE)


def build(echo=print) -> Path:
    """The suite image's OCI archive, rebuilt only when its content key changed."""
    key = content_key()
    out = _archive()
    stamp = out.with_name(out.name + ".key")
    if out.exists() and stamp.exists() and stamp.read_text().strip() == key:
        return out
    echo(f"building the suite image {SUITE}")
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    base = images._base_layer()
    spec = ImageSpec(SUITE, [base, _stdlib_pyc_layer(echo), _site_layer(base, echo), _app_layer()],
                     cmd=["python3", "-m", "clusterproof.nightly", "run"], env=ENV, workdir=f"/{APP_DIR}",
                     user=f"{UID}:{UID}",
                     labels={"org.opencontainers.image.title": "clusterproof suite",
                             "org.opencontainers.image.version": SUITE.rsplit(":", 1)[1]})
    path = images.assemble(spec)
    stamp.write_text(key + "\n")
    return path


# ---------------------------------------------------------------------------- layers

def _stdlib_pyc_layer(echo) -> Layer:
    """Byte code of Debian's python3.11 stdlib (the base layer ships sources only)."""
    key = hashlib.sha256(f"{_python_id()}:{sorted(STDLIB_SKIP_DIRS)}:{_COMPILE}".encode()).hexdigest()[:16]
    staging = IMAGES_DIR / f"stdlib-pyc-{key}"
    if not staging.exists():
        echo("compiling the python3.11 stdlib for the suite image")
        tmp = Path(tempfile.mkdtemp(prefix="stdlib-pyc-", dir=IMAGES_DIR))
        images._run([str(PYTHON), "-c", _COMPILE, str(STDLIB), str(tmp), json.dumps(sorted(STDLIB_SKIP_DIRS))],
                    "compiling the stdlib", 900)
        os.replace(tmp, staging)
    layer = Layer("python3.11 stdlib byte code")
    for path in sorted(staging.rglob("*.pyc")):
        layer.file(f"usr/lib/python3.11/{path.relative_to(staging)}", path, 0o644)
    return layer


def _site_dir(echo) -> Path:
    """`pip install --target` of the suite's requirements, compiled, cached by requirements and interpreter."""
    reqs = suite_requirements()
    key = hashlib.sha256(f"{_python_id()}:{sys.version}:{reqs}".encode()).hexdigest()[:16]
    site = SITE / key
    if (site / ".complete").exists():
        return site
    echo(f"pip-installing the suite's requirements for its image ({', '.join(reqs)})")
    SITE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="site-", dir=SITE))
    try:
        images._run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     "--no-compile", "--no-warn-script-location", "--target", str(tmp),
                     "--cache-dir", str(PIP_CACHE), *reqs], "pip install (suite image)", 1200)
        images._run([str(PYTHON), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                     "-s", str(tmp), "-p", f"/{images.SITE_PACKAGES}", str(tmp)], "compiling site-packages", 900)
        (tmp / ".complete").write_text("\n".join(reqs) + "\n")
        shutil.rmtree(site, ignore_errors=True)
        os.replace(tmp, site)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in SITE.iterdir():  # the staging of requirements that changed since: ~200 MB each
        if old != site and not old.name.startswith("site-"):
            shutil.rmtree(old, ignore_errors=True)
    return site


def _site_layer(base: Layer, echo) -> Layer:
    site = _site_dir(echo)
    layer = Layer("suite requirements")
    shared: list[Path] = []
    for root, dirs, files in os.walk(site):
        rel_root = Path(root).relative_to(site)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d != "bin"]  # console scripts name pip's interpreter: not used
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if rel_root == Path(".") and name.startswith("."):
                continue
            if path.is_symlink() or not path.is_file():
                continue
            if ".so" in path.suffixes or path.suffix == ".so":
                shared.append(path)
            layer.file(f"{images.SITE_PACKAGES}/{rel_root / name}", path, 0o755 if ".so" in path.name else 0o644)
    # System libraries the extension modules need that the base layer lacks (wheels bundle most of theirs).
    for lib in sorted(_needed_libs(shared, site)):
        image_path = "usr" + lib if lib.startswith(("/lib/", "/lib64/")) else lib.lstrip("/")
        if image_path not in base.entries:
            layer.file(image_path, Path(lib).resolve(), 0o755)
    return layer


def _needed_libs(paths: list[Path], site: Path) -> set[str]:
    libs: set[str] = set()
    for path in paths:
        r = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=60, check=False)
        for line in r.stdout.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m and not m.group(1).startswith(str(site)):
                libs.add(m.group(1))
        if "not found" in r.stdout:
            missing = [ln.split()[0] for ln in r.stdout.splitlines() if "not found" in ln]
            raise TestbedError(f"{path.name} needs {', '.join(missing)}, which this machine lacks; "
                               "install it and run up again", code=4)
    return libs


def _app_layer() -> Layer:
    layer = Layer("clusterproof")
    # the image's user, for code that asks who it runs as (getpass, paramiko); HOME is /tmp
    layer.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                             b"clusterproof:x:10001:10001:clusterproof:/tmp:/bin/sh\n")
    layer.data("etc/group", b"root:x:0:\nnogroup:x:65534:\nclusterproof:x:10001:\n")
    for dest, src in app_files().items():
        layer.add(Entry(dest, "file", 0o755 if os.access(src, os.X_OK) else 0o644, source=src))
    return layer
