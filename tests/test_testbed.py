"""The testbed itself: a real cluster that answers, bad input refused cleanly, down leaves nothing.

The CLI is run as a subprocess where the CLI is what is tested (output, exit codes); the rest goes
through the Testbed API, and the two are checked to agree.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import testbed_cli
from testbed.api import ActiveFault, Testbed
from testbed.errors import TestbedError

pytestmark = pytest.mark.testbed


def kubectl(tb: dict, *args: str, timeout: float = 90, input: str | None = None) -> subprocess.CompletedProcess:
    from testbed.paths import bin_dir

    exe = bin_dir(tb["version"]) / "kubectl"
    return subprocess.run([str(exe), "--kubeconfig", tb["kubeconfig"], *args], capture_output=True, text=True,
                          timeout=timeout, input=input, check=False)


POD_AND_SERVICES = """
apiVersion: v1
kind: Pod
metadata: {name: probe, labels: {app: probe}}
spec:
  containers:
  - name: probe
    image: localhost/clusterproof/probe:1
    imagePullPolicy: Never
    command: [sh, -c, "echo probe-started; exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: web
    image: localhost/clusterproof/hello-python:1
    imagePullPolicy: Never
    ports: [{containerPort: 5000}]
    readinessProbe: {tcpSocket: {port: 5000}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 6000, targetPort: 5000}]
"""


@pytest.fixture
def scratch_ns(testbed):
    name = f"tb-selftest-{os.getpid()}"
    assert kubectl(testbed, "create", "namespace", name).returncode == 0
    yield name
    kubectl(testbed, "delete", "namespace", name, "--wait=false")


def test_status_reports_every_component_healthy(testbed):
    names = {(c["name"], c["node"]) for c in testbed["components"]}
    for node in ("tb-node-1", "tb-node-2"):
        for comp in ("containerd", "kubelet", "kube-proxy", "sshd", "node-ready"):
            assert (comp, node) in names
    assert {"etcd", "kube-apiserver", "coredns"} <= {n for n, _ in names}
    proc = testbed_cli("status")
    assert proc.returncode == 0
    assert len(proc.stdout.strip().splitlines()) == len(testbed["components"])


def test_nodes_ready_with_own_ips(testbed):
    out = json.loads(kubectl(testbed, "get", "nodes", "-o", "json").stdout)
    ips = {n["metadata"]["name"]: [a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"][0]
           for n in out["items"]}
    assert ips == {"tb-node-1": "198.19.0.11", "tb-node-2": "198.19.0.12"}
    for n in out["items"]:
        assert n["spec"]["podCIDR"].startswith("198.18.")


def test_pod_exec_logs_clusterip_and_nodeport(testbed, scratch_ns):
    ns = scratch_ns
    applied = kubectl(testbed, "-n", ns, "apply", "-f", "-", input=POD_AND_SERVICES)
    assert applied.returncode == 0, applied.stderr
    ready = kubectl(testbed, "-n", ns, "wait", "--for=condition=Ready", "pod/probe", "pod/web", "--timeout=90s")
    assert ready.returncode == 0, ready.stderr
    ex = kubectl(testbed, "-n", ns, "exec", "probe", "--", "cat", "/etc/hostname")
    assert ex.returncode == 0 and ex.stdout.strip() == "probe"
    assert "probe-started" in kubectl(testbed, "-n", ns, "logs", "probe").stdout
    svc = json.loads(kubectl(testbed, "-n", ns, "get", "svc", "web", "-o", "json").stdout)
    cip, nodeport = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    assert cip.startswith("198.19.24") or cip.startswith("198.19.25")
    # ClusterIP from a pod (by IP and by DNS name), retried only while kube-proxy programs the rule.
    deadline = time.monotonic() + 30
    body = ""
    while time.monotonic() < deadline and "Hello" not in body:
        body = kubectl(testbed, "-n", ns, "exec", "probe", "--", "python3", "-c",
                       "import urllib.request,sys;print(urllib.request.urlopen(sys.argv[1],timeout=3).read().decode())",
                       "http://web:6000/").stdout
        time.sleep(0.5)
    assert body.startswith("Hello World!") and "web" in body
    # NodePort from this machine, on every node's IP.
    for ip in ("198.19.0.11", "198.19.0.12"):
        with urllib.request.urlopen(f"http://{ip}:{nodeport}/", timeout=5) as r:
            assert r.read().decode().startswith("Hello World!")


def test_up_on_a_running_testbed_returns_in_seconds(testbed):
    t = time.monotonic()
    proc = testbed_cli("up")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t < 10
    assert "KUBECONFIG=" in proc.stdout


def test_fault_inject_and_heal_round_trip(testbed):
    assert testbed_cli("fault", "inject", "kube-proxy-stop", "--node", "tb-node-2").returncode == 0
    try:
        st = json.loads(testbed_cli("status", "--json").stdout)
        bad = {(c["name"], c["node"]) for c in st["components"] if not c["healthy"]}
        assert ("kube-proxy", "tb-node-2") in bad and not st["healthy"]
    finally:
        assert testbed_cli("fault", "heal", "kube-proxy-stop", "--node", "tb-node-2").returncode == 0
    assert json.loads(testbed_cli("status", "--json").stdout)["healthy"]


def test_api_and_cli_agree(testbed, testbed_api: Testbed):
    cli = json.loads(testbed_cli("status", "--json").stdout)
    api = testbed_api.status().to_json()
    assert [(c["name"], c["node"]) for c in api["components"]] == [(c["name"], c["node"]) for c in cli["components"]]
    for key in ("kubeconfig", "ssh_key", "version", "nodes"):
        assert api[key] == cli[key]
    assert testbed_api.kubeconfig() == Path(cli["kubeconfig"])
    assert testbed_cli("env").stdout.splitlines() == [f"export {k}={v}" for k, v in testbed_api.env().items()]
    assert testbed_api.env()["CLUSTERPROOF_GPU_PROBE_IMAGE"] == testbed_api.images()["gpu-probe"]
    listing = testbed_cli("fault", "list").stdout.splitlines()
    assert [f"{f.name:24} {f.description}" for f in testbed_api.faults()] == listing[:len(testbed_api.faults())]


def test_fault_context_heals_when_the_body_fails(testbed, testbed_api: Testbed):
    from testbed.state import bind_source, find_node

    fstab = bind_source(find_node("tb-node-2"), "/etc/fstab")  # a file only the host checks read
    clean = fstab.read_text()
    during = []

    def failing_body() -> None:
        with testbed_api.fault("fstab-swap", node="tb-node-2"):
            during.append((fstab.read_text(), testbed_api.active_faults()))
            raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError, match="the body failed"):
        failing_body()
    [(text, active)] = during
    assert text != clean and ActiveFault("fstab-swap", "tb-node-2") in active
    assert fstab.read_text() == clean
    assert ActiveFault("fstab-swap", "tb-node-2") not in testbed_api.active_faults()
    with pytest.raises(TestbedError, match="unknown fault") as err, testbed_api.fault("no-such-fault"):
        pass
    assert err.value.code == 2


@pytest.mark.parametrize(("args", "code", "words"), [
    (["up", "--version", "v1.99.0"], 3, "not available"),
    (["up", "--version", "latest"], 3, "not a Kubernetes release"),
    (["fault", "inject", "no-such-fault"], 2, "unknown fault"),
    (["fault", "inject", "sysctl", "--node", "tb-node-9"], 2, "no node"),
    (["up", "--nodes", "7"], 2, "from 1 to 6"),
    (["up", "--nodes", "two"], 2, "from 1 to 6"),
])
def test_bad_input_is_one_line_and_a_distinct_code(testbed, args, code, words):
    proc = testbed_cli(*args, timeout=120)
    assert proc.returncode == code, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err


def test_node_count_is_checked_and_recorded(monkeypatch, tmp_path):
    from testbed import state

    assert [state.check_node_count(n) for n in ("1", 6, "2")] == [1, 6, 2]
    for bad in ("0", "7", "-1", "2.5", ""):
        with pytest.raises(TestbedError, match="from 1 to 6") as err:
            state.check_node_count(bad)
        assert err.value.code == 2
    monkeypatch.setattr(state, "NODE_COUNT_FILE", tmp_path / "node-count")
    monkeypatch.setenv("CLUSTERPROOF_TESTBED_NODES", "3")
    assert state.node_count() == 3 and [n.name for n in state.nodes()][-1] == "tb-node-3"   # before any up
    (tmp_path / "node-count").write_text("4\n")
    assert state.node_count() == 4                                                          # what up recorded
    monkeypatch.setenv("CLUSTERPROOF_TESTBED_NODES", "9")
    with pytest.raises(TestbedError, match="CLUSTERPROOF_TESTBED_NODES"):
        state.default_node_count()


def test_not_root_and_busy_port_are_refused(monkeypatch):
    from testbed import startup

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TestbedError) as err:
        startup.preflight("v1.35.4")
    assert err.value.code == 2 and "root" in str(err.value)
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        busy = startup.ports_in_use({port: "test"})
    finally:
        s.close()
    assert busy == [f"{port} (test)"]


def _leftovers(before_links: set[str]) -> list[str]:
    from testbed import net
    from testbed.paths import RUN, STATE

    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n}" for n in ("tb-node-1", "tb-node-2") if n in netns]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {x}" for x in (net.BRIDGE, "tbveth1", "tbveth2") if f" {x}:" in links or f" {x}@" in links]
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    found += [f"route {r}" for r in routes.splitlines() if "via 198.19.0.1" in r or "cpbr0" in r]
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    found += [f"iptables {r}" for r in rules.splitlines() if "clusterproof" in r]
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {m.split()[4]}" for m in mounts.splitlines() if str(STATE) in m or "tb-node" in m]
    found += [f"path {p}" for p in (STATE, RUN) if p.exists()]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*/tb-node-*")]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cg = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue  # a zombie waits for its parent to reap it; it holds nothing
        if str(STATE) in cmd or "tb-node-" in cg or "containerd-shim" in cmd:
            found.append(f"process {pid} {cmd[:80]}")
    return found


@pytest.mark.lifecycle
def test_down_leaves_nothing_behind_and_up_comes_back(testbed):
    t = time.monotonic()
    down = testbed_cli("down", timeout=300)
    took_down = time.monotonic() - t
    assert down.returncode == 0, down.stderr
    assert _leftovers(set()) == []
    t = time.monotonic()
    up = testbed_cli("up", timeout=900)   # the default: kubeadm's testbed (the next test runs the suite on it)
    took_up = time.monotonic() - t
    assert up.returncode == 0, up.stderr
    st = json.loads(testbed_cli("status", "--json").stdout)
    assert st["healthy"] and st["bootstrap"] == "kubeadm", st
    print(f"down {took_down:.1f}s, warm up {took_up:.1f}s")


@pytest.mark.lifecycle
def test_kubeadm_bootstrap_comes_up_as_the_course_installs_and_the_suite_passes_on_it(testbed, tmp_path):
    """`up --bootstrap kubeadm`: kubeadm init on tb-node-1 and join on tb-node-2 (static control-plane pods from
    images built here, kubeadm-config, the control-plane role and taint, each kubelet's CRI socket), and the whole
    suite (bin/clusterproof, as the README runs it) passes on it; then the default testbed comes back."""
    root = Path(__file__).resolve().parent.parent
    try:
        t = time.monotonic()
        up = testbed_cli("up", "--bootstrap", "kubeadm", timeout=900)
        took = time.monotonic() - t
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        st = json.loads(testbed_cli("status", "--json").stdout)
        assert st["healthy"] and st["bootstrap"] == "kubeadm" and st["cni"] == "kube-router", st
        cm = kubectl(st, "-n", "kube-system", "get", "configmap", "kubeadm-config", "-o", "json")
        assert cm.returncode == 0, cm.stderr
        cluster_cfg = json.loads(cm.stdout)["data"]["ClusterConfiguration"]
        assert "podSubnet: 198.18.0.0/16" in cluster_cfg and "imageRepository: localhost/clusterproof" in cluster_cfg
        listed = json.loads(kubectl(st, "get", "nodes", "-o", "json").stdout)["items"]
        nodes = {n["metadata"]["name"]: n for n in listed}
        control = nodes["tb-node-1"]
        assert "node-role.kubernetes.io/control-plane" in control["metadata"]["labels"]
        assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in control["spec"]["taints"]
        # kubeadm 1.35 no longer writes the kubeadm.alpha.kubernetes.io/cri-socket annotation (only clusters
        # upgraded from old releases carry it; CRI-004 reads it there): each node's kubelet gets the socket in
        # kubeadm-flags.env
        for name in nodes:
            flags = (Path("/var/lib/clusterproof-testbed/nodes") / name / "root" / "var-lib-kubelet" /
                     "kubeadm-flags.env").read_text()
            assert "--container-runtime-endpoint=unix:///run/containerd/containerd.sock" in flags or \
                "containerRuntimeEndpoint" in (Path("/var/lib/clusterproof-testbed/nodes") / name / "root" /
                                               "var-lib-kubelet" / "config.yaml").read_text(), flags
        pods = json.loads(kubectl(st, "-n", "kube-system", "get", "pods", "-l", "tier=control-plane", "-o",
                                  "json").stdout)["items"]
        assert sorted(p["metadata"]["labels"]["component"] for p in pods) == [
            "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
        assert all(p["metadata"]["annotations"].get("kubernetes.io/config.source") == "file" for p in pods)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        run = subprocess.run(["bin/clusterproof", "-p", "no:cacheprovider", f"--report-dir={tmp_path}"], cwd=root,
                             capture_output=True, text=True, timeout=900, env=env, check=False)
        summary = json.loads((tmp_path / "summary.json").read_text())
        failed = {c["id"]: c.get("verdict") for c in summary["checks"] if c["outcome"] in ("failed", "error")}
        assert run.returncode == 0 and not failed, (failed, run.stdout[-3000:])
        ran = {c["id"] for c in summary["checks"] if c["outcome"] == "passed"}
        assert {"CP-001", "CP-002", "CP-003", "CP-004", "CNI-001", "NODE-001", "APP-004"} <= ran, sorted(ran)
        print(f"kubeadm up {took:.1f}s")
    finally:
        back = testbed_cli("up", "--bootstrap", "processes", timeout=900)
    assert back.returncode == 0, back.stderr
    assert json.loads(testbed_cli("status", "--json").stdout)["bootstrap"] == "processes"


@pytest.mark.lifecycle
def test_bridge_cni_comes_up_and_the_network_checks_pass_on_it(testbed, tmp_path):
    """`up --cni bridge` replaces kube-router with the config-file bridge CNI (routes set by the testbed), and the
    network area passes there with CNI-001 skipped (no agent pods); then the default testbed comes back."""
    import nshosts

    try:
        up = testbed_cli("up", "--cni", "bridge", "--bootstrap", "processes", timeout=900)
        assert up.returncode == 0, up.stderr
        st = json.loads(testbed_cli("status", "--json").stdout)
        assert st["healthy"] and st["cni"] == "bridge", st
        run = nshosts.run_suite("--kubeconfig", st["kubeconfig"], "--ssh-key", st["ssh_key"], "suites/network",
                                report_dir=tmp_path, timeout=600)
        outcomes = {name: v.outcome for name, v in run.verdicts.items()}
        assert outcomes and set(outcomes.values()) <= {"passed", "skipped"}, run.stdout[-3000:]
        assert outcomes["test_cni_agents_ready_on_every_node"] == "skipped"
        why = run.verdicts["test_cni_agents_ready_on_every_node"].message
        assert "no CNI agent DaemonSet found" in why and "config-file CNI" in why
        assert outcomes["test_pod_to_pod_between_every_node_pair"] == "passed"
    finally:
        back = testbed_cli("up", "--cni", "kube-router", "--bootstrap", "processes", timeout=900)
    assert back.returncode == 0, back.stderr
    assert json.loads(testbed_cli("status", "--json").stdout)["cni"] == "kube-router"

