"""The control plane: kube-scheduler and kube-controller-manager running and leading (CP-001/CP-002), the API
server's own health checks (CP-003) and the cluster's certificates not expiring (CP-004, per host).

Read-only: each check reads its component's leader Lease in kube-system (with the API server's clock, the Date
of the same answer) and, on a kubeadm cluster, its static pods (label component=NAME), then applies
`clusterproof.controlplane.judge_component`. CP-003 reads /readyz and /livez; CP-004 reads certificates from the
kubeconfig, TLS handshakes and kubeadm's files (clusterproof.certs).
"""
from __future__ import annotations

import datetime as dt
import urllib.parse

import pytest

from clusterproof import certs, kube, timeouts
from clusterproof import controlplane as rules
from clusterproof.checks import apply, evidence
from clusterproof.facts import ClusterFacts
from clusterproof.hosts import HostSpec


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


@pytest.mark.check("CP-003")
def test_api_server_ready(api_client) -> None:
    """GET /readyz?verbose and /livez?verbose with the run's credentials: each check the API server runs on itself
    (etcd and every --etcd-servers-overrides etcd, its informers, its post-start hooks) is listed [+] or [-]."""
    answers = [rules.read_health(api_client, path, timeouts.get("api")) for path in rules.HEALTH_PATHS]
    for a in answers:
        evidence(f"kubectl get --raw='{a.path}?verbose'", f"HTTP {a.status}\n{a.body}")
    apply(rules.judge_health(kube.server_address(api_client), answers))


def _server_now(api_client) -> dt.datetime:
    """The API server's clock (the Date of a /version answer), this machine's when it gives none."""
    from kubernetes import client

    local = dt.datetime.now(dt.UTC)
    try:
        _, _, headers = client.VersionApi(api_client).get_code_with_http_info(_request_timeout=timeouts.get("api"))
    except Exception:
        return local
    return rules.server_time((headers or {}).get("Date"), local)


def _cluster_certs(api_client) -> tuple[list[certs.Cert], list[str]]:
    """The kubeconfig's CA bundle and client certificate, and the API server's serving certificate."""
    conf = api_client.configuration
    found: list[certs.Cert] = []
    unread: list[str] = []
    for path, name, kind in ((conf.ssl_ca_cert, "cluster CA", certs.CA),
                             (conf.cert_file, "kubeconfig client certificate", certs.KUBECONFIG)):
        got, why = certs.read_file_certs(path, name, "the run's kubeconfig", kind)
        found += got
        unread += [why] if why else []
    url = urllib.parse.urlsplit(conf.host)
    host, port = url.hostname or "", url.port or 443
    try:
        cert = certs.peer_certificate(host, port, timeouts.get("probe"))
        found.append(certs.describe(cert, "kube-apiserver serving certificate", f"TLS handshake with {host}:{port}",
                                    certs.APISERVER))
    except (OSError, ValueError) as exc:
        unread.append(f"kube-apiserver serving certificate at {host}:{port}: {type(exc).__name__}: {exc}")
    return found, unread


def _kubelet_cert(node) -> tuple[list[certs.Cert], list[str]]:
    """The certificate the node's kubelet serves on its InternalIP (the port its status names, else 10250)."""
    endpoint = getattr(getattr(getattr(node.raw, "status", None), "daemon_endpoints", None), "kubelet_endpoint", None)
    port = getattr(endpoint, "port", None) or 10250
    if not node.internal_ip:
        return [], [f"kubelet serving certificate of {node.name}: no InternalIP to reach it"]
    try:
        cert = certs.peer_certificate(node.internal_ip, port, timeouts.get("probe"))
    except (OSError, ValueError) as exc:
        return [], [f"kubelet serving certificate of {node.name} at {node.internal_ip}:{port}: not read "
                    f"({type(exc).__name__}: {exc})"]
    return [certs.describe(cert, f"kubelet serving certificate of {node.name}",
                           f"TLS handshake with {node.internal_ip}:{port}", certs.KUBELET_SERVING)], []


def _host_certs(request: pytest.FixtureRequest, spec: HostSpec) -> tuple[list[certs.Cert], list[str]]:
    """kubeadm's certificate files and kubeconfigs on the host, where the host transport reaches it."""
    from fixtures.hosts import HostDown

    try:
        host = request.getfixturevalue("node_host")
    except HostDown as exc:
        return [], [f"{spec.id}: host not reachable ({str(exc).splitlines()[0][:200]}); kubeadm's files not read"]
    res = host.run(certs.HOST_SCRIPT)
    if res.rc != 0:
        return [], [f"{host.id}: reading /etc/kubernetes exited {res.rc}: {res.stderr.strip()[:200]}"]
    found, unread = certs.parse_host_dump(res.stdout, host.id)
    if not found and not unread:
        unread.append(f"{host.id}: no kubeadm certificate files (/etc/kubernetes/pki, /etc/kubernetes/*.conf): "
                      "not a kubeadm control-plane node")
    return found, unread


@pytest.mark.check("CP-004")
def test_certificates_not_expiring(_clusterproof_host: HostSpec, request: pytest.FixtureRequest,  # noqa: PT019
                                   api_client, cluster: ClusterFacts) -> None:
    """The cluster CA and client certificate of the kubeconfig, the API server's and this node's kubelet's serving
    certificates (TLS handshakes), and kubeadm's files on this host: none expired, none under 30 days left."""
    spec = _clusterproof_host
    now = _server_now(api_client)
    found, unread = _cluster_certs(api_client)
    node = cluster.node(spec.node) if spec.node else None
    if node is not None:
        got, why = _kubelet_cert(node)
        found += got
        unread += why
    got, why = _host_certs(request, spec)
    found += got
    unread += why
    evidence(f"certificates read for {spec.id} (API server time {now:%Y-%m-%dT%H:%M:%SZ})", certs.table(found, now))
    if unread:
        evidence("certificates not read (not judged)", "\n".join(unread))
    apply(certs.judge_certs(f"certificates seen from {spec.id}", found, now, unread))
