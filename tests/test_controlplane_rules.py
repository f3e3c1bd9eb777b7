"""The control-plane verdicts (CP-001/CP-002) and the waits that stop early when no scheduler or controller acts."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from kubernetes import client

from clusterproof import apps, controlplane, pods
from clusterproof.verdict import Status

NOW = dt.datetime(2026, 11, 28, 7, 0, 0, tzinfo=dt.UTC)


def lease(age: float | None, holder: str | None = "cp-1_abc", duration: int | None = 15) -> controlplane.Lease:
    return controlplane.Lease(holder, None if age is None else NOW - dt.timedelta(seconds=age), duration)


def test_a_lease_renewed_within_its_duration_passes() -> None:
    v = controlplane.judge_component("kube-scheduler", lease(1.4), NOW, [])
    assert v.status == Status.PASS and "cp-1_abc renewed it 1s ago" in v.observed


def test_a_stale_lease_fails_naming_holder_age_and_what_stops() -> None:
    v = controlplane.judge_component("kube-scheduler", lease(47), NOW, [])
    assert v.status == Status.FAIL
    assert "kube-system Lease kube-scheduler" in v.subject
    assert "last renewed 47s ago by cp-1_abc (lease duration 15s)" in v.observed
    assert "new pods stay Pending" in v.observed and "crictl ps -a --name kube-scheduler" in v.fix
    # the Lease's own duration counts, the default only when it says none
    assert controlplane.judge_component("kube-scheduler", lease(47, duration=60), NOW, []).status == Status.PASS
    assert controlplane.judge_component("kube-scheduler", lease(16, duration=None), NOW, []).status == Status.FAIL
    cm = controlplane.judge_component("kube-controller-manager", lease(None, holder=None), NOW, [])
    assert cm.status == Status.FAIL and "no holder" in cm.observed and "namespaces do not finish" in cm.observed


def test_static_pods_must_run_and_be_ready() -> None:
    ok = controlplane.StaticPod("kube-scheduler-cp-1", "cp-1", "Running", True)
    bad = controlplane.StaticPod("kube-scheduler-cp-2", "cp-2", "Running", False)
    v = controlplane.judge_component("kube-scheduler", lease(1), NOW, [ok, bad])
    assert v.status == Status.FAIL and v.observed == "kube-scheduler-cp-2 on cp-2: Running, not Ready"
    assert controlplane.judge_component("kube-scheduler", lease(1), NOW, [ok]).status == Status.PASS
    # no Lease (leader election off): the static pods alone decide
    assert controlplane.judge_component("kube-scheduler", None, NOW, [ok]).status == Status.PASS
    assert controlplane.judge_component("kube-scheduler", None, NOW, [bad]).status == Status.FAIL


def test_nothing_to_read_is_a_skip_that_says_why() -> None:
    v = controlplane.judge_component("kube-scheduler", None, NOW, [])
    assert v.status == Status.SKIP and v.blames is None and "managed cluster" in v.reason


def test_server_time_comes_from_the_date_header() -> None:
    assert controlplane.server_time("Sat, 28 Nov 2026 07:00:00 GMT", NOW - dt.timedelta(hours=3)) == NOW
    assert controlplane.server_time(None, NOW) == NOW and controlplane.server_time("garbage", NOW) == NOW


def _pending(name: str = "p", conditions: list | None = None, node: str | None = None) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name, namespace="ns"),
                        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")], node_name=node),
                        status=client.V1PodStatus(phase="Pending", conditions=conditions))


def test_a_pod_no_scheduler_looks_at_stops_the_wait() -> None:
    watch = pods.StartWatch(15)
    assert watch.check(_pending(), 100.0) is None
    said = watch.check(_pending(), 100.0 + pods.UNSEEN_GRACE)
    assert said is not None and "no scheduler has taken it up in 30s" in said and "CP-001" in said
    # a pod the scheduler refused has a PodScheduled condition: that is `unschedulable`'s finding, not this one
    refused = [client.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable")]
    watch = pods.StartWatch(15)
    assert watch.check(_pending(conditions=refused), 0.0) is None
    assert watch.check(_pending(conditions=refused), 1000.0) is None
    # scheduled: nothing to say
    assert pods.StartWatch(15).check(_pending(node="n1"), 1000.0) is None


def _deployment(generation: int, observed: int | None) -> SimpleNamespace:
    """The fields the wait reads, as the API returns them (a V1Deployment also insists on a full spec)."""
    return SimpleNamespace(metadata=client.V1ObjectMeta(name="hello-python", namespace="ns", generation=generation),
                           status=SimpleNamespace(observed_generation=observed, conditions=None))


def test_a_deployment_its_controller_never_sees_stops_the_rollout() -> None:
    watch = pods.StartWatch(15)
    assert apps.rollout_dead_end(_deployment(1, None), [], watch, 10.0) is None
    said = apps.rollout_dead_end(_deployment(1, None), [], watch, 10.0 + pods.UNSEEN_GRACE)
    assert said is not None and "observedGeneration 0, generation 1" in said and "CP-002" in said
    assert apps.rollout_dead_end(_deployment(2, 2), [], pods.StartWatch(15), 1000.0) is None
