"""Benchmark the suite's API-level checks against many simulated nodes (kwok), with the report it renders.

    python bench/kwok.py [--nodes 2,500] [--runs 3] [--chromium-runs 3] [--gpu-every 10] [--keep-reports DIR]
                         [-- EXTRA PYTEST ARGS]

Builds kwok (sigs.k8s.io/kwok v0.8.0, `go install`, cached in ~/.cache/clusterproof/go/gobin-kwok) once, starts
a control plane of its own on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager, kube-scheduler from the
testbed's cached v1.35.4 binaries; free high ports, a temporary directory, client certificates), and kwok
managing every node. It never touches the testbed (/var/lib/clusterproof-testbed, the tb-node-* namespaces).

For each N it makes the cluster have N fake nodes (one control plane with its taint, workers, every
--gpu-every'th worker a GPU node: HAMi-style or NVIDIA-plugin-style with GFD labels; a 2-replica CoreDNS
Deployment whose pods kwok "runs"), then runs the suite's API-level checks: the nodes area and the GPU checks that
only read Node objects (`-m "nodes or (gpu and not slow)"` over suites/: host and runtime checks need a real
host, the slow GPU checks a real pod), with report.html (pytest-html, self-contained), junit.xml and summary.json.
It measures the pytest run's wall time (median of --runs), the time per area (summed check durations from
summary.json), report.html's size, and headless Chromium opening report.html (wall time of the chromium process,
--dump-dom until pytest-html's script has built the results table, a fresh profile each time; median of
--chromium-runs). It prints a table, the ratio of the largest N's wall time to the smallest's (issue 12's target:
under 2x) and whether Chromium opened each report under 3 s. It asserts nothing: a verdict that fails on fake
nodes is listed, not an error. The machine is shared: the medians keep one slow moment from deciding.

Everything it starts is stopped and its temporary directory removed at the end, on an error, on Ctrl-C and on
SIGTERM/SIGHUP.
"""
from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import datetime as dt
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed import pki  # noqa: E402  (pure helpers: a CA, certificates, keys in a folder we name)
from testbed.errors import TestbedError  # noqa: E402
from testbed.paths import CACHE, DEFAULT_VERSION, GO_CACHE, bin_dir, go_env  # noqa: E402

KWOK_VERSION = "v0.8.0"
KWOK_MODULE = "sigs.k8s.io/kwok/cmd/kwok"
KWOK_GOBIN = GO_CACHE / "gobin-kwok"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As tests/test_report_browser.py runs it.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]
SELECTION = "nodes or (gpu and not slow)"
SERVICE_CIDR = "198.19.224.0/20"    # benchmark range, not the testbed's 198.19.240.0/20; nothing routes to it
POD_CIDR = "198.18.128.0/17"        # kwok's pod IPs (its default is in 10/8)
NODE_NET = (198, 19, 64)            # fake InternalIPs 198.19.64.1 ... (never reached: no host checks)
PROGRESS_EVERY = 15.0
CHROMIUM_TARGET_S = 3.0
RATIO_TARGET = 2.0
GPU_PRODUCT = "NVIDIA-H200"
GPU_MIB = 143771
GPUS_PER_NODE = 8
HAMI_SPLIT = 10


class Stop(Exception):
    """A one-line reason to end the benchmark (bad input, a component that did not come up)."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so the finally blocks clean up."""


def say(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ input

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def node_counts(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"positive whole numbers separated by commas, got {text!r}")
        out.append(int(part))
    if len(out) > 10 or max(out) > 5000:
        raise argparse.ArgumentTypeError("at most 10 counts, each at most 5000")
    return sorted(set(out))


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"wants a positive whole number, got {text!r}")
    return int(text)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = _Parser(prog="bench/kwok.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=node_counts, default=[2, 500], help="node counts to measure (default 2,500)")
    ap.add_argument("--gpu-every", type=positive_int, default=10, help="every Nth worker is a GPU node (default 10)")
    ap.add_argument("--runs", type=positive_int, default=3,
                    help="pytest runs per node count; the median wall time is shown (default 3)")
    ap.add_argument("--chromium-runs", type=positive_int, default=3,
                    help="times Chromium opens each report; the median is shown (default 3)")
    ap.add_argument("--keep-reports", metavar="DIR", default=None,
                    help="copy each N's report files to DIR/N/ (default: removed with the temporary directory)")
    return ap.parse_args(argv), extra


# ------------------------------------------------------------------ processes

class Procs:
    """Every process the benchmark starts, each in its own session (process group), stopped in reverse order."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        try:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=env)
        finally:
            log.close()
        self.running.append((name, p))
        return p

    def run(self, name: str, argv: list[str], timeout: float, **kw: Any) -> tuple[subprocess.CompletedProcess, float]:
        """Run to the end (own process group, killed with its children on timeout or interrupt); wall seconds."""
        if kw.pop("capture_output", False):
            kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t = time.monotonic()
        p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self.running.append((name, p))
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._stop(name, p)
            raise Stop(f"{name} ran past {timeout:.0f} s") from None
        finally:
            took = time.monotonic() - t
            if p.poll() is not None:
                self._reap_group(p)
                self.running = [(n, q) for n, q in self.running if q is not p]
        return subprocess.CompletedProcess(argv, p.returncode, out, err), took

    def check_alive(self) -> None:
        for name, p in self.running:
            if p.poll() is not None:
                raise Stop(f"{name} exited with status {p.returncode}; see its log: {self.tail(name)}")

    def tail(self, name: str) -> str:
        try:
            lines = (self.logs / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])[-600:] or "(empty log)"

    @staticmethod
    def _reap_group(p: subprocess.Popen) -> None:
        """Children a finished process left in its group (Chromium's helpers) are ended too."""
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _stop(self, name: str, p: subprocess.Popen) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._reap_group(p)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            say(f"  {name} (pid {p.pid}) did not end after SIGKILL")

    def stop_all(self) -> None:
        while self.running:
            name, p = self.running.pop()
            self._stop(name, p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe, timeout: float, procs: Procs, interval: float = 0.5) -> Any:
    """Call probe() until it returns something true; Stop when TIMEOUT passes or a started process died."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        procs.check_alive()
        try:
            last = probe()
        except Exception as exc:  # an API server still starting answers with errors
            last = None
            err = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        else:
            err = ""
            if last:
                return last
        if time.monotonic() > deadline:
            raise Stop(f"{what}: not after {timeout:.0f} s {err}".rstrip())
        time.sleep(interval)


# ------------------------------------------------------------------ kwok

def ensure_kwok() -> Path:
    """The kwok binary, built once with `go install` into KWOK_GOBIN; progress every 15 s while it builds."""
    binary = KWOK_GOBIN / "kwok"
    stamp = KWOK_GOBIN / ".version"
    if binary.is_file() and (not stamp.exists() or stamp.read_text().strip() == KWOK_VERSION):
        return binary
    try:
        env = go_env()
    except TestbedError as exc:
        raise Stop(f"no Go toolchain to build kwok: {exc}") from None
    KWOK_GOBIN.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / "logs" / f"build-kwok-{KWOK_VERSION}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"building kwok {KWOK_VERSION} (go install {KWOK_MODULE}; a few minutes on 2 cores the first time; "
        f"log {log_path})")
    t = time.monotonic()
    with log_path.open("w") as log:
        p = subprocess.Popen(["nice", "-n", "10", "go", "install", "-trimpath", "-ldflags=-s -w",
                              f"{KWOK_MODULE}@{KWOK_VERSION}"], cwd="/", env={**env, "GOBIN": str(KWOK_GOBIN)},
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while p.poll() is None:
                try:
                    p.wait(timeout=PROGRESS_EVERY)
                except subprocess.TimeoutExpired:
                    lines = log_path.read_text(errors="replace").strip().splitlines()
                    downloads = sum(ln.startswith("go: downloading") for ln in lines)
                    say(f"  kwok build: {time.monotonic() - t:.0f} s, {downloads} modules downloaded, "
                        f"latest: {(lines[-1] if lines else 'compiling')[:100]}")
        except BaseException:
            p.kill()
            p.wait()
            raise
    if p.returncode != 0 or not binary.is_file():
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
        raise Stop(f"building kwok failed (exit {p.returncode}): {tail[-400:]}")
    stamp.write_text(KWOK_VERSION + "\n")
    say(f"  kwok built in {time.monotonic() - t:.0f} s: {binary}")
    return binary


# kwok v0.8.0's binary has no stages built in: its own default ones (kustomize/stage/ in its module) are read from
# the Go module cache that `go install` filled, and handed to it as its config file.
KWOK_STAGES = ("node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
               "pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml")


def kwok_stages() -> str:
    """kwok's default "fast" node and pod stages (with lease heartbeats) as one multi-document YAML."""
    module = GO_CACHE / "mod" / "sigs.k8s.io" / f"kwok@{KWOK_VERSION}"
    if not all((module / "kustomize" / "stage" / f).is_file() for f in KWOK_STAGES):
        try:
            env = go_env()
        except TestbedError as exc:
            raise Stop(f"no Go toolchain to fetch kwok's stages: {exc}") from None
        r = subprocess.run(["go", "mod", "download", f"sigs.k8s.io/kwok@{KWOK_VERSION}"], cwd="/", env=env,
                           capture_output=True, text=True, timeout=600, check=False)
        if r.returncode != 0:
            raise Stop(f"go mod download sigs.k8s.io/kwok@{KWOK_VERSION} failed: {r.stderr.strip()[-300:]}")
    return "\n---\n".join((module / "kustomize" / "stage" / f).read_text() for f in KWOK_STAGES)


# ------------------------------------------------------------------ the control plane

def write_kubeconfig(path: Path, pkid: Path, server: str) -> None:
    def b64(name: str) -> str:
        return base64.b64encode((pkid / name).read_bytes()).decode()

    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: clusterproof-kwok
  cluster:
    server: {server}
    certificate-authority-data: {b64('ca.crt')}
users:
- name: kwok-admin
  user:
    client-certificate-data: {b64('admin.crt')}
    client-key-data: {b64('admin.key')}
contexts:
- name: kwok-admin@clusterproof-kwok
  context:
    cluster: clusterproof-kwok
    user: kwok-admin
current-context: kwok-admin@clusterproof-kwok
""")
    path.chmod(0o600)


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, all on 127.0.0.1, in TMP."""

    def __init__(self, tmp: Path, procs: Procs, kwok: Path):
        self.tmp, self.procs, self.kwok = tmp, procs, kwok
        self.pki = tmp / "pki"
        self.kubeconfig = tmp / "admin.conf"
        self.port = 0
        self.api: Any = None

    def https_ok(self, path: str) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", context=ctx, timeout=3) as r:
            return r.status == 200

    def start(self) -> None:
        b = bin_dir(DEFAULT_VERSION)
        missing = [n for n in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
                   if not (b / n).is_file()]
        if missing:
            raise Stop(f"{', '.join(missing)} missing in {b}: build them once with python -m testbed up")
        pki.ensure_ca(self.pki)
        pki.ensure_cert(self.pki, "apiserver", "kube-apiserver", server=True, sans=("127.0.0.1", "localhost"))
        pki.ensure_cert(self.pki, "admin", "clusterproof-kwok-admin", ("system:masters",))
        pki.ensure_sa_keys(self.pki)
        client_port, peer_port, self.port, kcm_port, sched_port, kwok_port = (free_port() for _ in range(6))
        server = f"https://127.0.0.1:{self.port}"
        write_kubeconfig(self.kubeconfig, self.pki, server)
        etcd = f"http://127.0.0.1:{client_port}"
        self.procs.start("etcd", [
            str(b / "etcd"), "--name", "kwok-bench", "--data-dir", str(self.tmp / "etcd"),
            "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"kwok-bench=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync",
            "--log-level", "warn"])
        wait_until("etcd /health", lambda: urllib.request.urlopen(f"{etcd}/health", timeout=2).status == 200, 60,
                   self.procs)
        p = self.pki
        self.procs.start("kube-apiserver", [
            str(b / "kube-apiserver"), f"--etcd-servers={etcd}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.port}", "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}", f"--client-ca-file={p}/ca.crt",
            f"--tls-cert-file={p}/apiserver.crt", f"--tls-private-key-file={p}/apiserver.key",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p}/sa.pub", f"--service-account-signing-key-file={p}/sa.key",
            "--authorization-mode=RBAC", "--anonymous-auth=false", "--profiling=false", "--v=0"])
        wait_until("kube-apiserver /readyz", lambda: self.https_ok("/readyz"), 120, self.procs)
        kc = str(self.kubeconfig)
        common = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                  "--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false", "--v=0"]
        self.procs.start("kube-controller-manager", [
            str(b / "kube-controller-manager"), *common, f"--secure-port={kcm_port}",
            "--controllers=deployment-controller,replicaset-controller,serviceaccount-controller,namespace-controller,"
            "node-lifecycle-controller",
            f"--service-account-private-key-file={p}/sa.key", f"--root-ca-file={p}/ca.crt"])
        self.procs.start("kube-scheduler", [str(b / "kube-scheduler"), *common, f"--secure-port={sched_port}"])
        home = self.tmp / "kwok-home"   # kwok reads ~/.kwok/kwok.yaml by default: not the user's
        home.mkdir()
        (home / "kwok.yaml").write_text(kwok_stages())
        self.procs.start("kwok", [
            str(self.kwok), f"--kubeconfig={kc}", "--manage-all-nodes=true", f"--cidr={POD_CIDR}",
            f"--node-ip={NODE_NET[0]}.{NODE_NET[1]}.{NODE_NET[2]}.1", "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{kwok_port}", "-c", str(home / "kwok.yaml")],
            env={**os.environ, "HOME": str(home)})
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=kc)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        wait_until("the default ServiceAccount in kube-system",
                   lambda: self.core.read_namespaced_service_account("default", "kube-system"), 60, self.procs)


# ------------------------------------------------------------------ the fake cluster

def node_name(i: int) -> str:
    return "kwok-cp-1" if i == 0 else f"kwok-node-{i:04d}"


def gpu_kind(i: int, gpu_every: int) -> str | None:
    """None, "hami" or "nvidia" for worker I: worker 1 is always a GPU node (so N=2 has one), then every Nth."""
    if i == 0 or not (i == 1 or i % gpu_every == 0):
        return None
    return "hami" if (i // gpu_every) % 2 == 0 else "nvidia"


def handshake_now() -> str:
    return "Reported " + dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def node_body(i: int, gpu_every: int) -> dict[str, Any]:
    """A Node as a kubeadm cluster's kubelet registers it (labels, roles, capacity, nodeInfo); kwok adds the rest."""
    name = node_name(i)
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
              "topology.kubernetes.io/zone": f"zone-{'abc'[i % 3]}", "type": "kwok"}
    annotations = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0",
                   "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
                   "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
    taints = []
    capacity = {"cpu": "32", "memory": "263840256Ki", "pods": "110", "ephemeral-storage": "1921725720Ki",
                "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    allocatable = {"cpu": "31500m", "memory": "261640192Ki", "pods": "110", "ephemeral-storage": "1771056869548",
                   "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    if i == 0:
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        taints.append({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
    else:
        labels["node-role.kubernetes.io/worker"] = ""
    kind = gpu_kind(i, gpu_every)
    if kind is not None:
        labels["node-role.kubernetes.io/gpu"] = ""
        labels["nvidia.com/gpu.present"] = "true"
        if kind == "hami":
            count = GPUS_PER_NODE * HAMI_SPLIT
            labels["gpu"] = "on"
            devices = [{"id": f"GPU-{i:04d}{g:04d}-0000-4000-8000-{i:012d}", "count": HAMI_SPLIT, "devmem": GPU_MIB,
                        "devcore": 100, "type": f"NVIDIA-{GPU_PRODUCT}", "numa": g // 4, "mode": "hami-core",
                        "health": True} for g in range(GPUS_PER_NODE)]
            annotations["hami.io/node-nvidia-register"] = json.dumps(devices, separators=(",", ":"))
            annotations["hami.io/node-handshake"] = handshake_now()
            for res in (capacity, allocatable):
                res["nvidia.com/gpu"] = str(count)
                res["nvidia.com/gpumem"] = str(GPU_MIB * GPUS_PER_NODE)
        else:
            labels.update({"nvidia.com/gpu.product": GPU_PRODUCT, "nvidia.com/gpu.count": str(GPUS_PER_NODE),
                           "nvidia.com/gpu.memory": str(GPU_MIB), "nvidia.com/gpu.replicas": "1",
                           "nvidia.com/gpu.sharing-strategy": "none"})
            for res in (capacity, allocatable):
                res["nvidia.com/gpu"] = str(GPUS_PER_NODE)
                res["nvidia.com/gpumem"] = str(GPU_MIB * GPUS_PER_NODE)
    # Realistic skew: most kubelets at the control plane's version, some one or two minors behind (allowed).
    kubelet = {0: "v1.35.4", 7: "v1.34.3", 13: "v1.33.7"}.get(i % 17 if i else 0, "v1.35.4")
    ip = f"{NODE_NET[0]}.{NODE_NET[1] + i // 250}.{i % 250 + 1}"
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": capacity, "allocatable": allocatable,
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": kubelet,
                         "kubeProxyVersion": kubelet, "containerRuntimeVersion": "containerd://2.1.4",
                         # kwok's template writes these unquoted: none may read as a YAML number
                         "kernelVersion": "6.1.0-41-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "machineID": f"c1{i:030x}", "systemUUID": f"{i:08x}-0000-4000-8000-{i:012x}",
                         "bootID": f"{i:08x}-b007-4000-8000-{i:012x}"},
        },
    }


COREDNS = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
    "spec": {
        "replicas": 2, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
        "template": {
            "metadata": {"labels": {"k8s-app": "kube-dns"}},
            "spec": {"containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.1",
                                     "args": ["-conf", "/etc/coredns/Corefile"]}],
                     "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                     "priorityClassName": "system-cluster-critical"},
        },
    },
}


class Cluster:
    def __init__(self, cp: ControlPlane, gpu_every: int):
        self.cp, self.gpu_every = cp, gpu_every
        self.count = 0

    def grow_to(self, n: int) -> float:
        """Create nodes count..n-1 (4 at a time); seconds taken."""
        t = time.monotonic()

        def make(i: int) -> None:
            self.cp.core.create_node(node_body(i, self.gpu_every))

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(make, range(self.count, n)))
        self.count = max(self.count, n)
        return time.monotonic() - t

    def shrink_to(self, n: int) -> None:
        for i in range(n, self.count):
            self.cp.core.delete_node(node_name(i))
        self.count = n

    def refresh_handshakes(self) -> None:
        """HAMi's plugin re-reports every 30 s; so does this stand-in, once before each run (GPU-001 reads it)."""
        for i in range(self.count):
            if gpu_kind(i, self.gpu_every) == "hami":
                self.cp.core.patch_node(node_name(i), {"metadata": {"annotations": {
                    "hami.io/node-handshake": handshake_now()}}})

    def settled(self) -> str | None:
        """None when every node is Ready with exactly the taints it was made with and CoreDNS is available;
        otherwise what is still missing."""
        nodes = self.cp.core.list_node().items
        if len(nodes) != self.count:
            return f"{len(nodes)} of {self.count} nodes listed"
        ready = sum(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in nodes)
        if ready != self.count:
            return f"{ready} of {self.count} nodes Ready"
        extra = [n.metadata.name for n in nodes if len(n.spec.taints or []) != (n.metadata.name == node_name(0))]
        if extra:
            return f"{len(extra)} nodes with taints they were not made with ({extra[0]})"
        d = self.cp.apps.read_namespaced_deployment("coredns", "kube-system")
        if (d.status.available_replicas or 0) < d.spec.replicas:
            return f"CoreDNS {d.status.available_replicas or 0}/{d.spec.replicas} available"
        return None

    def wait_settled(self, procs: Procs, timeout: float) -> None:
        last = ["not asked yet"]

        def done() -> bool:
            last[0] = self.settled() or ""
            return not last[0]

        try:
            wait_until(f"{self.count} nodes Ready and CoreDNS available", done, timeout, procs, interval=1.0)
        except Stop as exc:
            raise Stop(f"{exc} (last seen: {last[0]})") from None


# ------------------------------------------------------------------ one measurement

def short_outcomes(doc: dict[str, Any]) -> str:
    """'passed NODE-001, NODE-002 x3, ...; failed ...' from summary.json's checks."""
    by: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for c in doc.get("checks") or []:
        by[c["outcome"]][c.get("id") or c["nodeid"]] += 1
    parts = []
    for outcome in ("passed", "warned", "failed", "error", "skipped"):
        if by.get(outcome):
            items = sorted(by[outcome].items())
            parts.append(f"{outcome} " + ", ".join(k if v == 1 else f"{k} x{v}" for k, v in items))
    return "; ".join(parts) or "no checks"


def measure(procs: Procs, cp: ControlPlane, n: int, out: Path, runs: int, chromium_runs: int, extra: list[str],
            keep: Path | None) -> dict[str, Any]:
    """RUNS pytest runs (the median wall time counts; the last run's files are measured), then Chromium."""
    out.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERPROOF_") and k != "KUBECONFIG"}
    argv = [sys.executable, "-m", "pytest", "suites", "-m", SELECTION, "-q", "--no-progress",
            "--kubeconfig", str(cp.kubeconfig), "--report-dir", str(out),
            "--html", str(out / "report.html"), "--self-contained-html", *extra]
    walls = []
    for _ in range(runs):
        res, wall = procs.run(f"pytest-{n}", argv, 1800, cwd=ROOT, env=env, capture_output=True, text=True)
        walls.append(wall)
        last = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
        say(f"  pytest exit {res.returncode} in {wall:.1f} s: {last}")
    summary = out / "summary.json"
    html = out / "report.html"
    if not summary.is_file() or not html.is_file():
        said = " ".join(f"{res.stdout} {res.stderr}".split())
        raise Stop(f"the {n}-node run (pytest exit {res.returncode}) wrote no report: {said[-300:]}")
    doc = json.loads(summary.read_text())
    areas: dict[str, float] = collections.defaultdict(float)
    for c in doc.get("checks") or []:
        areas[c.get("area") or "other"] += float(c.get("duration") or 0.0)
    opens = []
    for k in range(chromium_runs):
        profile = out / f"chromium-profile-{k}"
        r, took = procs.run("chromium", [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                         "--virtual-time-budget=5000", "--dump-dom", html.resolve().as_uri()],
                            120, capture_output=True, text=True)
        shutil.rmtree(profile, ignore_errors=True)
        # pytest-html's script builds the results table from the page's data: a row there means it rendered
        if r.returncode != 0 or 'data-check="NODE-001"' not in r.stdout:
            raise Stop(f"chromium did not render {html} (exit {r.returncode}): {r.stderr.strip()[-300:]}")
        opens.append(took)
    if keep is not None:
        dest = keep / str(n)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("report.html", "summary.json", "junit.xml"):
            if (out / name).is_file():
                shutil.copy2(out / name, dest / name)
    row = {"nodes": n, "wall": statistics.median(walls), "walls": walls, "areas": dict(areas),
           "bytes": html.stat().st_size, "chromium": statistics.median(opens), "chromium_all": opens,
           "exit": res.returncode,
           "verdict": doc.get("verdict"), "outcomes": short_outcomes(doc), "items": doc.get("totals", {})}
    say("  areas: " + ", ".join(f"{a} {s:.2f} s" for a, s in sorted(areas.items())) +
        f"; report.html {row['bytes']:,} bytes; chromium " + ", ".join(f"{x:.2f}" for x in opens) + " s")
    say(f"  sign-off {row['verdict']}: {row['outcomes']}")
    return row


def table(rows: list[dict[str, Any]]) -> None:
    areas = sorted({a for r in rows for a in r["areas"]})
    head = ["nodes", "wall s", *[f"{a} s" for a in areas], "report bytes", "chromium open s"]
    body = [[str(r["nodes"]), f"{r['wall']:.1f}", *[f"{r['areas'].get(a, 0.0):.2f}" for a in areas],
             f"{r['bytes']:,}", f"{r['chromium']:.2f}"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    say("")
    for line in (head, ["-" * w for w in widths], *body):
        say(" | ".join(x.rjust(w) for x, w in zip(line, widths)))
    if len(rows) > 1:
        lo, hi = rows[0], rows[-1]
        ratio = hi["wall"] / lo["wall"]
        say(f"\nAPI-level checks (median pytest wall time of {len(hi['walls'])} run(s)), {hi['nodes']} nodes vs "
            f"{lo['nodes']}: {hi['wall']:.1f} s / {lo['wall']:.1f} s = "
            f"{ratio:.2f}x (target under {RATIO_TARGET:.0f}x: {'met' if ratio < RATIO_TARGET else 'NOT met'})")
    for r in rows:
        ok = r["chromium"] < CHROMIUM_TARGET_S
        say(f"Chromium opened the {r['nodes']}-node report in {r['chromium']:.2f} s (median of "
            f"{len(r['chromium_all'])}; slowest {max(r['chromium_all']):.2f} s): "
            f"{'under' if ok else 'NOT under'} {CHROMIUM_TARGET_S:.0f} s")


# ------------------------------------------------------------------ main

def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    args, extra = parse_args(argv)
    if not Path(CHROMIUM).is_file():
        raise Stop(f"no chromium at {CHROMIUM}: apt-get install chromium")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    kwok = ensure_kwok()
    tmp = Path(tempfile.mkdtemp(prefix="cp-kwok-"))
    (tmp / "logs").mkdir()
    procs = Procs(tmp / "logs")
    keep = Path(args.keep_reports).resolve() if args.keep_reports else None
    try:
        say(f"control plane {DEFAULT_VERSION} + kwok {KWOK_VERSION} in {tmp}")
        t = time.monotonic()
        cp = ControlPlane(tmp, procs, kwok)
        cp.start()
        cp.apps.create_namespaced_deployment("kube-system", COREDNS)
        say(f"  up in {time.monotonic() - t:.1f} s (API server https://127.0.0.1:{cp.port})")
        cluster = Cluster(cp, args.gpu_every)
        rows = []
        for n in args.nodes:
            if n < cluster.count:
                cluster.shrink_to(n)
            made = cluster.grow_to(n)
            t = time.monotonic()
            cluster.wait_settled(procs, 120 + n / 2)
            gpus = sum(gpu_kind(i, args.gpu_every) is not None for i in range(n))
            say(f"{n} nodes ({gpus} with GPUs, 1 control plane): created in {made:.1f} s, Ready "
                f"{time.monotonic() - t:.1f} s later; running pytest suites -m {SELECTION!r}")
            cluster.refresh_handshakes()
            rows.append(measure(procs, cp, n, tmp / f"reports-{n}", args.runs, args.chromium_runs, extra, keep))
            procs.check_alive()
        table(rows)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Stop as exc:
        sys.exit(f"bench/kwok.py: {exc}")
    except KeyboardInterrupt:
        print("bench/kwok.py: interrupted; everything it started was stopped and its files removed", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except Interrupted as exc:
        print(f"bench/kwok.py: {exc}; everything it started was stopped and its files removed", file=sys.stderr)
        sys.exit(128 + signal.Signals[str(exc)])
