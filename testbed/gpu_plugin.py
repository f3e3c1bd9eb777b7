"""A fake NVIDIA GPU device plugin speaking the real kubelet device-plugin API (v1beta1), HAMi style.

    python -m testbed.gpu_plugin --plugin-dir DIR --node NODE [--count N] [--split S] [--memory-mib M]
                                 [--kubeconfig PATH]

It registers `nvidia.com/gpu` with DIR/kubelet.sock and serves its own socket in DIR, so a real
kubelet advertises and allocates GPUs on a machine that has none. Like HAMi's plugin it offers
`count x split` devices (`<uuid>-<j>`), answers Allocate with HAMi's environment
(`CUDA_DEVICE_MEMORY_LIMIT_<i>`, `CUDA_DEVICE_SM_LIMIT`, `NVIDIA_VISIBLE_DEVICES`, ...) and, given a
kubeconfig, keeps the node annotations `hami.io/node-nvidia-register` and `hami.io/node-handshake`
fresh and marks the allocated pod (`hami.io/vgpu-devices-allocated`, `hami.io/bind-phase: success`).

Two stand-ins for parts of HAMi the testbed lacks, both only with --kubeconfig:
- no hami-scheduler: the node's status capacity gets `nvidia.com/gpumem` (count x memory MiB), so the
  default scheduler can place a pod that asks for a memory slice;
- no scheduler-side binding: Allocate picks the oldest pod bound to this node that asks for
  `nvidia.com/gpu` and is not marked yet (HAMi's plugin looks for `bind-phase: allocating`).
No libvgpu.so is mounted (there is no GPU to limit), which is why the in-pod memory checks skip.

The Python stubs are generated from the upstream api.proto at build time (`ensure_stubs()`), into
the cache outside the checkout; nothing generated is committed.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import hashlib
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from .paths import CACHE, GO_CACHE, go_env

KUBELET_MODULE = "k8s.io/kubelet"
KUBELET_VERSION = "v0.35.4"
PROTO_REL = "pkg/apis/deviceplugin/v1beta1/api.proto"
GEN = CACHE / "gen"
STUB = "deviceplugin_v1beta1"
API_VERSION = "v1beta1"
RESOURCE = "nvidia.com/gpu"
GPUMEM = "nvidia.com/gpumem"
ANN = "hami.io/"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # orders a pod without a creation time first
log = logging.getLogger("gpu-plugin")


# ------------------------------------------------------------------ stubs, generated at build time

def proto_path() -> Path:
    return GO_CACHE / "mod" / f"{KUBELET_MODULE}@{KUBELET_VERSION}" / PROTO_REL


def fetch_proto() -> Path:
    """The upstream api.proto from the Go module cache, downloading the module if it is not there yet."""
    path = proto_path()
    if path.exists():
        return path
    env = go_env()
    env["GOFLAGS"] = "-mod=mod"
    try:
        r = subprocess.run(["go", "mod", "download", "-json", f"{KUBELET_MODULE}@{KUBELET_VERSION}"], env=env,
                           capture_output=True, text=True, timeout=300, check=False, cwd=str(CACHE))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"cannot fetch {KUBELET_MODULE}@{KUBELET_VERSION}: {exc}") from None
    if r.returncode != 0 or not path.exists():
        raise RuntimeError(f"go mod download {KUBELET_MODULE}@{KUBELET_VERSION} failed ({r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-400:]}")
    return path


def strip_gogo(text: str) -> str:
    """Drop gogo-protobuf imports and options (older kubelet protos carry them; protoc without gogo rejects them)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("import") and "gogo" in s:
            continue
        if s.startswith("option") and "gogoproto" in s:
            continue
        out.append(line)
    text = "\n".join(out) + "\n"
    # field options such as `[(gogoproto.customname) = "ID", (gogoproto.nullable) = false]`
    return re.sub(r"\s*\[\s*\(gogoproto\.[^\]]*\]", "", text)


def ensure_stubs() -> Path:
    """Generate (once, cached by the proto's hash) and import the Python gRPC stubs; returns their folder."""
    src = fetch_proto()
    text = strip_gogo(src.read_text())
    import grpc_tools

    key = hashlib.sha256((text + getattr(grpc_tools, "__version__", "") + KUBELET_VERSION).encode()).hexdigest()[:12]
    out = GEN / f"deviceplugin-{KUBELET_VERSION}-{key}"
    done = out / ".complete"
    if not done.exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / f"{STUB}.proto").write_text(text)
        from grpc_tools import protoc

        proto_include = Path(grpc_tools.__file__).parent / "_proto"
        rc = protoc.main(["grpc_tools.protoc", f"-I{tmp}", f"-I{proto_include}", f"--python_out={tmp}",
                          f"--grpc_python_out={tmp}", str(tmp / f"{STUB}.proto")])
        if rc != 0:
            raise RuntimeError(f"protoc failed ({rc}) generating stubs from {src}")
        (tmp / ".complete").write_text(str(src) + "\n")
        try:
            tmp.rename(out)
        except OSError:      # another process won the race: use its copy
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return out


def stubs():
    """(pb2, pb2_grpc) modules, generating them first if needed."""
    ensure_stubs()
    return importlib.import_module(f"{STUB}_pb2"), importlib.import_module(f"{STUB}_pb2_grpc")


# ------------------------------------------------------------------ devices

def go_time(now: dt.datetime | None = None) -> str:
    """Go's time.String() for a UTC time, as HAMi writes it into the handshake."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%d %H:%M:%S.%f") + "000 +0000 UTC"


class Devices:
    """count physical GPUs, each offered as `split` devices `<uuid>-<j>` (HAMi's deviceSplitCount)."""

    def __init__(self, node: str, count: int, split: int, memory_mib: int, product: str):
        self.node, self.count, self.split, self.memory_mib, self.product = node, count, split, memory_mib, product
        self.uuids = [f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'clusterproof/{node}/{i}')}" for i in range(count)]
        self.ids = [f"{u}-{j}" for u in self.uuids for j in range(split)]
        self.healthy = {u: True for u in self.uuids}

    def physical(self, dev_id: str) -> str:
        return dev_id.rsplit("-", 1)[0] if dev_id not in self.uuids else dev_id

    def register_annotation(self) -> str:
        return json.dumps([{"id": u, "index": i, "count": self.split, "devmem": self.memory_mib, "devcore": 100,
                            "type": f"NVIDIA-{self.product}", "numa": 0, "mode": "hami-core",
                            "health": self.healthy[u]} for i, u in enumerate(self.uuids)], separators=(",", ":"))


# ------------------------------------------------------------------ the API side (optional)

class Api:
    """Node annotations, the gpumem stand-in and pod marking, through the API server."""

    def __init__(self, kubeconfig: str, node: str, devices: Devices):
        from kubernetes import client, config

        self.core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
        self.node, self.devices = node, devices
        self.lock = threading.Lock()

    def report(self) -> None:
        body = {"metadata": {"annotations": {ANN + "node-nvidia-register": self.devices.register_annotation(),
                                             ANN + "node-handshake": "Reported " + go_time()}}}
        self.core.patch_node(self.node, body, _request_timeout=10)

    def advertise_gpumem(self) -> None:
        total = str(self.devices.count * self.devices.memory_mib)
        status = self.core.read_node(self.node, _request_timeout=10).status
        if status is not None and (status.capacity or {}).get(GPUMEM) == total:
            return
        body = {"status": {"capacity": {GPUMEM: total}}}
        self.core.patch_node_status(self.node, body, _request_timeout=10)

    def mark_pod(self, containers: list[list[str]]) -> dict[int, int]:
        """Find the pod this Allocate is for; annotate it like HAMi; return container index -> gpumem MiB."""
        with self.lock:
            pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}",
                                                         _request_timeout=10).items
            wanted = sorted(len(c) for c in containers)
            cands = []
            for p in pods:
                meta, spec = p.metadata, p.spec
                if meta is None or spec is None or not meta.name or not meta.namespace:
                    continue  # the API server always fills these in; the client's types allow None
                ann = meta.annotations or {}
                phase = p.status.phase if p.status else None
                if phase not in ("Pending", None) or ann.get(ANN + "bind-phase") == "success":
                    continue
                reqs = [(c, _limit(c, RESOURCE)) for c in spec.containers]
                gpu_ctrs = [(c, n) for c, n in reqs if n]
                if sorted(n for _, n in gpu_ctrs) != wanted:
                    continue
                cands.append((meta.creation_timestamp or EPOCH, meta.namespace, meta.name, gpu_ctrs))
            if not cands:
                log.warning("Allocate: no pending pod on %s asks for %s devices", self.node, wanted)
                return {}
            _, namespace, name, gpu_ctrs = min(cands, key=lambda t: t[0])
            mem = {}
            alloc = []
            for i, ids in enumerate(containers):
                ctr = next((c for c, n in gpu_ctrs if n == len(ids)), None)
                if ctr is not None:
                    gpu_ctrs = [(c, n) for c, n in gpu_ctrs if c is not ctr]
                per = _limit(ctr, GPUMEM) if ctr is not None else 0
                mem[i] = per or self.devices.memory_mib // self.devices.split
                alloc.append("".join(f"{self.devices.physical(d)},NVIDIA,{mem[i]},0:" for d in ids) + ";")
            body = {"metadata": {"annotations": {ANN + "vgpu-devices-allocated": "".join(alloc),
                                                 ANN + "vgpu-node": self.node, ANN + "bind-phase": "success",
                                                 ANN + "bind-time": str(int(time.time()))}}}
            self.core.patch_namespaced_pod(name, namespace, body, _request_timeout=10)
            log.info("Allocate: marked pod %s/%s: %s", namespace, name, "".join(alloc))
            return mem


def _limit(container, name: str) -> int:
    res = container.resources
    for src in (res.limits if res else None, res.requests if res else None):
        if src and name in src:
            try:
                return int(str(src[name]))
            except ValueError:
                return 0
    return 0


# ------------------------------------------------------------------ the gRPC plugin

class Plugin:
    def __init__(self, args: argparse.Namespace):
        self.pb2, self.pb2_grpc = stubs()
        self.args = args
        self.dir = Path(args.plugin_dir)
        self.sock = self.dir / args.socket_name
        self.kubelet_sock = self.dir / "kubelet.sock"
        self.devices = Devices(args.node, args.count, args.split, args.memory_mib, args.product)
        self.api = Api(args.kubeconfig, args.node, self.devices) if args.kubeconfig else None
        self.stop = threading.Event()
        self.changed = threading.Condition()
        self.generation = 0
        self.server = None
        # (inode, ctime) of the kubelet.sock we registered with: a recreated socket may reuse the inode number
        self.registered_inode: tuple[int, int] | None = None

    # --- the DevicePlugin service
    def GetDevicePluginOptions(self, request, context):
        return self.pb2.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def _device_list(self):
        pb2 = self.pb2
        return pb2.ListAndWatchResponse(devices=[
            pb2.Device(ID=d, health="Healthy" if self.devices.healthy[self.devices.physical(d)] else "Unhealthy",
                       topology=pb2.TopologyInfo(nodes=[pb2.NUMANode(ID=0)]))
            for d in self.devices.ids])

    def ListAndWatch(self, request, context):
        seen = -1
        while not self.stop.is_set() and context.is_active():
            with self.changed:
                if seen == self.generation:
                    self.changed.wait(timeout=1.0)
                if seen == self.generation:
                    continue
                seen = self.generation
            log.info("ListAndWatch: sending %d devices", len(self.devices.ids))
            yield self._device_list()

    def GetPreferredAllocation(self, request, context):
        resp = self.pb2.PreferredAllocationResponse()
        for req in request.container_requests:
            # binpack like HAMi's default: fill one physical GPU's slots before the next
            chosen = list(req.must_include_deviceIDs)
            for d in sorted(req.available_deviceIDs, key=lambda d: (self.devices.physical(d), d)):
                if len(chosen) >= req.allocation_size:
                    break
                if d not in chosen and self.devices.physical(d) not in {self.devices.physical(c) for c in chosen}:
                    chosen.append(d)
            resp.container_responses.add(deviceIDs=chosen[:req.allocation_size])
        return resp

    def Allocate(self, request, context):
        containers = [list(c.devices_ids) for c in request.container_requests]
        log.info("Allocate: %s", containers)
        mem: dict[int, int] = {}
        if self.api:
            try:
                mem = self.api.mark_pod(containers)
            except Exception as exc:  # the allocation itself must not fail on an API hiccup
                log.warning("Allocate: could not mark the pod: %s", exc)
        resp = self.pb2.AllocateResponse()
        for i, ids in enumerate(containers):
            uuids = list(dict.fromkeys(self.devices.physical(d) for d in ids))
            per = mem.get(i) or self.devices.memory_mib // self.devices.split
            envs = {"NVIDIA_VISIBLE_DEVICES": ",".join(uuids), "CUDA_DEVICE_SM_LIMIT": "100",
                    "CUDA_DEVICE_MEMORY_SHARED_CACHE": f"/usr/local/vgpu/{uuid.uuid4()}.cache",
                    "CLUSTERPROOF_FAKE_GPU": "1"}
            for j, _ in enumerate(uuids):
                envs[f"CUDA_DEVICE_MEMORY_LIMIT_{j}"] = f"{per}m"
            resp.container_responses.add(envs=envs, annotations={"clusterproof.io/fake-gpu": ",".join(uuids)})
        return resp

    def PreStartContainer(self, request, context):
        return self.pb2.PreStartContainerResponse()

    # --- lifecycle
    def serve(self) -> None:
        import grpc

        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock.unlink(missing_ok=True)
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        handler = self.pb2_grpc.DevicePluginServicer
        # Bind our methods onto a servicer instance so the generated registration finds them.
        servicer = handler()
        for name in ("GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation", "Allocate",
                     "PreStartContainer"):
            setattr(servicer, name, getattr(self, name))
        self.pb2_grpc.add_DevicePluginServicer_to_server(servicer, server)
        if server.add_insecure_port(f"unix://{self.sock}") == 0:
            raise RuntimeError(f"cannot listen on {self.sock}")
        server.start()
        self.server = server
        log.info("serving %s on %s", RESOURCE, self.sock)

    def shutdown_server(self) -> None:
        if self.server is not None:
            self.server.stop(grace=1).wait(3)
            self.server = None
        self.sock.unlink(missing_ok=True)

    def register(self) -> bool:
        import grpc

        try:
            st = self.kubelet_sock.stat()
            inode = (st.st_ino, st.st_ctime_ns)
        except OSError:
            return False
        try:
            with grpc.insecure_channel(f"unix://{self.kubelet_sock}") as ch:
                stub = self.pb2_grpc.RegistrationStub(ch)
                stub.Register(self.pb2.RegisterRequest(
                    version=API_VERSION, endpoint=self.sock.name, resource_name=RESOURCE,
                    options=self.pb2.DevicePluginOptions(pre_start_required=False,
                                                         get_preferred_allocation_available=True)), timeout=5)
        except grpc.RpcError as exc:
            log.warning("Register with %s failed: %s", self.kubelet_sock, exc.details() if hasattr(exc, "details")
                        else exc)
            return False
        self.registered_inode = inode
        log.info("registered %s with %s", RESOURCE, self.kubelet_sock)
        return True

    def report(self) -> None:
        if not self.api:
            return
        try:
            self.api.report()
            if self.args.advertise_gpumem:
                self.api.advertise_gpumem()
        except Exception as exc:  # retried on the next round
            log.warning("node annotations: %s", exc)

    def run(self) -> int:
        self.serve()
        next_report = 0.0
        while not self.stop.is_set():
            # kubelet restarts delete every socket in the folder: serve again, then register again
            if not self.sock.exists():
                log.info("own socket %s gone: serving again", self.sock)
                self.shutdown_server()
                self.serve()
                self.registered_inode = None
            try:
                st = self.kubelet_sock.stat()
                inode: tuple[int, int] | None = (st.st_ino, st.st_ctime_ns)
            except OSError:
                inode = None
                self.registered_inode = None
            if inode is not None and inode != self.registered_inode:
                with self.changed:
                    self.generation += 1      # a fresh ListAndWatch will come; make it send at once
                    self.changed.notify_all()
                self.register()
            if time.monotonic() >= next_report:
                self.report()
                next_report = time.monotonic() + self.args.report_interval
            self.stop.wait(self.args.poll_interval)
        log.info("stopping")
        self.shutdown_server()
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m testbed.gpu_plugin", description=__doc__.splitlines()[0])
    p.add_argument("--plugin-dir", required=True, help="The kubelet's device-plugins folder (holds kubelet.sock)")
    p.add_argument("--node", required=True, help="Node name (device UUIDs and annotations)")
    p.add_argument("--count", type=int, default=2, help="Physical GPUs to pretend")
    p.add_argument("--split", type=int, default=10, help="Devices per GPU (HAMi deviceSplitCount)")
    p.add_argument("--memory-mib", type=int, default=16384, help="Memory of each GPU in MiB")
    p.add_argument("--product", default="Fake-GPU-16GB", help="Product name in the register annotation")
    p.add_argument("--kubeconfig", default=None, help="Write HAMi node/pod annotations through this kubeconfig")
    p.add_argument("--no-gpumem", dest="advertise_gpumem", action="store_false",
                   help="Do not add nvidia.com/gpumem to the node's capacity")
    p.add_argument("--socket-name", default="clusterproof-gpu.sock", help="This plugin's socket in --plugin-dir")
    p.add_argument("--report-interval", type=float, default=30.0, help="Seconds between annotation reports")
    p.add_argument("--poll-interval", type=float, default=0.5, help="Seconds between kubelet.sock checks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpu-plugin %(levelname)s %(message)s")
    args = parse_args(argv)
    plugin = Plugin(args)

    def on_signal(signum, frame):
        plugin.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return plugin.run()


if __name__ == "__main__":
    sys.exit(main())
