"""Judgements for the control-plane checks (suites/controlplane): is each component running and leading?

kube-scheduler and kube-controller-manager run with leader election (kubeadm's default): the leader renews
a Lease in kube-system every couple of seconds, and a Lease not renewed within its leaseDurationSeconds means
no instance leads, so nothing schedules pods or runs the controllers. On a kubeadm cluster each component is
also a static pod (label component=NAME, tier=control-plane) that must be Running and Ready. Ages are taken
against the API server's own clock (the Date of its answer), so a skewed clock here cannot fake a verdict.

CP-003 reads the API server's own health checks (/readyz and /livez with ?verbose: one `[+]name ok` or
`[-]name failed` line per check, etcd and each --etcd-servers-overrides etcd among them) and fails on every [-].

The checks gather (the Lease, the server's time, the static pods, the health answers) and apply these verdicts.
CP-004's certificates are judged in clusterproof.certs.
"""
from __future__ import annotations

import datetime as dt
import re
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


# ------------------------------------------------------------------ CP-003: the API server's own health checks

HEALTH_PATHS = ("/readyz", "/livez")
_CHECK_LINE = re.compile(r"^\[([+-])\](\S+)\s*(.*)$")


@dataclass(frozen=True)
class HealthAnswer:
    """What GET PATH?verbose answered: the HTTP status (0: no answer at all) and the body (or the client's error)."""

    path: str
    status: int
    body: str

    @property
    def failing(self) -> list[str]:
        """The `[-]NAME failed: ...` lines, as the server wrote them."""
        return [line.strip() for line in self.body.splitlines() if line.strip().startswith("[-]")]

    @property
    def passing(self) -> list[str]:
        return [m.group(2) for m in map(_CHECK_LINE.match, self.body.splitlines()) if m and m.group(1) == "+"]


def check_name(line: str) -> str:
    """The check's name in a `[-]etcd failed: reason withheld` line (etcd)."""
    m = _CHECK_LINE.match(line.strip())
    return m.group(2) if m else line.strip()


def get_raw(api_client, path: str, query: list[tuple[str, str]], timeout: float) -> tuple[int, str, dict]:
    """GET PATH on the API server with the run's credentials, whatever the status: (status, body, headers).
    The API's own error for a refusal or a server error is read, not raised; a connection that fails is raised."""
    from kubernetes.client.exceptions import ApiException

    headers = {"Accept": "text/plain, application/json"}
    try:
        if hasattr(api_client, "param_serialize"):      # kubernetes >= 32: the client built by openapi-generator 7
            method, url, hdrs, body, post = api_client.param_serialize(
                "GET", path, query_params=query, header_params=headers, auth_settings=["BearerToken"])
            resp = api_client.call_api(method, url, hdrs, body, post, _request_timeout=timeout)
            data = resp.read()
            return resp.status, data.decode("utf-8", "replace") if data else "", dict(resp.headers or {})
        resp, status, hdrs = api_client.call_api(
            path, "GET", query_params=query, header_params=headers, auth_settings=["BearerToken"],
            response_type="str", _preload_content=False, _return_http_data_only=False, _request_timeout=timeout)
        return status, resp.data.decode("utf-8", "replace"), dict(hdrs or {})
    except ApiException as exc:
        if not exc.status:
            raise
        body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
        return exc.status, body, dict(exc.headers or {})


def read_health(api_client, path: str, timeout: float) -> HealthAnswer:
    """GET PATH?verbose (a connection that fails, or an answer the client cannot read, is status 0)."""
    try:
        status, body, _ = get_raw(api_client, path, [("verbose", "true")], timeout)
    except Exception as exc:
        return HealthAnswer(path, 0, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    return HealthAnswer(path, status, body)


def _health_fix(names: list[str], server: str) -> str:
    fixes = [f"kubectl get --raw='/readyz?verbose' and --raw='/livez?verbose' against {server} (the server withholds "
             "each reason from that list: the kube-apiserver's log names it)"]
    if any(n.startswith("etcd") for n in names):
        fixes.append("etcd: etcdctl endpoint health against every URL in the API server's --etcd-servers and "
                     "--etcd-servers-overrides (an etcd-override-N check is the Nth override), then the etcd "
                     "logs (kubeadm: crictl logs on the etcd container of each control-plane node)")
    if any(n.startswith("poststarthook/") or n == "informer-sync" for n in names):
        fixes.append("a post-start hook or an informer that never finished: the kube-apiserver's log since its start "
                     "(kubeadm: crictl logs on the kube-apiserver container)")
    if "shutdown" in names:
        fixes.append("shutdown: this API server is shutting down (a rolling restart, or a kubelet killing it on a "
                     "failing liveness probe)")
    return "; ".join(fixes)


def judge_health(server: str, answers: list[HealthAnswer]) -> Verdict:
    """CP-003: /readyz and /livez answer 200 with every check [+]. A [-] check fails, listed by name; a refusal
    (401/403), no answer, or an endpoint the server does not serve is an error: no verdict was earned."""
    subject = f"kube-apiserver health at {server}"
    expected = "HTTP 200 from " + " and ".join(f"{a.path}?verbose" for a in answers) + " with every check [+]ok"
    for a in answers:
        if a.status == 0:
            return Verdict.errored(subject, f"GET {a.path}?verbose got no answer: {a.body}")
        if a.status in (401, 403):
            return Verdict.errored(subject, f"GET {a.path}?verbose was refused ({a.status}: {a.body.strip()[:200]}): "
                                            "the run's identity may not read it; grant get on the nonResourceURLs "
                                            f"{a.path} (system:public-info-viewer does by default; see "
                                            "manifests/rbac/clusterrole.yaml)")
        if a.status == 404:
            return Verdict.errored(subject, f"GET {a.path}?verbose answered 404: this API server (or a proxy in "
                                            "front of it) does not serve it (Kubernetes >= 1.16 does)")
    rows, names = [], []
    for a in answers:
        for line in a.failing:
            rows.append(f"{a.path}: {line}")
            names.append(check_name(line))
        if a.status != 200 and not a.failing:
            rows.append(f"{a.path}: HTTP {a.status} without a [-] check: {a.body.strip()[:300]}")
    if rows:
        names = list(dict.fromkeys(names))
        statuses = ", ".join(f"{a.path} HTTP {a.status}" for a in answers)
        observed = (f"{statuses}; failing: {', '.join(names)}" if names else statuses)
        return Verdict.failed(subject, expected, observed, _health_fix(names, server), rows)
    checks = sum(len(a.passing) for a in answers)
    return Verdict.passed(subject, expected, ", ".join(f"{a.path} HTTP 200" for a in answers)
                          + f", {checks} checks [+]ok")
