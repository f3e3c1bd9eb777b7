"""hello-python judgements (clusterproof.apps) on plain kubernetes objects and probe results, no cluster."""
from __future__ import annotations

import datetime as dt

from kubernetes import client

from clusterproof import apps, facts, pods
from clusterproof.pods import HttpResult

NOW = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
SERVICE = "cp-apps/hello-python"


def v1node(name: str = "x", ready: str = "True", reason: str = "KubeletReady", message: str = "",
           ip: str | None = "10.0.0.1") -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name), spec=client.V1NodeSpec(),
        status=client.V1NodeStatus(
            addresses=[client.V1NodeAddress(type="InternalIP", address=ip)] if ip else None,
            conditions=[client.V1NodeCondition(type="Ready", status=ready, reason=reason, message=message)]))


def deployment(replicas=4, ready=4, updated=4, available=4, pods=4, generation=2, observed=2, conditions=None):
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="hello-python", generation=generation),
        spec=client.V1DeploymentSpec(replicas=replicas, selector=client.V1LabelSelector(),
                                     template=client.V1PodTemplateSpec()),
        status=client.V1DeploymentStatus(replicas=pods, ready_replicas=ready, updated_replicas=updated,
                                         available_replicas=available, observed_generation=observed,
                                         conditions=conditions))


def pod(name="hello-1", ip="198.18.0.5", node="n1", ready=True, started=None, waiting=None, deleting=False):
    state = client.V1ContainerState(
        running=client.V1ContainerStateRunning(started_at=started) if started else None,
        waiting=client.V1ContainerStateWaiting(reason=waiting, message="pull access denied") if waiting else None)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, deletion_timestamp=NOW if deleting else None),
        spec=client.V1PodSpec(node_name=node, containers=[client.V1Container(name="hello-python", image="hello:1")]),
        status=client.V1PodStatus(phase="Running" if started else "Pending", pod_ip=ip, conditions=[
            client.V1PodCondition(type="Ready", status="True" if ready else "False")],
            container_statuses=[client.V1ContainerStatus(name="hello-python", image="hello:1", image_id="",
                                                         ready=ready, restart_count=0, state=state)]))


def http(outcome="ok", body="Hello World!\nHostname: hello-1\n", detail="answered", url="http://10.0.0.1:6000/"):
    return HttpResult(outcome, body, detail, "pod ns/probe", url, "evidence")


def test_ready_nodes_from_the_snapshot_say_why_a_node_is_left_out() -> None:
    nodes = [facts.node_facts(v1node("n1")), facts.node_facts(v1node("n2", "False", "KubeletNotReady", "PLEG down")),
             facts.node_facts(v1node("n3", ip=None))]
    ready, left_out = apps.ready_nodes(nodes)
    assert ready == {"n1": "10.0.0.1"}
    assert left_out == ["n2: Ready=False (KubeletNotReady: PLEG down)", "n3: no InternalIP in status.addresses"]


def test_judge_probes_names_the_left_out_nodes_when_none_was_probed() -> None:
    v = apps.judge_probes("Service x", [], "answers", "fix", ["n2: Ready=False (KubeletNotReady: PLEG down)"])
    assert v.status == "error" and "left out: n2: Ready=False (KubeletNotReady: PLEG down)" in v.message


def test_rollout_complete() -> None:
    assert apps.rollout_complete(deployment())
    assert not apps.rollout_complete(deployment(ready=3, available=3))
    assert not apps.rollout_complete(deployment(observed=1))          # the controller has not seen the spec yet
    assert not apps.rollout_complete(deployment(pods=5, updated=4))   # an old pod still around
    assert apps.rollout_text(deployment(ready=3)) == "3/4 ready, 4/4 updated, 4 available, 4 pods"


def test_rollout_dead_ends() -> None:
    assert apps.rollout_dead_end(deployment(), [pod()]) is None
    pull = apps.rollout_dead_end(deployment(), [pod(waiting="ErrImagePull", ready=False)])
    assert pull is not None and pull.startswith("pod hello-1 on n1: container hello-python (hello:1): ErrImagePull")
    # as the rollout waits: the pull error must last the watch's grace first
    watch = pods.StartWatch(15.0, {"hello:1": "--hello-image"})
    assert apps.rollout_dead_end(deployment(), [pod(waiting="ErrImagePull", ready=False)], watch, 50.0) is None
    later = apps.rollout_dead_end(deployment(), [pod(waiting="ImagePullBackOff", ready=False)], watch, 65.0)
    assert later is not None and later.startswith("pod hello-1 on n1: container hello-python (hello:1): "
                                                  "ImagePullBackOff pull access denied; node n1 cannot pull image")
    assert "--hello-image" in later and later.endswith("(still so after 15s)")
    late = deployment(conditions=[client.V1DeploymentCondition(type="Progressing", status="False",
                                                               reason="ProgressDeadlineExceeded", message="too slow")])
    assert apps.rollout_dead_end(late, []) == "deployment hello-python: too slow"


def test_never_ready() -> None:
    started = NOW - dt.timedelta(seconds=100)
    stuck = pod("stuck", ready=False, started=started)
    assert apps.never_ready([pod(started=started), stuck], NOW.timestamp(), grace=45) == (stuck, 100.0)
    assert apps.never_ready([stuck], NOW.timestamp(), grace=120) is None
    assert apps.never_ready([pod("going", ready=False, started=started, deleting=True)], NOW.timestamp(), 45) is None


def test_ready_pods_and_summary() -> None:
    plist = [pod("a", "198.18.0.5", "n1"), pod("b", "198.18.0.6", "n2", ready=False),
             pod("c", "198.18.0.7", "n2", deleting=True), pod("d", None, "n1")]
    assert apps.ready_pods(plist) == {"a": ("198.18.0.5", "n1")}
    assert apps.pod_summary(pod("b", ready=False, started=NOW)) == "Running, not ready"


def test_endpoint_ips() -> None:
    ep = client.V1Endpoints(subsets=[client.V1EndpointSubset(
        addresses=[client.V1EndpointAddress(ip="198.18.0.5")],
        not_ready_addresses=[client.V1EndpointAddress(ip="198.18.0.6")])])
    slices = [client.V1EndpointSlice(address_type="IPv4", metadata=client.V1ObjectMeta(name="s1"), endpoints=[
        client.V1Endpoint(addresses=["198.18.0.5"], conditions=client.V1EndpointConditions(ready=True)),
        client.V1Endpoint(addresses=["198.18.0.6"], conditions=client.V1EndpointConditions(ready=False)),
        client.V1Endpoint(addresses=["198.18.0.7"], conditions=None)])]
    ep_ips, slice_ips, raw = apps.endpoint_ips(ep, slices)
    assert ep_ips == {"198.18.0.5"} and slice_ips == {"198.18.0.5", "198.18.0.7"} and len(raw) == 2
    assert apps.endpoint_ips(None, [])[2] == ["Endpoints: not found"]


def test_answer_and_hostnames() -> None:
    assert apps.answer(http()) == (True, "Hello from hello-1", "hello-1")
    assert apps.answer(http("unreachable", "", "exit 7 (no answer)")) == (False, "unreachable: exit 7 (no answer)",
                                                                           None)
    assert apps.answer(http(body="<html>nginx</html>"))[:2] == (False, "wrong answer: '<html>nginx</html>'")
    assert apps.hostnames("Hello A!\nHostname: p1\nHello B!\nHostname: p2\nnoise") == ["p1", "p2"]


def test_preconditions_point_at_their_owner() -> None:
    ready = {"a": ("198.18.0.5", "n1")}
    assert apps.need_ready(ready) is None
    no_pod = apps.need_ready({})
    assert no_pod is not None and no_pod.blames == "APP-001"
    assert apps.need_endpoints(ready, {"198.18.0.5"}, SERVICE) is None
    no_pod = apps.need_endpoints({}, set(), SERVICE)
    assert no_pod is not None and no_pod.blames == "APP-001"
    no_ep = apps.need_endpoints(ready, set(), SERVICE)
    assert no_ep is not None and no_ep.status == "skip" and no_ep.blames == "APP-006" and SERVICE in no_ep.reason


def test_judge_rollout() -> None:
    ok = apps.judge_rollout("cp-apps/hello-python", None, {"a": ("198.18.0.5", "n1")})
    assert ok.status == "pass" and "a on n1" in ok.observed
    v = apps.judge_rollout("cp-apps/hello-python", "gave up waiting: pod x has run 60s without becoming ready", {})
    assert v.status == "fail" and v.subject == "deployment cp-apps/hello-python"
    assert v.expected == "4/4 replicas updated and ready" and "without becoming ready" in v.observed
    assert "kubectl -n cp-apps describe pods -l app=hello-python" in v.fix


def test_judge_probes() -> None:
    ok = apps.judge_probes("Service x", [("pod p on n1", http()), ("pod q on n2", http())], "Hello", "fix it")
    assert ok.status == "pass" and ok.observed == "2 of 2 probes answered"
    bad = apps.judge_probes("Service x", [("pod p on n1", http()),
                                          ("node n2 (host network pod h)", http("unreachable", "", "timed out"))],
                            "Hello", "kube-proxy must run")
    assert bad.status == "fail" and bad.observed == "1 of 2 probes failed"
    assert bad.rows == ("node n2 (host network pod h) -> http://10.0.0.1:6000/: unreachable: timed out",)
    assert "fix: kube-proxy" in bad.message
    assert apps.judge_probes("Service x", [], "Hello", "fix").status == "error"


def test_judge_replicas() -> None:
    ready = {"p1", "p2"}
    assert apps.judge_replicas(SERVICE, ready, {"p1": 9, "p2": 7}, 16).status == "pass"
    missing = apps.judge_replicas(SERVICE, ready, {"p1": 16}, 16)
    assert missing.status == "fail" and missing.rows == ("ready pod p2: no answer in 16 answered requests",)
    extra = apps.judge_replicas(SERVICE, ready, {"p1": 8, "p2": 4, "old": 4}, 16)
    assert extra.status == "fail" and extra.rows == ("old: answered but is not a ready replica",)
    silent = apps.judge_replicas(SERVICE, ready, {}, 0)
    assert silent.status == "skip" and silent.blames == "APP-003"
    no_exec = apps.judge_replicas(SERVICE, ready, {}, 0, exec_failures=5, last_error="pod probe-pod-0: 500")
    assert no_exec.status == "error" and "5 time(s)" in no_exec.reason


def test_judge_endpoints() -> None:
    ready = {"a": ("198.18.0.5", "n1"), "b": ("198.18.0.6", "n2")}
    ips = {"198.18.0.5", "198.18.0.6"}
    assert apps.judge_endpoints(SERVICE, ready, ips, ips).status == "pass"
    stale = apps.judge_endpoints(SERVICE, ready, ips | {"198.18.0.9"}, {"198.18.0.5"})
    assert stale.status == "fail"
    assert set(stale.rows) == {"198.18.0.9 in the Endpoints but not a ready pod",
                               "ready pod b (198.18.0.6) not in the EndpointSlices"}
    err = "gave up waiting for ...: selector app=hello-python-matches-nothing of Service hello-python matches no pod"
    none = apps.judge_endpoints(SERVICE, ready, set(), set(), err)
    assert none.status == "fail" and "matches no pod" in none.observed and "kubectl -n cp-apps get svc" in none.fix
    assert apps.judge_endpoints(SERVICE, {}, set(), set()).blames == "APP-001"
