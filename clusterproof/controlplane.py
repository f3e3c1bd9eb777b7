"""Judgements for the control-plane checks (suites/controlplane): is each component running and leading?

kube-scheduler and kube-controller-manager run with leader election (kubeadm's default): the leader renews
a Lease in kube-system every couple of seconds, and a Lease not renewed within its leaseDurationSeconds means
no instance leads, so nothing schedules pods or runs the controllers. On a kubeadm cluster each component is
also a static pod (label component=NAME, tier=control-plane) that must be Running and Ready. Ages are taken
against the API server's own clock (the Date of its answer), so a skewed clock here cannot fake a verdict.

The checks gather (the Lease, the server's time, the static pods) and apply these verdicts.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .verdict import Verdict

DEFAULT_LEASE_SECONDS = 15   # leaseDurationSeconds when a Lease does not say (the components' default)
FIXES = {
    "kube-scheduler": "on a kubeadm control-plane node: crictl ps -a --name kube-scheduler and its logs; the static "
                      "pod restarts when /etc/kubernetes/manifests/kube-scheduler.yaml is moved out and back; "
                      "elsewhere: systemctl status kube-scheduler",
    "kube-controller-manager": "on a kubeadm control-plane node: crictl ps -a --name kube-controller-manager and its "
                               "logs; the static pod restarts when /etc/kubernetes/manifests/"
                               "kube-controller-manager.yaml is moved out and back; elsewhere: "
                               "systemctl status kube-controller-manager",
}
WHAT_STOPS = {"kube-scheduler": "new pods stay Pending, unscheduled",
              "kube-controller-manager": "Deployments do not roll out, Services get no endpoints, namespaces do not "
                                         "finish deleting"}


@dataclass(frozen=True)
class Lease:
    """The fields of a coordination.k8s.io/v1 Lease that say who leads and since when it was renewed."""

    holder: str | None
    renew_time: dt.datetime | None
    duration_seconds: int | None


@dataclass(frozen=True)
class StaticPod:
    name: str
    node: str | None
    phase: str
    ready: bool


def lease_from(obj) -> Lease:
    spec = getattr(obj, "spec", None)
    if spec is None:
        return Lease(None, None, None)
    renew = spec.renew_time or spec.acquire_time
    return Lease(spec.holder_identity, renew, spec.lease_duration_seconds)


def server_time(date_header: str | None, fallback: dt.datetime) -> dt.datetime:
    """The API server's clock from its Date header (RFC 7231); FALLBACK (this machine's clock) without one."""
    from email.utils import parsedate_to_datetime

    if date_header:
        try:
            return parsedate_to_datetime(date_header).astimezone(dt.UTC)
        except (TypeError, ValueError):
            pass
    return fallback


def read_lease(api_client, name: str, api_timeout: float) -> tuple[Lease | None, dt.datetime]:
    """kube-system's Lease NAME (None when there is none: a 404) and the API server's time of that answer.
    Any other API error (a refusal, a server error) is raised: it is no "no Lease"."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        obj, _, headers = client.CoordinationV1Api(api_client).read_namespaced_lease_with_http_info(
            name, "kube-system", _request_timeout=api_timeout)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return None, server_time((exc.headers or {}).get("Date"), dt.datetime.now(dt.UTC))
    return lease_from(obj), server_time((headers or {}).get("Date"), dt.datetime.now(dt.UTC))


def judge_component(component: str, lease: Lease | None, now: dt.datetime, static_pods: list[StaticPod]) -> Verdict:
    """CP-001 (kube-scheduler) / CP-002 (kube-controller-manager): a leader renews its Lease, and its static pods
    (kubeadm) are Running and Ready. No Lease and no static pod: nothing here shows whether it runs (a skip)."""
    subject = f"{component} (kube-system Lease {component})"
    expected = "a leader that renewed the Lease within its lease duration" + (
        ", every static pod Running and Ready" if static_pods else "")
    bad_pods = [f"{p.name} on {p.node or '?'}: {p.phase}{'' if p.ready else ', not Ready'}"
                for p in static_pods if p.phase != "Running" or not p.ready]
    pods_text = "; ".join(f"{p.name} Running, Ready" for p in static_pods if p.phase == "Running" and p.ready)
    if lease is None:
        if not static_pods:
            return Verdict.skipped(f"no kube-system Lease {component} and no static pod with component={component}: "
                                   "leader election is off or the control plane is hidden (a managed cluster); "
                                   f"nothing in the API shows whether {component} runs")
        if bad_pods:
            return Verdict.failed(subject, expected, "; ".join(bad_pods), FIXES[component])
        return Verdict.passed(subject, "every static pod Running and Ready (no Lease: leader election is off)",
                              pods_text)
    duration = lease.duration_seconds or DEFAULT_LEASE_SECONDS
    if lease.renew_time is None or not lease.holder:
        observed = "no holder" if not lease.holder else "never renewed"
        return Verdict.failed(subject, expected, f"{observed}: no {component} leads, so {WHAT_STOPS[component]}",
                              FIXES[component])
    age = (now - lease.renew_time).total_seconds()
    if age > duration:
        return Verdict.failed(subject, expected,
                              f"last renewed {age:.0f}s ago by {lease.holder} (lease duration {duration}s): no "
                              f"{component} leads, so {WHAT_STOPS[component]}", FIXES[component])
    if bad_pods:
        return Verdict.failed(subject, expected, "; ".join(bad_pods), FIXES[component])
    return Verdict.passed(subject, expected, f"{lease.holder} renewed it {max(age, 0):.0f}s ago"
                          + (f"; {pods_text}" if pods_text else ""))
