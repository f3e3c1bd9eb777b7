"""Talking to the running cluster: kubectl as the admin, health endpoints, and waiting on a condition."""
from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from . import proc
from .errors import TestbedError
from .paths import bin_dir
from .state import ADMIN_KUBECONFIG, PKI, api_server_url, current_version, node_count


def kubectl(*args: str, timeout: float = 60, check: bool = True, input: str | None = None,
            version: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl as the cluster admin; raises TestbedError (code 6) on failure unless check is False."""
    exe = bin_dir(version or current_version()) / "kubectl"
    r = subprocess.run([str(exe), "--kubeconfig", str(ADMIN_KUBECONFIG), "--request-timeout=20s", *args],
                       capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if check and r.returncode != 0:
        raise TestbedError(f"kubectl {' '.join(args)}: {r.stderr.strip()[:300]}", code=6)
    return r


def wait(what: str, cond: Callable[[], bool], timeout: float, interval: float = 0.5,
         logs: tuple[str, ...] = ()) -> None:
    """Poll COND until it holds; on timeout raise with its last error and the tails of the named logs."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception as exc:  # a daemon that is still starting refuses connections: keep polling
            last = exc
        time.sleep(interval)
    tails = "; ".join(f"{n}: {proc.log_tail(n, 3)}" for n in logs)
    raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}"
                       f"{f' (last error: {last})' if last else ''}{'; ' + tails if tails else ''}", code=7)


def _admin_tls() -> ssl.SSLContext:
    """The admin client certificate, trusting only the testbed's CA."""
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    return ctx


def https_get(url: str) -> tuple[int, str]:
    """GET URL as the admin: (HTTP status, body); an error status is an answer too, a failed connection raises."""
    try:
        with urllib.request.urlopen(url, context=_admin_tls(), timeout=3) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def https_ok(url: str) -> bool:
    """GET URL with the admin client certificate, trusting only the testbed's CA."""
    with urllib.request.urlopen(url, context=_admin_tls(), timeout=3) as r:
        return bool(r.status == 200)


def pod_ready(pod: dict) -> bool:
    """A pod (as the API returns it) whose Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=3) as r:
        return bool(r.status == 200)


def apiserver_ready() -> bool:
    """The API server answers /readyz (what "up" means)."""
    try:
        return https_ok(f"{api_server_url()}/readyz")
    except Exception:  # not started, certificates not there yet, connection refused: not ready
        return False


def node_pod_cidrs() -> dict[str, str]:
    """Node name -> podCIDR, for the nodes the controller manager has given one."""
    r = kubectl("get", "nodes", "-o", "json", check=False)
    if r.returncode != 0:
        return {}
    return {n["metadata"]["name"]: n["spec"].get("podCIDR") for n in json.loads(r.stdout)["items"]
            if n["spec"].get("podCIDR")}


def nodes_ready() -> bool:
    r = kubectl("get", "nodes", "-o", "json", check=False)
    if r.returncode != 0:
        return False
    items = json.loads(r.stdout)["items"]
    return len(items) == node_count() and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        for n in items)


def runtime_known(reported: str) -> bool:
    """A node's containerRuntimeVersion names a version: not empty and not `RUNTIME://Unknown`, which a kubelet
    writes while its runtime does not answer, until its next status update."""
    return bool(reported) and not reported.endswith("://Unknown")


def runtimes_reported() -> bool:
    """Every node's status names its runtime's version (`runtime_known`)."""
    r = kubectl("get", "nodes", "-o", "jsonpath={.items[*].status.nodeInfo.containerRuntimeVersion}", check=False)
    found = r.stdout.split() if r.returncode == 0 else []
    return len(found) == node_count() and all(runtime_known(v) for v in found)


CONTROL_LEASES = ("kube-scheduler", "kube-controller-manager")


def lease_holder(name: str) -> str | None:
    """The holder of kube-system's Lease NAME while it is fresh (renewed within its lease duration: the holder is
    the leader and alive); None when the Lease is stale, held by nobody, or cannot be read."""
    import datetime as dt

    r = kubectl("-n", "kube-system", "get", "lease", name, "-o", "json", check=False)
    if r.returncode != 0:
        return None
    spec = json.loads(r.stdout).get("spec", {})
    renew, holder = spec.get("renewTime"), spec.get("holderIdentity")
    if not renew or not holder:
        return None
    age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(renew.replace("Z", "+00:00"))
    return holder if age.total_seconds() < float(spec.get("leaseDurationSeconds") or 15) else None


def lease_fresh(name: str) -> bool:
    """kube-system's Lease NAME was renewed within its lease duration (its holder is the leader and alive)."""
    return lease_holder(name) is not None


def coredns_available() -> bool:
    r = kubectl("-n", "kube-system", "get", "deploy", "coredns", "-o", "json", check=False)
    if r.returncode != 0:
        return False
    d = json.loads(r.stdout)
    return bool(d["status"].get("availableReplicas", 0) >= 1 and d["spec"]["replicas"] >= 1)
