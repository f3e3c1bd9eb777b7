"""A CA, certificates and kubeconfigs for the testbed (the `cryptography` package)."""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS = 365


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _load(pki: Path, name: str):
    cert = x509.load_pem_x509_certificate((pki / f"{name}.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / f"{name}.key").read_bytes(), None)
    return cert, key


def ensure_ca(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "ca.crt").exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clusterproof-testbed-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=DAYS * 10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(key, pki / "ca.key")
    (pki / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _alt_names(sans: tuple[str, ...]) -> x509.SubjectAlternativeName:
    alt: list[x509.GeneralName] = []
    for s in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            alt.append(x509.DNSName(s))
    return x509.SubjectAlternativeName(alt)


def _issue(pki: Path, subject: x509.Name, public_key, not_before: dt.datetime, not_after: dt.datetime,
           server: bool, alt: x509.SubjectAlternativeName | None) -> x509.Certificate:
    """A certificate for PUBLIC_KEY signed by the testbed CA."""
    ca_cert, ca_key = _load(pki, "ca")
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
         .public_key(public_key).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if alt is not None:
        b = b.add_extension(alt, critical=False)
    return b.sign(ca_key, hashes.SHA256())


def ensure_cert(pki: Path, name: str, cn: str, orgs: tuple[str, ...] = (), server: bool = False,
                sans: tuple[str, ...] = ()) -> None:
    """Issue `name`.crt/.key signed by the CA unless it exists."""
    if (pki / f"{name}.crt").exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    now = dt.datetime.now(dt.UTC)
    cert = _issue(pki, x509.Name(attrs), key.public_key(), now - dt.timedelta(minutes=5), now + dt.timedelta(days=DAYS),
                  server, _alt_names(sans) if sans else None)
    _write_key(key, pki / f"{name}.key")
    (pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def reissue(pki: Path, cert_pem: bytes, key_path: Path, days_left: float) -> bytes:
    """CERT_PEM issued again by the CA for the same key, subject and SANs, valid from now for DAYS_LEFT days (the
    apiserver-cert-expiring fault); returns the new certificate's PEM."""
    old = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    try:
        alt = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        alt = None
    now = dt.datetime.now(dt.UTC)
    cert = _issue(pki, old.subject, key.public_key(), now - dt.timedelta(minutes=5), now + dt.timedelta(days=days_left),
                  True, alt)
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_expired(pki: Path, cn: str, sans: tuple[str, ...], ago_days: float) -> tuple[bytes, bytes]:
    """A serving certificate and its key, issued by the CA for CN and SANS, that expired AGO_DAYS days ago (the
    kubelet-cert-expired fault): (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    end = now - dt.timedelta(days=ago_days)
    cert = _issue(pki, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), key.public_key(),
                  end - dt.timedelta(days=DAYS), end, True, _alt_names(sans))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


def ensure_sa_keys(pki: Path) -> None:
    if (pki / "sa.key").exists():
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(key, pki / "sa.key")
    (pki / "sa.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo))


def write_kubeconfig(path: Path, pki: Path, cert: str, server: str, user: str) -> None:
    """A kubeconfig with embedded CA and client certificate (as kubeadm writes them)."""
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: clusterproof-testbed
  cluster:
    server: {server}
    certificate-authority-data: {b64(pki / 'ca.crt')}
users:
- name: {user}
  user:
    client-certificate-data: {b64(pki / f'{cert}.crt')}
    client-key-data: {b64(pki / f'{cert}.key')}
contexts:
- name: {user}@clusterproof-testbed
  context:
    cluster: clusterproof-testbed
    user: {user}
current-context: {user}@clusterproof-testbed
""")
    path.chmod(0o600)
