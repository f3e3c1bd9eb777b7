"""The fake GPU device plugin against a fake kubelet, over real gRPC on unix sockets."""
from __future__ import annotations

import concurrent.futures
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testbed import gpu_plugin

ROOT = Path(__file__).resolve().parent.parent
grpc = pytest.importorskip("grpc")


class FakeKubelet:
    """The kubelet's Registration service on DIR/kubelet.sock; Register calls land in a queue."""

    def __init__(self, plugin_dir: Path):
        self.pb2, self.pb2_grpc = gpu_plugin.stubs()
        self.sock = plugin_dir / "kubelet.sock"
        self.requests: queue.Queue = queue.Queue()
        self.server = None

    def start(self) -> None:
        pb2, requests = self.pb2, self.requests

        class Registration(self.pb2_grpc.RegistrationServicer):
            def Register(self, request, context):
                requests.put(request)
                return pb2.Empty()

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        self.pb2_grpc.add_RegistrationServicer_to_server(Registration(), self.server)
        assert self.server.add_insecure_port(f"unix://{self.sock}")
        self.server.start()

    def stop(self) -> None:
        if self.server:
            self.server.stop(grace=0).wait(3)
            self.server = None
        self.sock.unlink(missing_ok=True)

    def next_register(self, timeout: float = 30):
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            return None


@pytest.fixture
def plugin_dir():
    """A short temp folder (unix socket paths are limited to 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="cp-dp-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def kubelet(plugin_dir):
    """A fake kubelet Registration server in plugin_dir."""
    k = FakeKubelet(plugin_dir)
    k.start()
    yield k
    k.stop()


@pytest.fixture
def plugin(plugin_dir, kubelet):
    """The plugin as its own process, like the testbed runs it; SIGTERM afterwards."""
    log = (plugin_dir / "plugin.log").open("w")
    p = subprocess.Popen([sys.executable, "-m", "testbed.gpu_plugin", "--plugin-dir", str(plugin_dir),
                          "--node", "node-x", "--count", "2", "--split", "2", "--memory-mib", "16384",
                          "--poll-interval", "0.1"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    yield p
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    log.close()


def _log(plugin_dir: Path) -> str:
    return (plugin_dir / "plugin.log").read_text()[-2000:]


def test_stubs_are_generated_outside_the_checkout():
    out = gpu_plugin.ensure_stubs()
    assert not str(out).startswith(str(ROOT))
    assert (out / "deviceplugin_v1beta1_pb2_grpc.py").exists()
    tracked = subprocess.run(["git", "ls-files", "*_pb2*.py"], cwd=ROOT, capture_output=True, text=True,
                             timeout=30, check=False).stdout
    assert tracked.strip() == ""


def test_strip_gogo_removes_imports_and_options():
    text = ('syntax = "proto3";\nimport "github.com/gogo/protobuf/gogoproto/gogo.proto";\n'
            "option (gogoproto.goproto_getters_all) = false;\n"
            'message Device {\n  string ID = 1 [(gogoproto.customname) = "ID", (gogoproto.nullable) = false];\n}\n')
    out = gpu_plugin.strip_gogo(text)
    assert "gogo" not in out
    assert "string ID = 1;" in out


def test_register_list_allocate_over_real_grpc(plugin_dir, kubelet, plugin):
    req = kubelet.next_register()
    assert req is not None, f"no Register from the plugin; its log:\n{_log(plugin_dir)}"
    assert (req.version, req.resource_name) == ("v1beta1", "nvidia.com/gpu")
    assert req.options.get_preferred_allocation_available
    endpoint = plugin_dir / req.endpoint
    assert endpoint.is_socket()

    pb2, pb2_grpc = kubelet.pb2, kubelet.pb2_grpc
    with grpc.insecure_channel(f"unix://{endpoint}") as ch:
        stub = pb2_grpc.DevicePluginStub(ch)
        opts = stub.GetDevicePluginOptions(pb2.Empty(), timeout=5)
        assert opts.get_preferred_allocation_available and not opts.pre_start_required

        stream = stub.ListAndWatch(pb2.Empty(), timeout=10)
        first = next(stream)
        stream.cancel()
        ids = [d.ID for d in first.devices]
        assert len(ids) == 4 and {d.health for d in first.devices} == {"Healthy"}
        assert all(i.startswith("GPU-") for i in ids)

        pref = stub.GetPreferredAllocation(pb2.PreferredAllocationRequest(container_requests=[
            pb2.ContainerPreferredAllocationRequest(available_deviceIDs=ids, allocation_size=1)]), timeout=5)
        assert len(pref.container_responses[0].deviceIDs) == 1

        resp = stub.Allocate(pb2.AllocateRequest(container_requests=[
            pb2.ContainerAllocateRequest(devices_ids=[ids[0]])]), timeout=5)
        envs = dict(resp.container_responses[0].envs)
        assert envs["CUDA_DEVICE_MEMORY_LIMIT_0"] == "8192m"       # 16384 MiB / split 2, no pod to read gpumem from
        assert envs["NVIDIA_VISIBLE_DEVICES"] == ids[0].rsplit("-", 1)[0]
        assert envs["CUDA_DEVICE_SM_LIMIT"] == "100"

        assert stub.PreStartContainer(pb2.PreStartContainerRequest(devices_ids=[ids[0]]), timeout=5) is not None


def test_reregisters_when_kubelet_socket_is_recreated(plugin_dir, kubelet, plugin):
    assert kubelet.next_register() is not None, _log(plugin_dir)
    kubelet.stop()                      # a kubelet restart: its socket goes away and comes back
    time.sleep(0.3)
    kubelet.start()
    again = kubelet.next_register()
    assert again is not None, f"no second Register after kubelet.sock came back; log:\n{_log(plugin_dir)}"
    assert again.resource_name == "nvidia.com/gpu"


def test_serves_again_when_its_socket_is_deleted(plugin_dir, kubelet, plugin):
    first = kubelet.next_register()
    assert first is not None, _log(plugin_dir)
    (plugin_dir / first.endpoint).unlink()      # kubelet wipes the folder on restart
    kubelet.stop()
    kubelet.start()
    assert kubelet.next_register() is not None, _log(plugin_dir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (plugin_dir / first.endpoint).is_socket():
        time.sleep(0.1)
    assert (plugin_dir / first.endpoint).is_socket()


def test_exits_cleanly_on_sigterm(plugin_dir, kubelet, plugin):
    req = kubelet.next_register()
    assert req is not None, _log(plugin_dir)
    plugin.send_signal(signal.SIGTERM)
    assert plugin.wait(10) == 0, _log(plugin_dir)
    assert not (plugin_dir / req.endpoint).exists()
    assert "stopping" in _log(plugin_dir)


def test_handshake_time_reads_back():
    import datetime as dt

    from clusterproof import gpu

    now = dt.datetime(2025, 1, 2, 3, 4, 5, 678900, tzinfo=dt.UTC)
    text = "Reported " + gpu_plugin.go_time(now)
    hs = gpu.parse_handshake(text, now + dt.timedelta(seconds=10))
    assert hs.state == "reported" and abs(hs.age_s - 10) < 0.01


def test_register_annotation_parses():
    from clusterproof import gpu

    devs = gpu_plugin.Devices("n", 2, 10, 16384, "Fake")
    parsed = gpu.parse_register(devs.register_annotation())
    assert [d.id for d in parsed] == devs.uuids and all(d.health and d.count == 10 for d in parsed)

