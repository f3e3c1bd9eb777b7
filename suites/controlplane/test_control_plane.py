"""The control plane's workers: kube-scheduler and kube-controller-manager running and leading.

Read-only: each check reads its component's leader Lease in kube-system (with the API server's clock, the Date
of the same answer) and, on a kubeadm cluster, its static pods (label component=NAME), then applies
`clusterproof.controlplane.judge_component`. The API server itself answers every other check; etcd behind it
answers every read.
"""
from __future__ import annotations

import datetime as dt

import pytest

from clusterproof import controlplane as rules
from clusterproof import timeouts
from clusterproof.checks import apply, evidence


def _lease(api_client, name: str) -> tuple[rules.Lease | None, dt.datetime, str]:
    """The Lease (None when there is none), the API server's time of the answer, and the evidence text."""
    lease, now = rules.read_lease(api_client, name, timeouts.get("api"))
    if lease is None:
        return None, now, "404: no such Lease"
    return lease, now, (f"holder {lease.holder}, renewTime {lease.renew_time}, leaseDurationSeconds "
                        f"{lease.duration_seconds}; API server time {now:%Y-%m-%dT%H:%M:%SZ}")


def _static_pods(core_v1, component: str) -> list[rules.StaticPod]:
    found = core_v1.list_namespaced_pod("kube-system", label_selector=f"component={component}",
                                        _request_timeout=timeouts.get("api")).items
    out = []
    for p in found:
        ready = any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        out.append(rules.StaticPod(p.metadata.name, p.spec.node_name, p.status.phase or "Unknown", ready))
    return sorted(out, key=lambda s: s.name)


def _check(api_client, core_v1, component: str) -> None:
    lease, now, text = _lease(api_client, component)
    evidence(f"kubectl -n kube-system get lease {component} -o yaml", text)
    static = _static_pods(core_v1, component)
    evidence(f"kubectl -n kube-system get pods -l component={component}",
             "\n".join(f"{p.name} on {p.node}: {p.phase}, ready={p.ready}" for p in static) or "(none)")
    apply(rules.judge_component(component, lease, now, static))


@pytest.mark.check("CP-001")
def test_scheduler_leads(api_client, core_v1) -> None:
    _check(api_client, core_v1, "kube-scheduler")


@pytest.mark.check("CP-002")
def test_controller_manager_leads(api_client, core_v1) -> None:
    _check(api_client, core_v1, "kube-controller-manager")
