"""Cluster DNS from pods: `kubernetes.default` and a Service of this module resolve to their ClusterIPs.

Lookups run in one probe pod per Ready node (dnsPolicy ClusterFirst, so the pod's resolv.conf
search path applies, as for any workload) with python3's getaddrinfo, or busybox nslookup for a
fully qualified name when the probe image has no python3. An answer with the wrong address, or
"no such name", is a failure and never retried; only inconclusive lookups (exec transport errors, no
output, no answer from the DNS server at all) are repeated for a bounded time.
When the cluster DNS Service has no ready endpoints at all, NODE-006 owns the finding and these
checks skip blaming it instead of failing twice; NotReady nodes (NODE-001's finding) get no probe
pod and are named in the verdict.
"""
from __future__ import annotations

import functools
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from clusterproof import pods, timeouts
from clusterproof.checks import apply, evidence, skip
from clusterproof.facts import ClusterFacts
from clusterproof.verdict import Verdict
from fixtures.workloads import unready_owner

pytestmark = pytest.mark.slow

_MARK = "__CLUSTERPROOF_DNS="
_PY = ("import socket, sys\n"
       "try:\n"
       "    print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], None, "
       "proto=socket.IPPROTO_TCP)})))\n"
       "except OSError as e:\n"
       "    print('lookup failed: %s' % e); sys.exit(2)\n")
_IP = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b[0-9a-f]*:[0-9a-f:]+\b", re.IGNORECASE)
SERVICE = "dns-target"
LOOKUPS_AT_ONCE = 8   # lookups in flight (one exec each): nodes x names, bounded for large clusters


@dataclass
class Lookup:
    """One name looked up in one pod: outcome ok | failed | inconclusive, the addresses, the evidence."""

    outcome: str
    addresses: list[str]
    detail: str
    evidence: str

    @property
    def conclusive(self) -> bool:
        return self.outcome != "inconclusive"


def lookup_script(name: str, fqdn: str, limit: int) -> str:
    """sh text: python3 getaddrinfo(name) (search path applies), else busybox nslookup of the FQDN."""
    return (f"if command -v python3 >/dev/null 2>&1; then out=$(timeout {limit} python3 -c {shlex.quote(_PY)} "
            f"{shlex.quote(name)} 2>&1); rc=$?; else out=$(timeout {limit} nslookup {shlex.quote(fqdn)} 2>&1 | "
            f"sed -n '/^Name:/,$p'); rc=$?; fi; printf '%s\\n{_MARK}%s\\n' \"$out\" \"$rc\"")


def lookup(core_v1, namespace: str, pod: str, name: str, fqdn: str) -> Lookup:
    limit = int(timeouts.get("probe"))
    res = pods.exec_in_pod(core_v1, namespace, pod, ["sh", "-c", lookup_script(name, fqdn, limit)],
                           timeout=limit + 15)
    if res.error or _MARK not in res.stdout:
        return Lookup("inconclusive", [], res.error or "the lookup printed nothing", res.evidence())
    body, _, rc = res.stdout.rpartition(_MARK)
    rc = rc.strip()
    addresses = sorted(set(_IP.findall(body))) if rc == "0" else []
    if rc in ("139", "134"):
        return Lookup("inconclusive", [], f"lookup tool crashed (exit {rc})", res.evidence())
    if rc == "0" and addresses:
        return Lookup("ok", addresses, "resolved", res.evidence())
    if rc in ("124", "143") or "Temporary failure" in body:
        # No answer at all (a lost UDP packet, a new pod's first seconds): retried for a while, as the
        # Kubernetes e2e DNS tests poll; an answer that says "no such name" or a wrong address is final.
        return Lookup("inconclusive", [], f"no answer within {limit}s (timed out)", res.evidence())
    detail = (body.strip().splitlines() or [f"exit {rc}"])[-1][:160]
    return Lookup("failed", [], detail, res.evidence())


@pytest.fixture(scope="module")
def dns_service(core_v1, apps_v1, api_client) -> dict:
    """The cluster DNS Service (kube-system, k8s-app=kube-dns or kube-dns) and its ready endpoint count."""
    from kubernetes import client

    t = timeouts.get("api")
    svcs = core_v1.list_namespaced_service("kube-system", label_selector="k8s-app=kube-dns", _request_timeout=t).items
    if not svcs:
        svcs = [s for s in core_v1.list_namespaced_service("kube-system", _request_timeout=t).items
                if s.metadata.name in ("kube-dns", "coredns")]
    if not svcs:
        return {"name": None, "ready": 0, "text": "no kube-dns Service in kube-system"}
    svc = svcs[0]
    slices = client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice(
        "kube-system", label_selector=f"kubernetes.io/service-name={svc.metadata.name}", _request_timeout=t).items
    ready = [a for s in slices for e in s.endpoints or [] if e.conditions is None or e.conditions.ready is not False
             for a in e.addresses or []]
    return {"name": svc.metadata.name, "ip": svc.spec.cluster_ip, "ready": len(ready),
            "text": f"Service kube-system/{svc.metadata.name} {svc.spec.cluster_ip}: ready endpoints {ready}"}


@pytest.fixture(scope="module")
def target(workloads: pods.Workloads, node_probes: dict[str, str]) -> dict:
    """A ClusterIP Service in this module's namespace (selecting the first probe pod) and its address."""
    first = next(iter(node_probes.values()), None)
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
            "spec": {"type": "ClusterIP", "selector": {"clusterproof.io/node-index": "0"},
                     "ports": [{"name": "http", "port": 80, "targetPort": pods.SERVE_PORT}]}}
    workloads.create(body)
    svc: Any = workloads.core_v1.read_namespaced_service(SERVICE, workloads.namespace,
                                                         _request_timeout=timeouts.get("api"))
    return {"name": SERVICE, "ip": svc.spec.cluster_ip, "pod": first}


def _need_dns(dns_service: dict, node_probes: dict[str, str], cluster: ClusterFacts) -> list[str]:
    """Skip, blaming the check that owns it, when no lookup can run; else the nodes left out (NotReady)."""
    evidence("kubectl -n kube-system get svc,endpointslices -l k8s-app=kube-dns", dns_service["text"])
    if not dns_service["ready"]:
        skip(f"the cluster DNS has no ready endpoints ({dns_service['text']}); NODE-006 reports why", blames="NODE-006")
    left_out = cluster.left_out(node_probes)
    if left_out:
        evidence("nodes without a probe pod (NotReady: NODE-001 reports them)", "\n".join(left_out))
    if not node_probes:
        owner = unready_owner(cluster.not_ready_nodes)
        skip(f"no Ready node to run a pod on ({'; '.join(left_out) or 'no nodes'}); {owner} reports why",
             blames=owner)
    return left_out


def _verdict(rows: list[str], subject: str, expected: str, fix: str, checked: int, left_out: list[str]) -> Verdict:
    if rows:
        return Verdict.failed(subject, expected, "; ".join(rows[:3]), fix, rows)
    return Verdict.passed(subject, expected, f"resolved from {checked} node(s)"
                          + (f"; not checked: {'; '.join(left_out)}" if left_out else ""))


def _resolve_everywhere(core_v1, namespace: str, node_probes: dict[str, str],
                        queries: list[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
    """Each (name, fqdn, wanted address) looked up in every node's probe pod, all at once (a node whose lookups
    time out costs its retry window once, not once per node and name); evidence is attached in order after."""
    jobs = [(name, fqdn, want, node, pod) for name, fqdn, want in queries for node, pod in sorted(node_probes.items())]

    def one(job: tuple[str, str, str, str, str]) -> Lookup:
        name, fqdn, _, _, pod = job
        return pods.conclusive(functools.partial(lookup, core_v1, namespace, pod, name, fqdn),
                               timeout=timeouts.get("endpoints") / 2)

    with ThreadPoolExecutor(max_workers=LOOKUPS_AT_ONCE) as pool:
        results = list(pool.map(one, jobs))
    rows, lines = [], []
    multi = len(queries) > 1
    for (name, _fqdn, want, node, pod), got in zip(jobs, results):
        evidence(f"pod {namespace}/{pod} on {node}: getaddrinfo({name})", got.evidence)
        lines.append(f"{node} ({pod}): {name} -> {', '.join(got.addresses) or got.outcome + ': ' + got.detail}")
        row = None
        if got.outcome != "ok":
            row = f"{node}: {got.outcome}: {got.detail}"
        elif want not in got.addresses:
            row = f"{node}: resolved to {', '.join(got.addresses)}, expected {want}"
        if row:
            rows.append(f"{name}: {row}" if multi else row)
    return rows, lines


@pytest.mark.check("DNS-001")
def test_kubernetes_default_resolves(dns_service: dict, node_probes: dict[str, str], workloads: pods.Workloads,
                                     core_v1, cluster: ClusterFacts) -> None:
    """The short name goes through the probe pod's resolv.conf search path, as any workload's lookup does."""
    left_out = _need_dns(dns_service, node_probes, cluster)
    t = timeouts.get("api")
    want = core_v1.read_namespaced_service("kubernetes", "default", _request_timeout=t).spec.cluster_ip
    rows, lines = _resolve_everywhere(core_v1, workloads.namespace, node_probes,
                                      [("kubernetes.default", "kubernetes.default.svc.cluster.local", want)])
    evidence("lookups", f"expected {want} (Service default/kubernetes)\n" + "\n".join(lines))
    apply(_verdict(rows, "name kubernetes.default", f"{want} (ClusterIP of default/kubernetes) from every Ready node",
                   "check the CoreDNS pods and logs (kubectl -n kube-system logs -l k8s-app=kube-dns), "
                   f"kube-proxy on the failing node(s) (the DNS ClusterIP {dns_service.get('ip')} must reach "
                   "CoreDNS), and the kubelet's --cluster-dns/--cluster-domain", len(node_probes), left_out))


@pytest.mark.check("DNS-002")
def test_service_name_resolves(dns_service: dict, node_probes: dict[str, str], workloads: pods.Workloads,
                               target: dict, core_v1, cluster: ClusterFacts) -> None:
    """Looks up a Service of this module by its short name (search path) and by its absolute name."""
    left_out = _need_dns(dns_service, node_probes, cluster)
    ns = workloads.namespace
    fqdn = f"{target['name']}.{ns}.svc.cluster.local"
    # The short name goes through the pod's search path; the absolute name (trailing dot) does not.
    rows, lines = _resolve_everywhere(core_v1, ns, node_probes,
                                      [(name, fqdn, target["ip"]) for name in (target["name"], f"{fqdn}.")])
    evidence("lookups", f"expected {target['ip']} (Service {ns}/{target['name']})\n" + "\n".join(lines))
    apply(_verdict(rows, f"Service name {target['name']} (namespace {ns})", f"{target['ip']} from every Ready node",
                   "check CoreDNS can list Services (its ClusterRole and logs: kubectl -n kube-system logs "
                   "-l k8s-app=kube-dns) and the pods' resolv.conf search path (kubelet --cluster-domain)",
                   len(node_probes), left_out))
