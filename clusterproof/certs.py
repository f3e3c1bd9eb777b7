"""CP-004: the cluster's certificates and when they expire, as `kubeadm certs check-expiration` judges them.

What is read: the CA(s) and the client certificate the run's kubeconfig holds, the certificate the API server
and each kubelet present in a TLS handshake (read, not verified), and on a host the host transport reaches
kubeadm's files: /etc/kubernetes/pki/*.crt, /etc/kubernetes/pki/etcd/*.crt and the client certificates of
/etc/kubernetes/{admin,super-admin,controller-manager,scheduler,kubelet}.conf. An expired certificate (or one not
valid yet) fails; one with less than WARN_DAYS left warns, as kubeadm's own warning does.

The judging is pure (certificates and a time in, a Verdict out); the small readers below it do the I/O.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509

from .verdict import Status, Verdict

WARN_DAYS = 30

# What renews each kind of certificate (a failure's row names the certificate; this says what to run).
CA, KUBEADM, APISERVER, KUBECONFIG, KUBELET_CLIENT, KUBELET_SERVING = (
    "ca", "kubeadm", "apiserver", "kubeconfig", "kubelet-client", "kubelet-serving")
FIXES = {
    CA: "a CA is not renewed by kubeadm certs renew: rotate it before it expires (Kubernetes docs: Manual Rotation "
        "of CA Certificates) and hand out kubeconfigs that trust the new one",
    KUBEADM: "on each control-plane node: kubeadm certs renew all, then restart the control-plane static pods "
             "(move /etc/kubernetes/manifests/*.yaml out and back, or crictl stop their containers) and copy the "
             "new /etc/kubernetes/admin.conf to whoever uses it",
    APISERVER: "on each control-plane node: kubeadm certs renew apiserver (or kubeadm certs renew all) and restart "
               "the kube-apiserver static pod; without kubeadm renew the file named by --tls-cert-file and restart "
               "the API server",
    KUBECONFIG: "the run's kubeconfig carries this certificate: get a fresh kubeconfig (kubeadm: kubeadm certs renew "
                "admin.conf, or kubeadm kubeconfig user --client-name NAME) and point --kubeconfig at it",
    KUBELET_CLIENT: "the kubelet's client certificate: set rotateCertificates: true in its config (kubeadm's "
                    "default) and restart the kubelet; an expired one is replaced by re-joining the node or by "
                    "kubeadm kubeconfig user --client-name system:node:NODE --org system:nodes",
    KUBELET_SERVING: "the kubelet's serving certificate: with serverTLSBootstrap: true and rotateCertificates the "
                     "kubelet renews it (approve its CSR: kubectl get csr); a self-signed one "
                     "(/var/lib/kubelet/pki/kubelet.crt and .key) is made anew when both are deleted and the kubelet "
                     "restarted; a tlsCertFile is renewed where it was issued",
}


@dataclass(frozen=True)
class Cert:
    """One certificate read from one place."""

    name: str           # what it is: "cluster CA", "kube-apiserver serving certificate", "/etc/kubernetes/pki/ca.crt"
    where: str          # where it was read: "kubeconfig", "TLS handshake with 10.0.0.1:6443", "ssh://cp-1"
    kind: str           # one of the FIXES keys
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def label(self) -> str:
        return f"{self.name} ({self.subject}) from {self.where}"


def describe(cert: x509.Certificate, name: str, where: str, kind: str) -> Cert:
    return Cert(name, where, kind, cert.subject.rfc4514_string() or "no subject",
                cert.not_valid_before_utc, cert.not_valid_after_utc)


def pem_certificates(data: bytes | str) -> list[x509.Certificate]:
    """Every CERTIFICATE block in DATA (a bundle, a kubeconfig's decoded -data, a file with a key too); other blocks
    are ignored. ValueError when a CERTIFICATE block does not parse."""
    if isinstance(data, str):
        data = data.encode()
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
    return [x509.load_pem_x509_certificate(b) for b in blocks]


def _stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def days_left(cert: Cert, now: dt.datetime) -> float:
    return (cert.not_after - now).total_seconds() / 86400


def _days(n: float) -> str:
    whole = int(n)
    return f"{whole} day" if whole == 1 else f"{whole} days"


def state(cert: Cert, now: dt.datetime) -> str:
    """`notAfter T, N days left` (or `expired N days ago`, and a notBefore still to come)."""
    left = days_left(cert, now)
    if left < 0:
        text = f"expired {_days(-left)} ago" if left <= -1 else "expired today"
    else:
        text = f"{_days(left)} left" if left >= 1 else f"{left * 24:.0f} hours left"
    if cert.not_before > now:
        text += f", not valid before {_stamp(cert.not_before)}"
    return f"notAfter {_stamp(cert.not_after)}, {text}"


def row(cert: Cert, now: dt.datetime) -> str:
    """`NAME (SUBJECT) from WHERE: notAfter T, N days left`."""
    return f"{cert.label}: {state(cert, now)}"


def judge_cert(cert: Cert, now: dt.datetime, warn_days: int = WARN_DAYS) -> Verdict:
    """One certificate: expired or not yet valid fails, under WARN_DAYS left warns, else passes."""
    expected = f"valid now and for at least {warn_days} more days"
    fix = FIXES[cert.kind]
    if cert.not_after <= now or cert.not_before > now:
        return Verdict.failed(cert.label, expected, state(cert, now), fix)
    if days_left(cert, now) < warn_days:
        return Verdict.warned(cert.label, expected, state(cert, now), fix)
    return Verdict.passed(cert.label, expected, state(cert, now))


def judge_certs(subject: str, certs: list[Cert], now: dt.datetime, unread: list[str] | None = None,
                warn_days: int = WARN_DAYS) -> Verdict:
    """CP-004 for one target: every expired (or not yet valid) certificate fails, else every one under WARN_DAYS
    warns; each row names the certificate, its notAfter, the days left and the fix. Nothing read at all is an
    error (no pass is earned on no evidence); what could not be read is evidence, not a failure."""
    expected = f"every certificate valid now and for at least {warn_days} more days"
    if not certs:
        why = "; ".join(unread or []) or "no certificate found"
        return Verdict.errored(subject, f"no certificate could be read: {why}")
    judged = sorted(((c, judge_cert(c, now, warn_days)) for c in certs), key=lambda cv: cv[0].not_after)
    failed = [(c, v) for c, v in judged if v.status == Status.FAIL]
    warned = [(c, v) for c, v in judged if v.status == Status.WARN]
    bad = failed + warned
    if bad:
        rows = [f"{row(c, now)}; fix: {FIXES[c.kind]}" for c, _ in bad]
        parts = [f"{len(failed)} expired or not yet valid" if failed else "",
                 f"{len(warned)} expiring within {warn_days} days" if warned else ""]
        first = bad[0][0]
        observed = (", ".join(p for p in parts if p) + f" (of {len(certs)}); first: {row(first, now)}")
        fixes = "; ".join(dict.fromkeys(FIXES[c.kind] for c, _ in bad))
        make = Verdict.failed if failed else Verdict.warned
        return make(subject, expected, observed, fixes, rows)
    first = judged[0][0]
    return Verdict.passed(subject, expected, f"{len(certs)} certificates; the first to expire: {row(first, now)}")


# ------------------------------------------------------------------ reading them

def peer_certificate(host: str, port: int, timeout: float) -> x509.Certificate:
    """The certificate HOST:PORT presents in a TLS handshake, read without verifying it (a client certificate is
    not offered: the API server and the kubelet only ask for one). OSError/ssl.SSLError when there is none."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ipaddress.ip_address(host)
        sni = None
    except ValueError:
        sni = host
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            ctx.wrap_socket(sock, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} presented no certificate")
    return x509.load_der_x509_certificate(der)


def read_file_certs(path: str | None, name: str, where: str, kind: str) -> tuple[list[Cert], str]:
    """The certificates in a local file (the client writes a kubeconfig's -data to temporary files); (certs, why
    none were read)."""
    if not path:
        return [], ""
    try:
        with open(path, "rb") as fh:
            found = pem_certificates(fh.read())
    except (OSError, ValueError) as exc:
        return [], f"{name} ({path}): {exc}"
    if not found:
        return [], f"{name} ({path}): no PEM certificate in it"
    many = len(found) > 1
    return [describe(c, f"{name} #{i + 1}" if many else name, where, kind) for i, c in enumerate(found)], ""


# kubeadm's files on a host: each certificate file, each kubeconfig's client certificate (inline data, or a file it
# names, as kubelet.conf names kubelet-client-current.pem). Only CERTIFICATE blocks leave the host, never a key.
KUBEADM_CONFS = ("admin", "super-admin", "controller-manager", "scheduler", "kubelet")
HOST_SCRIPT = (
    "certs() { sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' \"$1\"; }; "
    "for f in /etc/kubernetes/pki/*.crt /etc/kubernetes/pki/etcd/*.crt; do [ -f \"$f\" ] || continue; "
    "if [ -r \"$f\" ]; then echo \"==> pem $f\"; certs \"$f\"; else echo \"==> unreadable $f\"; fi; done; "
    "for c in " + " ".join(KUBEADM_CONFS) + "; do f=/etc/kubernetes/$c.conf; [ -f \"$f\" ] || continue; "
    "[ -r \"$f\" ] || { echo \"==> unreadable $f\"; continue; }; "
    "d=$(sed -n 's/^[[:space:]]*client-certificate-data:[[:space:]]*//p' \"$f\" | head -n 1); "
    "p=$(sed -n 's/^[[:space:]]*client-certificate:[[:space:]]*//p' \"$f\" | head -n 1); "
    "if [ -n \"$d\" ]; then echo \"==> data $f\"; echo \"$d\"; "
    "elif [ -n \"$p\" ] && [ -r \"$p\" ]; then echo \"==> pem $f $p\"; certs \"$p\"; "
    "else echo \"==> none $f $p\"; fi; done; true")


def _host_kind(path: str) -> tuple[str, str]:
    """(name, kind) for a kubeadm file: CAs apart (kubeadm does not renew them), kubelet.conf's client cert apart."""
    base = path.rsplit("/", 1)[-1]
    if base.endswith("ca.crt"):
        return path, CA
    if base == "kubelet.conf":
        return f"{path} client certificate", KUBELET_CLIENT
    if base.endswith(".conf"):
        return f"{path} client certificate", KUBEADM
    return path, KUBEADM


def parse_host_dump(text: str, where: str) -> tuple[list[Cert], list[str]]:
    """HOST_SCRIPT's output -> (certificates, what could not be read). A host without kubeadm's files gives none."""
    certs: list[Cert] = []
    unread: list[str] = []
    sections = re.split(r"^==> ", text, flags=re.M)
    for sec in sections[1:]:
        head, _, body = sec.partition("\n")
        words = head.split()
        if len(words) < 2:
            continue
        how, path = words[0], words[1]
        name, kind = _host_kind(path)
        if how == "unreadable":
            unread.append(f"{path} on {where}: not readable by the host transport's user")
            continue
        if how == "none":
            named = f" (its client-certificate {words[2]} is not readable)" if len(words) > 2 else ""
            unread.append(f"{path} on {where}: no client certificate found{named}")
            continue
        try:
            if how == "data":
                found = pem_certificates(base64.b64decode(body.strip(), validate=False))
            else:
                found = pem_certificates(body)
        except (ValueError, binascii.Error) as exc:
            unread.append(f"{path} on {where}: {exc}")
            continue
        if not found:
            unread.append(f"{path} on {where}: no certificate in it")
        if how == "pem" and len(words) > 2:
            where_file = f"{where}:{words[2]}"
        else:
            where_file = where
        many = len(found) > 1
        certs += [describe(c, f"{name} #{i + 1}" if many else name, where_file, kind) for i, c in enumerate(found)]
    return certs, unread


def table(certs: list[Cert], now: dt.datetime) -> str:
    """Every certificate read, one line each, soonest to expire first (the check's evidence)."""
    return "\n".join(row(c, now) for c in sorted(certs, key=lambda c: c.not_after)) or "(none)"
