"""Build the testbed's container images as OCI archives, without a registry or a daemon.

No registry can be reached, so every image the cluster runs (the sandbox "pause" image,
CoreDNS, the probe image and the course's hello-python app) is assembled here from files
already on the machine: deterministic tar layers (owner 0, mtime 0, sorted), gzip with a
zero timestamp, an OCI config, manifest and index. `ctr images import` names each image
from the index annotation `io.containerd.image.name`.

Outputs are cached under CACHE/images: a layer is compressed only when its uncompressed
digest (the diff_id) is new, and an archive is rewritten only when its manifest changes.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TestbedError
from .paths import CACHE, go_env

IMAGES_DIR = CACHE / "images"
ROOT = Path(__file__).resolve().parent.parent
PAUSE_SRC = Path(__file__).resolve().parent / "pause" / "main.go"
HELLO_APP = ROOT / "apps" / "hello-python"

PAUSE = "localhost/clusterproof/pause:1"
PROBE = "localhost/clusterproof/probe:1"
HELLO = "localhost/clusterproof/hello-python:1"
COREDNS = "localhost/clusterproof/coredns:1"
ALL_IMAGES = (PAUSE, PROBE, HELLO, COREDNS)

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
PLATFORM = {"architecture": "amd64", "os": "linux"}
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
# Left out of the probe image's stdlib: tests, GUI and installer parts, byte-code caches,
# the static libpython, and extension modules nobody probes with (they pull big libraries).
STDLIB_SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "__pycache__",
                    "config-3.11-x86_64-linux-gnu", "site-packages", "dist-packages", "lib2to3", "pydoc_data"}
DYNLOAD_SKIP = re.compile(r"^(_test|_xx|xxlimited|_ctypes_test|_curses|readline|_dbm|nis|ossaudiodev|_tkinter)")
FLASK_DISTS = ("flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "blinker")
SITE_PACKAGES = "usr/lib/python3/dist-packages"
BUSYBOX = Path("/bin/busybox")


# ---------------------------------------------------------------------------- layers

@dataclass
class Entry:
    """One path in a layer: a directory, a file (from disk or bytes) or a symlink."""

    path: str  # inside the image, without a leading slash
    kind: str  # "dir" | "file" | "link"
    mode: int = 0o755
    source: Path | None = None
    data: bytes | None = None
    target: str = ""


@dataclass
class Layer:
    """A set of entries; parent directories are added automatically."""

    name: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        entry.path = entry.path.strip("/")
        parts = entry.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            self.entries.setdefault(parent, Entry(parent, "dir", 0o755))
        self.entries[entry.path] = entry

    def dir(self, path: str, mode: int = 0o755) -> None:
        self.add(Entry(path, "dir", mode))

    def file(self, path: str, source: Path, mode: int | None = None) -> None:
        if mode is None:
            mode = 0o755 if os.access(source, os.X_OK) else 0o644
        self.add(Entry(path, "file", mode, source=source))

    def data(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.add(Entry(path, "file", mode, data=data))

    def link(self, path: str, target: str) -> None:
        self.add(Entry(path, "link", 0o777, target=target))

    def libraries(self, binaries: list[Path]) -> None:
        """The shared libraries BINARIES load (ldd), at their merged-/usr paths (lib and lib64 point into usr)."""
        for lib in _ldd(binaries):
            self.file("/usr" + lib if lib.startswith(("/lib/", "/lib64/")) else lib, Path(lib).resolve(), 0o755)

    def tree(self, dest: str, src: Path, skip_dirs: Collection[str] = frozenset(), skip_file=None) -> None:
        """Copy a directory tree, dereferencing symlinks (dangling ones are left out)."""
        for root, dirs, files in os.walk(src, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
            rel = Path(root).relative_to(src)
            for name in sorted(files) + [d for d in dirs if (Path(root) / d).is_symlink()]:
                path = Path(root) / name
                if skip_file and skip_file(path):
                    continue
                real = path.resolve()
                if not real.is_file():
                    continue
                self.file(f"{dest}/{rel / name}", real, 0o644 if real.suffix != ".so" else 0o755)


class _Hasher(io.RawIOBase):
    """A write-only file that hashes what passes through and forwards it."""

    def __init__(self, out):
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.out.write(b)
        return len(b)


def _tarinfo(name: str, kind: str, mode: int, size: int = 0, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, 0, "", ""
    if kind == "dir":
        info.type = tarfile.DIRTYPE
    elif kind == "link":
        info.type, info.linkname = tarfile.SYMTYPE, target
    else:
        info.size = size
    return info


def _write_layer_tar(layer: Layer, out) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layer.entries):
            e = layer.entries[path]
            if e.kind == "file" and e.data is not None:
                tar.addfile(_tarinfo(path, "file", e.mode, len(e.data)), io.BytesIO(e.data))
            elif e.kind == "file":
                assert e.source is not None  # Layer.file always names its source
                with open(e.source, "rb") as fh:
                    tar.addfile(_tarinfo(path, "file", e.mode, os.fstat(fh.fileno()).st_size), fh)
            else:
                tar.addfile(_tarinfo(path, e.kind, e.mode, target=e.target))


def _blob_path(digest: str) -> Path:
    return IMAGES_DIR / "blobs" / "sha256" / digest.split(":", 1)[1]


def _put_blob(data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob_path(digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return {"digest": digest, "size": len(data)}


def _build_layer(layer: Layer) -> tuple[str, dict]:
    """Return (diff_id, gzip blob descriptor); compresses only a layer not seen before."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    (IMAGES_DIR / "layers").mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=IMAGES_DIR, prefix="layer-", suffix=".tar") as raw:
        hasher = _Hasher(raw)
        _write_layer_tar(layer, hasher)
        diff_id = "sha256:" + hasher.sha.hexdigest()
        known = IMAGES_DIR / "layers" / (diff_id.split(":", 1)[1] + ".json")
        if known.exists():
            desc = json.loads(known.read_text())
            if _blob_path(desc["digest"]).exists():
                return diff_id, desc
        raw.flush()
        raw.seek(0)
        with tempfile.NamedTemporaryFile(dir=IMAGES_DIR, prefix="layer-", suffix=".tgz", delete=False) as gz_out:
            gz_hash = _Hasher(gz_out)
            with gzip.GzipFile(filename="", mode="wb", fileobj=gz_hash, mtime=0, compresslevel=6) as gz:
                shutil.copyfileobj(raw, gz, 1 << 20)
        desc = {"digest": "sha256:" + gz_hash.sha.hexdigest(), "size": gz_hash.size}
        dest = _blob_path(desc["digest"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(gz_out.name, dest)
        known.write_text(json.dumps(desc))
        return diff_id, desc


# ---------------------------------------------------------------------------- images

@dataclass
class ImageSpec:
    """What one image is made of: layers plus the runtime config."""

    name: str
    layers: list[Layer]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=lambda: [PATH_ENV])
    workdir: str = "/"
    ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # "uid:gid" the image runs as (root when None)


def _archive_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.removeprefix("localhost/")) + ".oci.tar"


def assemble(spec: ImageSpec) -> Path:
    """Write (or reuse) the OCI archive of one image; returns its path."""
    diff_ids, layer_descs = [], []
    for layer in spec.layers:
        diff_id, desc = _build_layer(layer)
        diff_ids.append(diff_id)
        layer_descs.append({"mediaType": MT_LAYER, **desc})
    cfg: dict = {"Env": spec.env, "WorkingDir": spec.workdir, "Labels": spec.labels or None}
    if spec.entrypoint:
        cfg["Entrypoint"] = spec.entrypoint
    if spec.cmd:
        cfg["Cmd"] = spec.cmd
    if spec.user:
        cfg["User"] = spec.user
    if spec.ports:
        cfg["ExposedPorts"] = {p: {} for p in spec.ports}
    config = {
        "created": "1970-01-01T00:00:00Z", **PLATFORM,
        "config": {k: v for k, v in cfg.items() if v is not None},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"clusterproof testbed: {layer.name}"}
                    for layer in spec.layers],
    }
    config_desc = {"mediaType": MT_CONFIG, **_put_blob(_canon(config))}
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc, "layers": layer_descs}
    manifest_desc = {"mediaType": MT_MANIFEST, **_put_blob(_canon(manifest)), "platform": PLATFORM,
                     "annotations": {CONTAINERD_NAME: spec.name, OCI_REF_NAME: spec.name}}
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [manifest_desc]}

    out = IMAGES_DIR / _archive_name(spec.name)
    stamp = out.with_name(out.name + ".digest")
    if out.exists() and stamp.exists() and stamp.read_text().strip() == manifest_desc["digest"]:
        return out
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        def add_bytes(name: str, data: bytes) -> None:
            tar.addfile(_tarinfo(name, "file", 0o644, len(data)), io.BytesIO(data))

        tar.addfile(_tarinfo("blobs", "dir", 0o755))
        tar.addfile(_tarinfo("blobs/sha256", "dir", 0o755))
        add_bytes("oci-layout", _canon({"imageLayoutVersion": "1.0.0"}))
        add_bytes("index.json", _canon(index))
        for desc in [manifest_desc, config_desc, *layer_descs]:
            blob = _blob_path(desc["digest"])
            with blob.open("rb") as fh:
                tar.addfile(_tarinfo(f"blobs/sha256/{blob.name}", "file", 0o644, desc["size"]), fh)
    tmp.replace(out)
    stamp.write_text(manifest_desc["digest"] + "\n")
    return out


def _canon(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def read_archive(path: Path) -> dict:
    """Index, manifest and config of an OCI archive written by `assemble` (for import and tests)."""
    with tarfile.open(path) as tar:
        def member(name: str) -> bytes:
            fh = tar.extractfile(name)
            if fh is None:
                raise TestbedError(f"{path}: {name} is not a file; delete the archive to rebuild it", code=4)
            return fh.read()

        def blob(digest: str) -> bytes:
            return member(f"blobs/sha256/{digest.split(':', 1)[1]}")

        index = json.loads(member("index.json"))
        mdesc = index["manifests"][0]
        manifest = json.loads(blob(mdesc["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
    return {"name": mdesc["annotations"][CONTAINERD_NAME], "digest": mdesc["digest"], "index": index,
            "manifest": manifest, "config": config}


# ---------------------------------------------------------------------------- contents

def _run(cmd: list[str], what: str, timeout: float, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    except FileNotFoundError:
        raise TestbedError(f"{what}: {cmd[0]} not found", code=4) from None
    except subprocess.TimeoutExpired:
        raise TestbedError(f"{what}: timed out after {timeout:.0f}s ({' '.join(cmd[:4])} ...)", code=4) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise TestbedError(f"{what} failed (exit {proc.returncode}): {last[0]}", code=4)
    return proc


def _pause_binary(echo) -> Path:
    src = PAUSE_SRC.read_bytes()
    gover = _run(["go", "env", "GOVERSION"], "go env", 60, env=go_env()).stdout.strip()
    key = hashlib.sha256(src + gover.encode()).hexdigest()[:16]
    out = IMAGES_DIR / "bin" / f"pause-{key}"
    if out.exists():
        return out
    echo(f"building the pause binary ({gover})")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pause-") as tmp:
        (Path(tmp) / "go.mod").write_text("module clusterproof.local/pause\n\ngo 1.22\n")
        shutil.copy(PAUSE_SRC, Path(tmp) / "main.go")
        env = go_env() | {"GOOS": "linux", "GOARCH": "amd64", "CGO_ENABLED": "0"}
        _run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out) + ".tmp", "."],
             "building the pause binary", 600, cwd=tmp, env=env)
    os.replace(str(out) + ".tmp", out)
    return out


def _base_files(layer: Layer) -> None:
    """The few files every image that runs a shell or python expects."""
    for d in ("proc", "sys", "dev", "etc", "root", "var", "run"):
        layer.dir(d)
    layer.dir("tmp", 0o1777)
    layer.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    layer.data("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    layer.data("etc/nsswitch.conf", b"hosts: files dns\n")


def _ldd(paths: list[Path]) -> set[str]:
    libs: set[str] = set()
    for path in paths:
        out = _run(["ldd", str(path)], f"ldd {path}", 60).stdout
        for line in out.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                libs.add(m.group(1))
    return libs


def _ensure_python() -> None:
    if PYTHON.exists() and (STDLIB / "os.py").exists():
        return
    _run(["apt-get", "install", "-y", "--no-install-recommends", "python3-minimal", "libpython3.11-stdlib"],
         "installing python3-minimal (needed for the probe image)", 600,
         env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if not PYTHON.exists():
        raise TestbedError(f"{PYTHON} missing after installing python3-minimal; apt-get install python3.11", code=4)


def _base_layer() -> Layer:
    """busybox with its applets, plus Debian's python3.11 runtime and stdlib (shared by probe and hello)."""
    if not BUSYBOX.exists():
        raise TestbedError("/bin/busybox missing; apt-get install busybox-static", code=4)
    _ensure_python()
    layer = Layer("busybox + python3.11")
    _base_files(layer)
    # Merged /usr as on Debian 12: libraries live under /usr/lib*, /lib and /lib64 point there.
    layer.link("lib", "usr/lib")
    layer.link("lib64", "usr/lib64")
    layer.file("bin/busybox", BUSYBOX.resolve(), 0o755)
    applets = _run([str(BUSYBOX), "--list"], "busybox --list", 30).stdout.split()
    for applet in applets:
        if applet not in ("busybox", "[[") and "/" not in applet:
            layer.link(f"bin/{applet}", "busybox")
    layer.link("bin/[[", "busybox")
    layer.file("usr/bin/python3.11", PYTHON, 0o755)
    layer.link("usr/bin/python3", "python3.11")
    layer.link("usr/bin/python", "python3.11")
    layer.link("usr/bin/env", "/bin/busybox")  # for `#!/usr/bin/env python3` scripts
    dynload = [p for p in sorted((STDLIB / "lib-dynload").glob("*.so")) if not DYNLOAD_SKIP.match(p.name)]
    layer.libraries([PYTHON, *dynload])

    def skip(path: Path) -> bool:
        return path.suffix == ".so" and path.parent.name == "lib-dynload" and bool(DYNLOAD_SKIP.match(path.name))

    layer.tree("usr/lib/python3.11", STDLIB, STDLIB_SKIP_DIRS, skip)
    layer.dir(SITE_PACKAGES)
    return layer


def _flask_layer(echo) -> Layer:
    """Flask and its pure-python dependencies, from this interpreter's installation or pip."""
    layer = Layer("flask")
    sources: dict[str, Path] = {}
    try:
        for name in FLASK_DISTS:
            dist = importlib.metadata.distribution(name)
            for f in dist.files or []:
                sources[str(f)] = Path(str(dist.locate_file(f)))
    except importlib.metadata.PackageNotFoundError:
        sources = _pip_flask(echo)
    for rel, src in sorted(sources.items()):
        parts = Path(rel).parts
        if rel.startswith("..") or "__pycache__" in parts or src.suffix in (".so", ".pyc") or not src.is_file():
            continue
        if parts[0].endswith(".dist-info") and parts[-1] not in ("METADATA", "entry_points.txt"):
            continue
        layer.file(f"{SITE_PACKAGES}/{rel}", src, 0o644)
    return layer


def _pip_flask(echo) -> dict[str, Path]:
    target = IMAGES_DIR / "flask-site"
    if not (target / "flask" / "__init__.py").exists():
        echo("pip-installing Flask for the hello-python image")
        shutil.rmtree(target, ignore_errors=True)
        _run(["python3", "-m", "pip", "install", "--quiet", "--target", str(target), "--no-deps",
              "--no-compile", "flask==3.*", *FLASK_DISTS[1:]], "pip install flask", 600)
    return {str(p.relative_to(target)): p for p in target.rglob("*") if p.is_file()}


def _app_layer() -> Layer:
    layer = Layer("hello-python app")
    main = HELLO_APP / "main.py"
    if not main.exists():
        raise TestbedError(f"{main} missing; the hello-python image is built from it", code=4)
    layer.file("app/main.py", main, 0o644)
    return layer


def _single_binary_layer(name: str, source: Path) -> Layer:
    layer = Layer(name)
    _base_files(layer)
    layer.file(name, source, 0o755)
    return layer


def image_specs(bin_dir: Path, echo=print) -> list[ImageSpec]:
    """The four images the testbed imports into every node."""
    coredns = bin_dir / "coredns"
    if not coredns.exists():
        raise TestbedError(f"{coredns} missing; build it first (python -m testbed up builds it)", code=4)
    base = _base_layer()
    py_env = [PATH_ENV, "PYTHONUNBUFFERED=1", "LANG=C.UTF-8"]
    return [
        ImageSpec(PAUSE, [_single_binary_layer("pause", _pause_binary(echo))], entrypoint=["/pause"]),
        ImageSpec(PROBE, [base], cmd=["sleep", "3600"], env=py_env),
        ImageSpec(HELLO, [base, _flask_layer(echo), _app_layer()], cmd=["python3", "/app/main.py"], env=py_env,
                  workdir="/app", ports=["5000/tcp"]),
        ImageSpec(COREDNS, [_single_binary_layer("coredns", coredns)], entrypoint=["/coredns"],
                  ports=["53/udp", "53/tcp"]),
    ]


def build_images(bin_dir: Path, echo=print) -> dict[str, Path]:
    """Build (or reuse from the cache) every testbed image; returns image name -> OCI archive."""
    out = {}
    for spec in image_specs(Path(bin_dir), echo):
        out[spec.name] = assemble(spec)
    return out


# ---------------------------------------------------------------------------- import

def _present(address: str) -> dict[str, str]:
    proc = _run(["ctr", "-n", "k8s.io", "--address", address, "images", "ls"], f"listing images on {address}", 60)
    present = {}
    for line in proc.stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3:
            present[cols[0]] = cols[2]
    return present


def import_images(address: str, tars: dict[str, Path], snapshotter: str | None = None) -> None:
    """Import archives into the containerd at ADDRESS (namespace k8s.io); skips images already there."""
    present = _present(address)
    for name, tar in tars.items():
        digest = read_archive(tar)["digest"]
        if present.get(name) == digest:
            continue
        cmd = ["ctr", "-n", "k8s.io", "--address", address, "images", "import"]
        if snapshotter:
            cmd += ["--snapshotter", snapshotter]
        _run([*cmd, str(tar)], f"importing {name} into {address}", 300)
        after = _present(address)
        if after.get(name) != digest:
            raise TestbedError(f"importing {name} into {address}: image shows digest {after.get(name)}, "
                               f"expected {digest}; check `ctr -n k8s.io --address {address} images ls`", code=4)
