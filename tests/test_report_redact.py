"""clusterproof.redact: what is masked (planted secrets) and what is left alone (ordinary check text)."""
from __future__ import annotations

import base64
import logging

import pytest

from clusterproof import redact

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLXBsYW50ZWQ"
PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIPlantedKeyMaterial0123456789abcdefABCDEF\n-----END EC PRIVATE KEY-----"


@pytest.mark.parametrize(("text", "secret"), [
    (f"token: {JWT}", JWT),
    ("    token: kc-plain-token-value-123", "kc-plain-token-value-123"),
    ("    client-key-data: TFMwdExTMUNSVWRKVGlCU1UwRWdVRkpKVmtGVVJTQkxSVmt0TFMwdExRbz0=", "TFMwdExTMUNSV"),
    ('{"client-certificate-data": "QUJDREVGR0g="}', "QUJDREVGR0g="),
    ("Authorization: Bearer abc.def-ghi_123", "abc.def-ghi_123"),
    ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    (f"key file:\n{PEM}\nafter", "PlantedKeyMaterial"),
    ("MY_API_TOKEN=supersecretvalue1 next", "supersecretvalue1"),
    ("DB_PASSWORD: hunter2hunter2", "hunter2hunter2"),
    ("AWS_SECRET_ACCESS_KEY='wJalrXUtnFEMI/K7MDENG'", "wJalrXUtnFEMI/K7MDENG"),
    ("https://admin:pa55word@198.19.0.1:6443/api", "pa55word"),
    ("password = 'hunter2'", "hunter2"),
    ("kubeadm join --token abcdef.0123456789abcdef", "abcdef.0123456789abcdef"),
    ("client-key-data: |\n  AAAAsecretline1\n  BBBBsecretline2\nnext: ok", "secretline"),
    ("{'password': 'pw-in-a-dict-repr'}", "pw-in-a-dict-repr"),
])
def test_secret_is_masked(text: str, secret: str) -> None:
    out = redact.redact(text)
    assert secret not in out
    assert redact.MASK in out


@pytest.mark.parametrize("text", [
    "net.ipv4.ip_forward is 0 on ssh://tb-node-2, expected 1; fix: sysctl -w net.ipv4.ip_forward=1",
    "{'key': 'node-role.kubernetes.io/control-plane', 'value': '', 'effect': 'NoSchedule'}",
    "timed out after 120s waiting for deployment hello/hello-python to have 4 ready replicas",
    "sha256 616db0f2d8157aa9910abb5e015837e49daeb6b9bd688eed5d5a15645358f9b8",
    "--ssh-key /var/lib/clusterproof-testbed/ssh/id_ed25519",
    "token: ''",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact.redact(text) == text


def test_known_values_are_masked_without_a_key_beside_them(tmp_path, monkeypatch) -> None:
    cert = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n" + b"Q" * 40 + b"\n-----END CERTIFICATE-----\n").decode()
    kc = tmp_path / "kubeconfig"
    kc.write_text(f"users:\n- name: u\n  user:\n    token: kubeconfig-token-0042\n    client-certificate-data: {cert}\n"
                  "    exec:\n      env:\n      - name: VAULT_TOKEN\n        value: exec-env-token-77\n")
    redact.register_kubeconfig(str(kc))
    monkeypatch.setenv("CLUSTERPROOF_TEST_SECRET", "env-value-9f8e7d")
    monkeypatch.setenv("SOME_TOKEN_AUDIENCE", "kubernetes")
    redact.register_environment()
    out = redact.redact("used kubeconfig-token-0042 and exec-env-token-77 and env-value-9f8e7d; " + "Q" * 40
                        + " against kubernetes")
    assert "kubeconfig-token-0042" not in out
    assert "exec-env-token-77" not in out
    assert "env-value-9f8e7d" not in out
    assert "Q" * 40 not in out
    assert out.endswith("against kubernetes")


def test_structures_are_masked_by_key() -> None:
    doc = {"token": "abc", "nested": [{"password": "x", "output": f"Bearer {JWT}"}], "key": "k", "n": 3}
    out = redact.redact_obj(doc)
    assert out == {"token": redact.MASK, "nested": [{"password": redact.MASK, "output": f"Bearer {redact.MASK}"}],
                   "key": "k", "n": 3}


def test_log_records_are_redacted(caplog) -> None:
    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(redact.LogRecordRedactor(factory))
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("cp-test").info("header Authorization: Bearer %s", "tok-0123456789")
    finally:
        logging.setLogRecordFactory(factory)
    assert caplog.records[-1].getMessage() == "header Authorization: Bearer [REDACTED]"
