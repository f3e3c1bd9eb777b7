"""CP-004's judging of certificates (made here with `cryptography`) and CP-003's of /readyz and /livez answers."""
from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clusterproof import certs, controlplane
from clusterproof.verdict import Status

NOW = dt.datetime(2026, 11, 28, 9, 0, 0, tzinfo=dt.UTC)


def make(cn: str, not_after: dt.datetime, not_before: dt.datetime | None = None) -> tuple[x509.Certificate, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or min(NOW - dt.timedelta(days=1), not_after - dt.timedelta(days=365)))
            .not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return cert, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())


def cert(cn: str, days: float, kind: str = certs.KUBEADM, not_before: dt.datetime | None = None) -> certs.Cert:
    c, _ = make(cn, NOW + dt.timedelta(days=days), not_before)
    return certs.describe(c, f"/etc/kubernetes/pki/{cn}.crt", "ssh://cp-1", kind)


def pem(c: x509.Certificate) -> str:
    return c.public_bytes(serialization.Encoding.PEM).decode()


def test_a_certificate_with_a_year_left_passes() -> None:
    v = certs.judge_certs("certificates seen from ssh://cp-1", [cert("apiserver", 364.5), cert("ca", 3600, certs.CA)],
                          NOW)
    assert v.status == Status.PASS
    assert "2 certificates; the first to expire: /etc/kubernetes/pki/apiserver.crt (CN=apiserver)" in v.observed
    assert "notAfter 2027-11-27T21:00:00Z, 364 days left" in v.observed


def test_under_30_days_warns_with_name_not_after_days_and_fix() -> None:
    v = certs.judge_certs("certs", [cert("apiserver", 9.5, certs.APISERVER), cert("front-proxy-client", 200)], NOW)
    assert v.status == Status.WARN
    assert v.observed.startswith("1 expiring within 30 days (of 2)")
    assert v.rows == ("/etc/kubernetes/pki/apiserver.crt (CN=apiserver) from ssh://cp-1: notAfter "
                      "2026-12-07T21:00:00Z, 9 days left; fix: " + certs.FIXES[certs.APISERVER],)
    assert "kubeadm certs renew apiserver" in v.fix and "expected" in v.message
    # exactly 30 days left is no warning (kubeadm warns under 30)
    assert certs.judge_certs("certs", [cert("apiserver", 30)], NOW).status == Status.PASS


def test_an_expired_certificate_fails_and_lists_the_expiring_ones_too() -> None:
    kubelet = cert("tb-node-2", -1.2, certs.KUBELET_SERVING)
    v = certs.judge_certs("certificates seen from ssh://tb-node-2",
                          [cert("apiserver", 400), cert("etcd/server", 12), kubelet], NOW)
    assert v.status == Status.FAIL
    assert v.observed.startswith("1 expired or not yet valid, 1 expiring within 30 days (of 3); first: ")
    assert "notAfter 2026-11-27T04:12:00Z, expired 1 day ago" in v.rows[0]
    assert "12 days left" in v.rows[1] and len(v.rows) == 2
    assert "serverTLSBootstrap" in v.fix and "kubeadm certs renew all" in v.fix


def test_a_certificate_not_valid_yet_fails() -> None:
    c = cert("apiserver", 300, not_before=NOW + dt.timedelta(hours=2))
    v = certs.judge_cert(c, NOW)
    assert v.status == Status.FAIL and "not valid before 2026-11-28T11:00:00Z" in v.observed


def test_a_ca_gets_the_ca_fix_not_kubeadm_renew() -> None:
    v = certs.judge_cert(cert("ca", 20, certs.CA), NOW)
    assert v.status == Status.WARN and "not renewed by kubeadm certs renew" in v.fix


def test_nothing_read_is_an_error_not_a_pass() -> None:
    v = certs.judge_certs("certs", [], NOW, ["kube-apiserver serving certificate at 10.0.0.1:6443: refused"])
    assert v.status == Status.ERROR and "refused" in v.reason


def test_pem_bundles_keep_only_certificate_blocks() -> None:
    a, key = make("a", NOW)
    b, _ = make("b", NOW)
    found = certs.pem_certificates(key.decode() + pem(a) + "junk\n" + pem(b))
    assert [c.subject.rfc4514_string() for c in found] == ["CN=a", "CN=b"]
    assert certs.pem_certificates("no certificate here") == []


def test_host_dump_reads_files_inline_data_and_referenced_files() -> None:
    ca, _ = make("kubernetes", NOW + dt.timedelta(days=3000))
    admin, _ = make("kubernetes-admin", NOW + dt.timedelta(days=5))
    kubelet, _ = make("system:node:cp-1", NOW - dt.timedelta(days=2))
    dump = (f"==> pem /etc/kubernetes/pki/ca.crt\n{pem(ca)}"
            f"==> data /etc/kubernetes/admin.conf\n{base64.b64encode(pem(admin).encode()).decode()}\n"
            f"==> pem /etc/kubernetes/kubelet.conf /var/lib/kubelet/pki/kubelet-client-current.pem\n{pem(kubelet)}"
            "==> unreadable /etc/kubernetes/pki/etcd/server.crt\n"
            "==> none /etc/kubernetes/scheduler.conf\n")
    found, unread = certs.parse_host_dump(dump, "ssh://cp-1")
    kinds = {c.name: (c.kind, c.where) for c in found}
    assert kinds == {"/etc/kubernetes/pki/ca.crt": (certs.CA, "ssh://cp-1"),
                     "/etc/kubernetes/admin.conf client certificate": (certs.KUBEADM, "ssh://cp-1"),
                     "/etc/kubernetes/kubelet.conf client certificate": (
                         certs.KUBELET_CLIENT, "ssh://cp-1:/var/lib/kubelet/pki/kubelet-client-current.pem")}
    assert unread == ["/etc/kubernetes/pki/etcd/server.crt on ssh://cp-1: not readable by the host transport's user",
                      "/etc/kubernetes/scheduler.conf on ssh://cp-1: no client certificate found"]
    v = certs.judge_certs("certificates seen from ssh://cp-1", found, NOW, unread)
    assert v.status == Status.FAIL and "kubelet.conf client certificate" in v.rows[0]
    assert "expired 2 days ago" in v.rows[0] and "rotateCertificates" in v.rows[0]
    assert "admin.conf client certificate" in v.rows[1] and "5 days left" in v.rows[1]


def test_host_script_reads_a_kubeadm_layout(tmp_path) -> None:
    """HOST_SCRIPT run by sh against a fake /etc/kubernetes (its paths rewritten into tmp_path): keys never leave."""
    import subprocess

    etc = tmp_path / "etc" / "kubernetes"
    (etc / "pki" / "etcd").mkdir(parents=True)
    ca, key = make("kubernetes", NOW)
    client, _ = make("kubernetes-admin", NOW)
    (etc / "pki" / "ca.crt").write_text(pem(ca))
    (etc / "pki" / "etcd" / "server.crt").write_text(pem(ca))
    (etc / "pki" / "ca.key").write_bytes(key)
    (etc / "admin.conf").write_text("users:\n- user:\n    client-certificate-data: "
                                    f"{base64.b64encode(pem(client).encode()).decode()}\n    client-key-data: SECRET\n")
    both = tmp_path / "kubelet-client-current.pem"
    both.write_text(key.decode() + pem(client))
    (etc / "kubelet.conf").write_text(f"users:\n- user:\n    client-certificate: {both}\n    client-key: {both}\n")
    script = certs.HOST_SCRIPT.replace("/etc/kubernetes", str(etc))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10, check=True).stdout
    assert "PRIVATE KEY" not in out and "SECRET" not in out
    found, unread = certs.parse_host_dump(out, "ssh://cp-1")
    assert sorted(c.name for c in found) == [f"{etc}/admin.conf client certificate",
                                             f"{etc}/kubelet.conf client certificate",
                                             f"{etc}/pki/ca.crt", f"{etc}/pki/etcd/server.crt"]
    assert unread == []


@pytest.fixture
def tls_server(tmp_path):
    """A local TLS server presenting a certificate that expired yesterday; yields its port."""
    c, key = make("expired.example", NOW - dt.timedelta(days=1))
    (tmp_path / "c.pem").write_text(pem(c))
    (tmp_path / "k.pem").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    srv.close()


def test_peer_certificate_reads_an_expired_certificate_without_verifying(tls_server) -> None:
    c = certs.peer_certificate("127.0.0.1", tls_server, 5)
    got = certs.describe(c, "kubelet serving certificate of n1", f"TLS handshake with 127.0.0.1:{tls_server}",
                         certs.KUBELET_SERVING)
    v = certs.judge_certs("certs", [got], dt.datetime.now(dt.UTC))
    assert v.status == Status.FAIL and "CN=expired.example" in v.observed


def test_an_unreachable_port_raises_for_evidence() -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(OSError):
        certs.peer_certificate("127.0.0.1", port, 2)


# ------------------------------------------------------------------ CP-003

READY_BAD = ("[+]ping ok\n[+]log ok\n[+]etcd ok\n[+]etcd-readiness ok\n[-]etcd-override-0 failed: reason withheld\n"
             "[-]etcd-override-readiness-0 failed: reason withheld\n[+]informer-sync ok\n[+]shutdown ok\n"
             "readyz check failed")
LIVE_BAD = "[+]ping ok\n[+]log ok\n[+]etcd ok\n[-]etcd-override-0 failed: reason withheld\nlivez check failed"


def test_failing_checks_are_listed_by_name_with_the_etcd_fix() -> None:
    v = controlplane.judge_health("https://10.0.0.1:6443", [controlplane.HealthAnswer("/readyz", 500, READY_BAD),
                                                             controlplane.HealthAnswer("/livez", 500, LIVE_BAD)])
    assert v.status == Status.FAIL
    assert v.observed == ("/readyz HTTP 500, /livez HTTP 500; failing: etcd-override-0, etcd-override-readiness-0")
    assert v.rows == ("/readyz: [-]etcd-override-0 failed: reason withheld",
                      "/readyz: [-]etcd-override-readiness-0 failed: reason withheld",
                      "/livez: [-]etcd-override-0 failed: reason withheld")
    assert "kubectl get --raw='/readyz?verbose'" in v.fix and "etcdctl endpoint health" in v.fix
    assert "expected HTTP 200 from /readyz?verbose and /livez?verbose" in v.message


def test_all_checks_ok_passes() -> None:
    ok = "[+]ping ok\n[+]etcd ok\nreadyz check passed"
    v = controlplane.judge_health("s", [controlplane.HealthAnswer("/readyz", 200, ok),
                                        controlplane.HealthAnswer("/livez", 200, "[+]ping ok\nlivez check passed")])
    assert v.status == Status.PASS and v.observed == "/readyz HTTP 200, /livez HTTP 200, 3 checks [+]ok"


def test_a_refusal_or_no_answer_is_an_error_never_a_pass() -> None:
    ok = controlplane.HealthAnswer("/livez", 200, "[+]ping ok")
    for status, body, says in ((403, 'forbidden: User "x" cannot get path "/readyz"', "was refused (403"),
                               (401, "Unauthorized", "was refused (401"),
                               (0, "MaxRetryError: connection refused", "got no answer"),
                               (404, "404 page not found", "does not serve it")):
        v = controlplane.judge_health("s", [controlplane.HealthAnswer("/readyz", status, body), ok])
        assert v.status == Status.ERROR and says in v.reason, (status, v.reason)


def test_a_bad_status_without_check_lines_still_fails() -> None:
    v = controlplane.judge_health("s", [controlplane.HealthAnswer("/readyz", 503, "service unavailable")])
    assert v.status == Status.FAIL and v.rows == ("/readyz: HTTP 503 without a [-] check: service unavailable",)
