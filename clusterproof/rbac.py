"""The suite's least-privilege identity: explain a 403, apply manifests/rbac, mint a kubeconfig for it.

    python -m clusterproof.rbac apply      --kubeconfig ADMIN [--context C]
    python -m clusterproof.rbac kubeconfig --kubeconfig ADMIN [--context C] --out FILE [--duration 7200]
    python -m clusterproof.rbac in-cluster --out FILE     (inside a pod running as the ServiceAccount)

`kubeconfig` asks the TokenRequest API for a short-lived token of ServiceAccount
clusterproof/clusterproof and writes a kubeconfig (mode 0600) that uses it.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import timeouts
from .verdict import Status, Verdict

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests" / "rbac"
NAMESPACE = "clusterproof"
SERVICE_ACCOUNT = "clusterproof"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")

_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>[\w-]+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?(?: in the namespace "(?P<ns>[^"]+)")?')


@dataclass
class Forbidden:
    """A permission the API server refused: what, where and for whom."""

    verb: str
    resource: str
    namespace: str | None
    user: str

    @property
    def where(self) -> str:
        return self.namespace or "the cluster scope"

    @property
    def manifest(self) -> str:
        if self.namespace == "kube-system" and self.verb in ("get", "list", "watch"):
            return "manifests/rbac/role-kube-system.yaml"
        return "manifests/rbac/clusterrole.yaml"

    def message(self) -> str:
        return f"forbidden: {self.verb} {self.resource} in {self.where} for {self.user}; grant it in {self.manifest}"

    def verdict(self) -> Verdict:
        """An ERROR (the check could not look), explained as a missing grant."""
        return Verdict(Status.ERROR, f"permission {self.verb} {self.resource} in {self.where}",
                       f"{self.user} may {self.verb} {self.resource}", "403 Forbidden",
                       f"grant it in {self.manifest}", reason=self.message())


def explain(exc: BaseException) -> Forbidden | None:
    """A Forbidden for an ApiException with status 403 (None for anything else)."""
    if getattr(exc, "status", None) != 403:
        return None
    body = getattr(exc, "body", None) or ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = body
    try:
        text = json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        pass
    m = _FORBIDDEN.search(text or "") or _FORBIDDEN.search(str(exc))
    if not m:
        # a 403 that is no RBAC denial (an admission plugin refused: no default ServiceAccount in the namespace,
        # PodSecurity, a quota): no grant helps, and api_message says what the server said
        return None
    resource = m.group("resource") + (f".{m.group('group')}" if m.group("group") else "")
    return Forbidden(m.group("verb"), resource, m.group("ns"), m.group("user"))


def api_message(exc: BaseException) -> str | None:
    """`(STATUS Reason) message` of a Kubernetes API error (its Status body), None for anything else."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    if not isinstance(status, int) or not body:
        return None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        doc = json.loads(body)
    except ValueError:
        return f"({status}) {str(body).strip()[:300]}"
    if not isinstance(doc, dict):
        return None
    return f"({status} {doc.get('reason') or getattr(exc, 'reason', '') or ''}) {doc.get('message') or ''}".strip()


def find_forbidden(exc: BaseException | None) -> Forbidden | None:
    """`explain` for the exception or any exception it was raised from or while handling."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        found = explain(exc)
        if found is not None:
            return found
        exc = exc.__cause__ or exc.__context__
    return None


def forbidden_message(exc: BaseException) -> str | None:
    """The one-line `forbidden: <verb> <resource> in <ns> for <user>; grant it in ...` or None."""
    found = find_forbidden(exc)
    return found.message() if found else None


# ------------------------------------------------------------------ apply and kubeconfig

def load_manifests(folder: Path = MANIFESTS) -> list[dict]:
    import yaml

    docs = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":  # for `kubectl apply -k`, not a Kubernetes object
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def apply(api_client, docs: list[dict] | None = None) -> list[str]:
    """Server-side apply the RBAC manifests (idempotent); the names of what was applied."""
    from kubernetes import dynamic

    dyn = dynamic.DynamicClient(api_client)
    done = []
    for doc in docs if docs is not None else load_manifests():
        res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = doc["metadata"].get("namespace")
        dyn.server_side_apply(res, body=doc, namespace=ns, field_manager="clusterproof", force_conflicts=True,
                              _request_timeout=timeouts.get("api"))
        done.append(f"{doc['kind']}/{(ns + '/') if ns else ''}{doc['metadata']['name']}")
    return done


def request_token(api_client, duration_s: int = 7200, namespace: str = NAMESPACE,
                  service_account: str = SERVICE_ACCOUNT) -> str:
    """A bound token for the ServiceAccount from the TokenRequest API."""
    from kubernetes import client

    body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                expiration_seconds=duration_s))
    resp = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        service_account, namespace, body, _request_timeout=timeouts.get("api"))
    if resp.status is None or not resp.status.token:
        raise RuntimeError(f"TokenRequest for {namespace}/{service_account} returned no token")
    return str(resp.status.token)


def kubeconfig_for(server: str, token: str | None = None, ca_pem: bytes | None = None,
                   token_file: str | None = None, name: str = "clusterproof") -> dict:
    cluster: dict = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    user = {"tokenFile": token_file} if token_file else {"token": token}
    return {"apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": SA_USER, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": SA_USER, "namespace": NAMESPACE}}]}


def write_kubeconfig(path: str | Path, doc: dict) -> Path:
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False)
    return p


def make_sa_kubeconfig(api_client, out: str | Path, duration_s: int = 7200) -> Path:
    """Write a kubeconfig for the suite's ServiceAccount, using the admin client's server and CA."""
    conf = api_client.configuration
    ca = Path(conf.ssl_ca_cert).read_bytes() if conf.ssl_ca_cert else None
    token = request_token(api_client, duration_s)
    return write_kubeconfig(out, kubeconfig_for(conf.host, token=token, ca_pem=ca))


def in_cluster_kubeconfig(out: str | Path) -> Path:
    """Inside a pod: a kubeconfig that reads the mounted (kubelet-rotated) token file."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise SystemExit("KUBERNETES_SERVICE_HOST is not set: not running in a pod")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    ca = (IN_CLUSTER / "ca.crt").read_bytes()
    return write_kubeconfig(out, kubeconfig_for(server, ca_pem=ca, token_file=str(IN_CLUSTER / "token")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clusterproof.rbac", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("apply", "kubeconfig"):
        p = sub.add_parser(name)
        p.add_argument("--kubeconfig", default=None, help="An admin kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
        p.add_argument("--context", default=None)
        if name == "kubeconfig":
            p.add_argument("--out", required=True)
            p.add_argument("--duration", type=int, default=7200, help="Token lifetime in seconds (default 7200)")
    p = sub.add_parser("in-cluster")
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    if args.cmd == "in-cluster":
        print(in_cluster_kubeconfig(args.out))
        return 0
    from . import kube

    try:
        api = kube.new_client(kube.resolve_kubeconfig(args.kubeconfig), args.context)
    except kube.InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    if args.cmd == "apply":
        for name in apply(api):
            print(f"applied {name}")
        return 0
    print(make_sa_kubeconfig(api, args.out, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
