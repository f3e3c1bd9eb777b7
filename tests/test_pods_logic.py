"""Pod helpers without a cluster: namespace link parsing, pull-error messages, labels, probe pod placement."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client

from clusterproof import cri, facts, podns, pods, runid
from clusterproof.verdict import Status
from clusterproof.wait import WaitTimeout

NODE_OUTPUT = """sandbox 44c28d32bb87
pause 16023 net:[4026532324] ipc:[4026532397] uts:[4026532396] mnt:[4026532395] pid:[4026532398]
container app 16238 net:[4026532324] ipc:[4026532397] uts:[4026532396] mnt:[4026532549] pid:[4026532551]
container sidecar 16374 net:[4026532999] ipc:[4026532397] uts:[4026532396] mnt:[4026532554] pid:[4026532555]
# ls -l /proc/16023/ns
lrwxrwxrwx 1 root root 0 Aug 10 16:14 ipc -> ipc:[4026532397]
"""


def test_node_output_pause_vs_containers() -> None:
    pause, containers, pids = podns.parse_node_output(NODE_OUTPUT)
    assert pause is not None
    assert pause["net"] == "4026532324" and pids == {"pause": "16023", "app": "16238", "sidecar": "16374"}
    assert podns.compare(pause, containers["app"], podns.SHARED) == []
    assert podns.compare(pause, containers["sidecar"], podns.SHARED) == ["net"]
    assert podns.compare(pause, containers["app"], ("mnt",)) == ["mnt"]


def test_course_ls_output_parses() -> None:
    text = "lrwxrwxrwx 1 root root 0 Aug 10 15:33 mnt -> mnt:[4026532592]\n" \
           "lrwxrwxrwx 1 root root 0 Aug 10 15:33 net -> net:[4026532516]\n"
    assert podns.parse_links(text) == {"mnt": "4026532592", "net": "4026532516"}
    assert "--namespace '^ns$'" in podns.node_script("ns", "share-0", "/run/containerd/containerd.sock")


def _waiting_pod(reason: str, image: str = "localhost/clusterproof/probe:1") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="probe-0", namespace="ns"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="probe", image=image)]),
        status=client.V1PodStatus(phase="Pending", container_statuses=[client.V1ContainerStatus(
            name="probe", image=image, image_id="", ready=False, restart_count=0,
            state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(
                reason=reason, message=f'failed to pull "{image}": not found')))]))


def test_pull_error_names_image_and_option() -> None:
    msg = pods.pod_problem(_waiting_pod("ErrImageNeverPull"), {"localhost/clusterproof/probe:1": "--probe-image"})
    assert msg is not None
    assert "ErrImageNeverPull" in msg and "localhost/clusterproof/probe:1" in msg and "--probe-image" in msg
    assert pods.pod_problem(_waiting_pod("ContainerCreating")) is None
    assert "CrashLoopBackOff" in (pods.pod_problem(_waiting_pod("CrashLoopBackOff")) or "")


def test_labelled_and_affinity() -> None:
    run = {"run": "20260101-abc123", "holder": "h:1"}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}}}}
    out = pods.labelled(dep, run)
    assert out["metadata"]["labels"][runid.LABEL_RUN] == run["run"]
    assert out["spec"]["template"]["metadata"]["labels"] == {"app": "d", runid.LABEL_OWNED: "true",
                                                             runid.LABEL_RUN: run["run"]}
    assert "labels" not in dep["metadata"]  # the caller's dict is not changed
    p = pods.probe_pod("probe-0", "tb-node-1", "img", run, pin="affinity", hostname="host-1", serve=True)
    assert "nodeName" not in p["spec"]
    term = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["host-1"]
    assert p["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["port"] == pods.SERVE_PORT
    assert pods.probe_pod("p", "tb-node-1", "img", run)["spec"]["nodeName"] == "tb-node-1"


def test_tcp_script_has_no_wget_timeout_flag() -> None:
    text = pods.tcp_script("10.0.0.1", 80, 2)
    assert "nc -z -w 2 10.0.0.1 80" in text and "wget -T" not in text


def test_probe_from_this_machine_ignores_proxy_settings(monkeypatch) -> None:
    """A NodePort answering through HTTP(S)_PROXY would prove the proxy, not the node: the proxy is bypassed."""
    import http.server
    import threading

    from clusterproof import pods as pods_mod

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the node")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(var, "http://127.0.0.1:9")   # nothing listens there
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        res = pods_mod.http_get_local(f"http://127.0.0.1:{server.server_port}/", 2, 5)
        assert (res.outcome, res.body) == ("ok", "hello from the node")
    finally:
        server.shutdown()
    script = pods_mod.http_script("http://198.18.0.5:5000/", 2, 5)
    assert "--noproxy '*'" in script and "ProxyHandler({})" in script and "wget -Y off" in script


def test_a_pod_the_scheduler_refuses_is_a_dead_end_after_a_grace() -> None:
    import datetime as dt

    from kubernetes import client

    from clusterproof import pods as pods_mod

    t0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    cond = client.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable",
                                 message="0/2 nodes are available: 2 node(s) had untolerated taint",
                                 last_transition_time=t0)
    pod = client.V1Pod(status=client.V1PodStatus(phase="Pending", conditions=[cond]))
    assert pods_mod.unschedulable(pod, t0.timestamp() + 5, 15) is None
    why = pods_mod.unschedulable(pod, t0.timestamp() + 20, 15)
    assert why is not None and why.startswith("unschedulable for 20s: 0/2 nodes are available")
    cond.status = "True"
    assert pods_mod.unschedulable(pod, t0.timestamp() + 60, 15) is None


# A crictl that answers only on the endpoint it is told (WANT): a sandbox, two containers (app, sidecar), and
# this test's own PID for each, so /proc/PID/ns is real. Every call is logged to LOG.
FAKE_CRICTL = """#!/bin/sh
echo "$*" >> "$LOG"
[ "$1" = --runtime-endpoint ] && [ "$2" = "unix://$WANT" ] || { echo "connect: no such file or directory" >&2; exit 1; }
shift 4
case "$1" in
  pods) echo sb-1 ;;
  inspectp) echo "$PID" ;;
  ps) echo c-app; echo c-sidecar ;;
  inspect) case "$5" in *metadata.name*) echo "${6#c-}" ;; *) echo "$PID" ;; esac ;;
esac
"""


def _node_run(tmp_path: Path, endpoint: str, want: str) -> subprocess.CompletedProcess:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    (folder / "crictl").write_text(FAKE_CRICTL)
    (folder / "crictl").chmod(0o755)
    env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "LOG": str(tmp_path / "calls"), "WANT": want,
           "PID": str(os.getpid())}
    return subprocess.run(["sh", "-c", podns.node_script("cp-pods-1", "share-0", endpoint)], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def test_pod003_asks_crictl_on_the_socket_cri001_found(tmp_path: Path) -> None:
    """The node annotates a socket crictl would not guess (k3s's): every crictl call names it, and the
    sandbox's pause process and both containers are found."""
    node = facts.node_facts(client.V1Node(
        metadata=client.V1ObjectMeta(name="n1", annotations={
            facts.CRI_SOCKET_ANNOTATION: "unix:///run/k3s/containerd/containerd.sock"}),
        spec=client.V1NodeSpec(), status=client.V1NodeStatus()))
    asked: list[str] = []

    def file_types(paths: list[str]) -> dict[str, str]:
        asked.extend(paths)
        return dict.fromkeys(paths, "socket")

    sock, types = cri.find_socket(node.cri_socket, file_types)
    assert asked == ["/run/k3s/containerd/containerd.sock"] and sock.path == asked[0] and types == {asked[0]: "socket"}
    assert cri.judge_socket("n1", sock).status == Status.PASS          # what CRI-001 judges on the same lookup
    res = _node_run(tmp_path, sock.path or "", want="/run/k3s/containerd/containerd.sock")
    assert res.returncode == 0, res.stdout + res.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 7 and all(c.startswith("--runtime-endpoint unix:///run/k3s/containerd/containerd.sock "
                                                "--timeout 10s ") for c in calls)
    pause, containers, pids = podns.parse_node_output(res.stdout)
    assert pause is not None and pause["net"] and sorted(containers) == ["app", "sidecar"]
    assert pids == {"pause": str(os.getpid()), "app": str(os.getpid()), "sidecar": str(os.getpid())}
    v = podns.judge_pause("pod cp-pods-1/share-0 on n1", pause, containers, pids, ("app", "sidecar"))
    assert v.status == Status.PASS and v.observed == "2 containers share the pause process's net, ipc, uts"
    # without an annotation the socket is the one found at the known runtime paths (containerd's here)
    sock, _ = cri.find_socket(None, lambda paths: {p: "socket" if p == "/var/run/containerd/containerd.sock"
                                                   else "missing" for p in paths})
    assert sock.path == "/var/run/containerd/containerd.sock"
    assert "--runtime-endpoint unix:///var/run/containerd/containerd.sock " in podns.node_script("ns", "p", sock.path)


def test_pod003_on_another_socket_finds_no_sandbox(tmp_path: Path) -> None:
    res = _node_run(tmp_path, "/run/containerd/containerd.sock", want="/run/k3s/containerd/containerd.sock")
    assert res.returncode == 4 and res.stdout.strip() == "no ready sandbox"


def test_pod003_needs_both_containers_and_their_namespaces() -> None:
    pause, containers, pids = podns.parse_node_output(NODE_OUTPUT)
    one = {"app": containers["app"]}
    v = podns.judge_pause("pod ns/share-0 on n1", pause, one, pids, ("app", "sidecar"))
    assert v.status == Status.FAIL and v.observed == "pause found, containers ['app'] (sidecar missing)"
    v = podns.judge_pause("pod ns/share-0 on n1", None, containers, pids, ("app", "sidecar"))
    assert v.status == Status.FAIL and v.observed.startswith("pause not found")
    v = podns.judge_pause("pod ns/share-0 on n1", pause, containers, pids, ("app", "sidecar"))
    assert v.status == Status.FAIL
    assert v.rows == ("net: pause (pid 16023) 4026532324 vs sidecar (pid 16374) 4026532999",)


# Pods as the API server returned them while the hello-python image was missing (kubelet's messages as recorded
# on the testbed with containerd 1.7), while a container crash-looped, and after a pull that healed.
MISSING = "docker.io/library/hello-python:missing"
PULL_MSG = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{MISSING}": failed to resolve '
            f'reference "{MISSING}": {MISSING}: not found')


def _recorded(reason: str | None, message: str = "", image: str = MISSING, restarts: int = 0,
              last_exit: int | None = None) -> client.V1Pod:
    state = (client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason=reason, message=message))
             if reason else client.V1ContainerState(running=client.V1ContainerStateRunning()))
    last = (client.V1ContainerState(terminated=client.V1ContainerStateTerminated(exit_code=last_exit, reason="Error"))
            if last_exit is not None else None)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="hello-python-7d9c5b6f4-x2x8k", namespace="cp-apps-1"),
        spec=client.V1PodSpec(node_name="tb-node-2", containers=[client.V1Container(name="hello-python", image=image)]),
        status=client.V1PodStatus(phase="Pending" if reason else "Running", container_statuses=[
            client.V1ContainerStatus(name="hello-python", image=image, image_id="", ready=False,
                                     restart_count=restarts, state=state, last_state=last)]))


def test_a_missing_image_fails_after_a_short_observation() -> None:
    watch = pods.StartWatch(15.0, {MISSING: "--hello-image"})
    assert watch.check(_recorded("ErrImagePull", PULL_MSG), 100.0) is None
    assert watch.check(_recorded("ImagePullBackOff", f'Back-off pulling image "{MISSING}"'), 110.0) is None
    msg = watch.check(_recorded("ImagePullBackOff", f'Back-off pulling image "{MISSING}"'), 115.0)
    assert msg is not None
    assert msg.startswith(f"container hello-python ({MISSING}): ImagePullBackOff Back-off pulling image")
    assert f"node tb-node-2 cannot pull image {MISSING}" in msg
    assert "ctr -n k8s.io images import IMAGE.tar" in msg and "or pass --hello-image" in msg
    assert msg.endswith("(still so after 15s)")


def test_a_pull_that_heals_is_not_a_failure() -> None:
    watch = pods.StartWatch(15.0)
    assert watch.check(_recorded("ErrImagePull", "i/o timeout"), 0.0) is None
    assert watch.check(_recorded(None), 8.0) is None                    # the kubelet's retry pulled it
    assert watch.check(_recorded("ErrImagePull", "i/o timeout"), 20.0) is None   # observed afresh
    assert watch.check(_recorded("ErrImagePull", "i/o timeout"), 34.0) is None
    assert watch.check(_recorded("ErrImagePull", "i/o timeout"), 35.0) is not None


def test_start_errors_that_cannot_heal_fail_at_once_and_each_says_its_fix() -> None:
    bad = pods.StartWatch(15.0).check(_recorded("InvalidImageName", 'invalid reference format', "Hello:Py"), 0.0)
    assert bad is not None and "'Hello:Py' is not a valid image reference" in bad
    never = pods.StartWatch(15.0).check(_recorded("ErrImageNeverPull", "not present with pull policy of Never"), 0.0)
    assert never is not None and "is not on node tb-node-2 and imagePullPolicy is Never" in never
    crash = pods.StartWatch(15.0)
    looping = _recorded("CrashLoopBackOff", "back-off 10s restarting failed container", "hello:1", 2, 1)
    assert crash.check(looping, 0.0) is None
    msg = crash.check(looping, 15.0)
    assert msg is not None and "CrashLoopBackOff" in msg and "(last exit 1, Error)" in msg
    assert "kubectl -n cp-apps-1 logs hello-python-7d9c5b6f4-x2x8k -c hello-python --previous" in msg
    config = pods.pod_problem(_recorded("CreateContainerConfigError", 'configmap "hello-env" not found', "hello:1"))
    assert config is not None and "create the ConfigMap/Secret" in config


def test_a_rollout_with_a_missing_image_stops_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """wait_running on a pod that stays in ImagePullBackOff gives up after the short grace, not the 60 s timeout."""

    class Core:
        def read_namespaced_pod(self, name, namespace, _request_timeout=None):
            return _recorded("ImagePullBackOff", f'Back-off pulling image "{MISSING}"')

    monkeypatch.setattr(pods, "START_GRACE", 1.0)
    start = time.monotonic()
    with pytest.raises(WaitTimeout) as exc:
        pods.wait_running(Core(), "cp-apps-1", ["hello-python-7d9c5b6f4-x2x8k"], timeout=60,
                          image_options={MISSING: "--hello-image"})
    assert time.monotonic() - start < 5
    assert str(exc.value).startswith("gave up waiting for pods hello-python-7d9c5b6f4-x2x8k in cp-apps-1 to run: pod "
                                     "cp-apps-1/hello-python-7d9c5b6f4-x2x8k on tb-node-2: container hello-python "
                                     f"({MISSING}): ImagePullBackOff")
    assert "--hello-image" in str(exc.value)


# A pod on a node whose kubelet (cgroupDriver systemd) and containerd (SystemdCgroup = false) disagree, as the API
# server returned it on the testbed (cgroup-driver-mismatch): the pod only says ContainerCreating, its events say why.
SANDBOX_MSG = ('Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: '
               'failed to create shim task: OCI runtime create failed: runc create failed: expected cgroupsPath to be '
               'of format "slice:prefix:name" for systemd cgroups, got "/kubepods/besteffort/pod5f0c7e1a-2b7d-'
               '4a8e-9c3f-0d6e1b2a3c4d/0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9" '
               'instead: unknown')
POD_UID = "5f0c7e1a-2b7d-4a8e-9c3f-0d6e1b2a3c4d"


def _creating(running: bool = False) -> client.V1Pod:
    import datetime as dt

    t0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
    state = (client.V1ContainerState(running=client.V1ContainerStateRunning(started_at=t0)) if running else
             client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason="ContainerCreating")))
    conditions = [client.V1PodCondition(type=t, status="True" if running or t in ("PodScheduled", "Initialized")
                                        else "False", last_transition_time=t0)
                  for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="probe-pod-1", namespace="cp-pods-1", uid=POD_UID),
        spec=client.V1PodSpec(node_name="tb-node-1", containers=[client.V1Container(name="probe", image="probe:1")]),
        status=client.V1PodStatus(phase="Running" if running else "Pending", host_ip="198.18.0.11",
                                  pod_ip="10.244.1.7" if running else None, conditions=conditions,
                                  container_statuses=[client.V1ContainerStatus(
                                      name="probe", image="probe:1", image_id="", ready=running, restart_count=0,
                                      state=state)]))


def _sandbox_event(count: int = 7, span: float = 45.0, uid: str = POD_UID,
                   message: str = SANDBOX_MSG) -> client.CoreV1Event:
    import datetime as dt

    first = dt.datetime(2026, 11, 28, 9, 0, 2, tzinfo=dt.UTC)
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="probe-pod-1.187c0a1b2c3d4e5f", namespace="cp-pods-1"),
        involved_object=client.V1ObjectReference(kind="Pod", name="probe-pod-1", namespace="cp-pods-1", uid=uid,
                                                 api_version="v1"),
        reason="FailedCreatePodSandBox", type="Warning", message=message, count=count,
        first_timestamp=first, last_timestamp=first + dt.timedelta(seconds=span),
        source=client.V1EventSource(component="kubelet", host="tb-node-1"))


class _EventsCore:
    """list_namespaced_event as the API answers it (or fails), counting the calls and their selectors."""

    def __init__(self, events: list | None = None, error: Exception | None = None):
        self.events, self.error, self.calls = events or [], error, []

    def list_namespaced_event(self, namespace, field_selector=None, _request_timeout=None):
        self.calls.append((namespace, field_selector))
        if self.error is not None:
            raise self.error
        return client.CoreV1EventList(items=self.events)


def test_a_sandbox_the_runtime_cannot_create_fails_after_the_grace() -> None:
    normal = client.CoreV1Event(metadata=client.V1ObjectMeta(name="e0"), reason="Scheduled", type="Normal",
                                involved_object=client.V1ObjectReference(kind="Pod", name="probe-pod-1", uid=POD_UID),
                                message="Successfully assigned cp-pods-1/probe-pod-1 to tb-node-1", count=1)
    core = _EventsCore([normal, _sandbox_event(message=SANDBOX_MSG + "\nsecond line")])
    watch = pods.StartWatch(15.0, core_v1=core)
    assert watch.check(_creating(), 100.0) is None
    assert watch.check(_creating(), 110.0) is None
    assert core.calls == []                       # no events listed before the grace
    msg = watch.check(_creating(), 116.0)
    assert core.calls == [("cp-pods-1", "involvedObject.name=probe-pod-1")]
    assert msg is not None
    assert msg.startswith("FailedCreatePodSandBox on node tb-node-1 (7 times over 45s): Failed to create pod sandbox: ")
    assert 'expected cgroupsPath to be of format "slice:prefix:name"' in msg and "second line" not in msg
    shown = msg.split(": ", 1)[1].split("; the container runtime")[0]
    assert len(shown) == 300 and shown == SANDBOX_MSG[:300]
    assert "journalctl -u containerd" in msg and "HOST-014" in msg and "CNI-002" in msg
    assert msg.endswith("(no sandbox after 16s)")


def test_a_sandbox_error_shorter_than_the_grace_is_not_a_failure() -> None:
    core = _EventsCore([_sandbox_event(count=1, span=0)])    # the first try only (the CNI may come up)
    watch = pods.StartWatch(15.0, core_v1=core)
    assert watch.check(_creating(), 0.0) is None
    assert watch.check(_creating(), 15.0) is None          # waited the grace: listed, the error is new
    assert watch.check(_creating(), 17.0) is None          # listed at most once per EVENTS_EVERY
    assert len(core.calls) == 1
    assert watch.check(_creating(), 21.0) is None and len(core.calls) == 2
    assert watch.check(_creating(), 29.0) is None          # seen for 14s
    msg = watch.check(_creating(), 30.0)                   # seen for the grace (cached listing)
    assert msg is not None and "(1 time): Failed to create pod sandbox" in msg
    # an event of an earlier pod of the same name is not this pod's
    other = pods.StartWatch(15.0, core_v1=_EventsCore([_sandbox_event(uid="0000-earlier-pod")]))
    assert other.check(_creating(), 0.0) is None and other.check(_creating(), 20.0) is None


def test_a_pod_that_runs_despite_an_old_sandbox_error_is_fine() -> None:
    core = _EventsCore([_sandbox_event()])
    watch = pods.StartWatch(15.0, core_v1=core)
    assert watch.check(_creating(), 0.0) is None
    assert watch.check(_creating(running=True), 20.0) is None
    assert watch.check(_creating(running=True), 60.0) is None
    assert core.calls == []                                 # a running pod's events are never listed
    assert watch.check(_creating(), 61.0) is None           # stuck again: watched afresh


def test_an_event_listing_error_only_means_no_early_answer() -> None:
    from kubernetes.client.exceptions import ApiException

    core = _EventsCore(error=ApiException(status=403, reason="Forbidden"))
    watch = pods.StartWatch(15.0, core_v1=core)
    assert watch.check(_creating(), 0.0) is None
    for t in (15.0, 16.0, 20.0, 25.0, 60.0):
        assert watch.check(_creating(), t) is None
    assert len(core.calls) == 4                             # not at 16: bounded, never raised
    assert pods.StartWatch(15.0).check(_creating(), 99.0) is None   # without a CoreV1Api: as before


def test_wait_running_stops_on_a_failing_sandbox_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    class Core(_EventsCore):
        def read_namespaced_pod(self, name, namespace, _request_timeout=None):
            return _creating()

    monkeypatch.setattr(pods, "START_GRACE", 1.0)
    start = time.monotonic()
    with pytest.raises(WaitTimeout) as exc:
        pods.wait_running(Core([_sandbox_event()]), "cp-pods-1", ["probe-pod-1"], timeout=60)
    assert time.monotonic() - start < 5
    assert str(exc.value).startswith("gave up waiting for pods probe-pod-1 in cp-pods-1 to run: pod "
                                     "cp-pods-1/probe-pod-1 on tb-node-1: FailedCreatePodSandBox on node tb-node-1 "
                                     "(7 times over 45s): Failed to create pod sandbox")


def _failed(owner: str | None, deleting: bool) -> client.V1Pod:
    import datetime as dt

    pod = _recorded(None)
    pod.status.phase = "Failed"
    if owner:
        pod.metadata.owner_references = [client.V1OwnerReference(api_version="apps/v1", kind=owner, name="x", uid="1")]
    if deleting:
        pod.metadata.deletion_timestamp = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    return pod


def test_a_pod_going_away_or_replaced_by_its_controller_is_no_start_problem() -> None:
    """A rolling update's old pod turns Failed as it stops; an evicted ReplicaSet pod is replaced: neither may end a
    rollout. A bare pod that failed still does."""
    assert pods.pod_problem(_failed("ReplicaSet", deleting=True)) is None
    assert pods.pod_problem(_failed(None, deleting=True)) is None
    assert pods.pod_problem(_failed("ReplicaSet", deleting=False)) is None
    assert pods.pod_problem(_failed("DaemonSet", deleting=False)) is None
    assert pods.pod_problem(_failed(None, deleting=False)) == "phase Failed:"
    assert pods.StartWatch(15.0).check(_failed("ReplicaSet", deleting=True), 100.0) is None


def test_pod_state_names_an_init_container_that_cannot_start() -> None:
    """A CNI agent whose installer cannot start stays Pending: the line says which container and why."""
    pod = client.V1Pod(status=client.V1PodStatus(
        phase="Pending",
        init_container_statuses=[client.V1ContainerStatus(
            name="install-cni", image="kube-router", image_id="", ready=False, restart_count=0,
            state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason="ErrImageNeverPull")))],
        container_statuses=[client.V1ContainerStatus(
            name="kube-router", image="kube-router", image_id="", ready=False, restart_count=0,
            state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason="PodInitializing")))]))
    assert pods.pod_state(pod) == ("Pending, init container install-cni ErrImageNeverPull, "
                                   "kube-router PodInitializing, not ready")
