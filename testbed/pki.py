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


def ensure_cert(pki: Path, name: str, cn: str, orgs: tuple[str, ...] = (), server: bool = False,
                sans: tuple[str, ...] = ()) -> None:
    """Issue `name`.crt/.key signed by the CA unless it exists."""
    if (pki / f"{name}.crt").exists():
        return
    ca_cert, ca_key = _load(pki, "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    now = dt.datetime.now(dt.UTC)
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=DAYS))
         .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if sans:
        alt: list[x509.GeneralName] = []
        for s in sans:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                alt.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    _write_key(key, pki / f"{name}.key")
    (pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


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
