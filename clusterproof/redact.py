"""Remove credentials from text and data before anything is written to a report or a log.

Two layers, because neither alone is enough:
- patterns: kubeconfig fields (token, client-key-data, ...), Authorization/Bearer headers,
  PEM blocks, JWTs, bootstrap tokens, URL userinfo, and NAME=value pairs whose NAME looks
  like *TOKEN*/*PASSWORD*/*SECRET*/*KEY*;
- known values: the secrets of the kubeconfig in use and of such environment variables are
  registered once and replaced wherever they appear, even without a telltale key beside them.
"""
from __future__ import annotations

import os
import re
import threading
from typing import Any

MASK = "[REDACTED]"
_MIN_KNOWN = 8  # shorter values ("true", "1") would mask harmless text

# Environment-variable-style names (upper case) whose values are secrets.
_SECRET_ENV = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|KEY")
# Kubeconfig / client fields whose values are secrets (compared case-insensitively, - and _ alike).
_SECRET_FIELDS = {
    "token", "id-token", "refresh-token", "access-token", "bearer-token", "client-key-data", "client-key",
    "client-certificate-data", "certificate-authority-data", "password", "passwd", "client-secret", "secret",
    "authorization", "api-key", "apikey", "private-key", "ssh-key-data", "auth",
}

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?(?:-----END \1-----|\Z)", re.DOTALL)
_BEARER = re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/\-]+=*", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_BOOTSTRAP = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
# key: value / key=value / "key": "value" / 'key': 'value' where the key names a secret field.
_FIELD = re.compile(
    r"""(?P<pre>(?P<q>["']?)(?P<key>[A-Za-z0-9_.-]+)(?P=q)\s*(?::|=)[ \t]*)"""
    r"""(?P<val>\[REDACTED\]|"[^"\n]*"|'[^'\n]*'|[^\s,;}\]]+)""",
)

_PLAIN_WORD = re.compile(r"[a-z][a-z.-]{0,14}")
_lock = threading.Lock()
_known: set[str] = set()


def _norm(key: str) -> str:
    return key.strip().lower().replace("_", "-")


def is_secret_name(name: str) -> bool:
    """True for a field or variable name whose value must never be shown."""
    if name.isupper():
        return bool(_SECRET_ENV.search(name))
    n = _norm(name)
    return n in _SECRET_FIELDS or n.endswith(_SECRET_SUFFIXES)


_SECRET_SUFFIXES = ("-token", "-password", "-passwd", "-secret", "-key-data", "-certificate-data", "-api-key",
                    "-private-key", "-credentials")


def register(value: Any) -> None:
    """Remember a secret value so that it is masked wherever it appears."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return
    value = value.strip()
    # A plain short word ("kubernetes", "default") is a setting, not a secret, and masking it would
    # blank harmless text all over the report.
    if len(value) >= _MIN_KNOWN and not _PLAIN_WORD.fullmatch(value):
        with _lock:
            _known.add(value)


def known_count() -> int:
    return len(_known)


def register_environment(environ: dict[str, str] | None = None) -> None:
    """Register the values of environment variables named like *TOKEN*, *PASSWORD*, *SECRET*, *KEY*."""
    for name, value in (os.environ if environ is None else environ).items():
        if is_secret_name(name) and not _looks_like_path(value):
            register(value)


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~/", "./")) and "\n" not in value and " " not in value


def register_kubeconfig(path: str | None) -> None:
    """Register every secret the kubeconfig holds (tokens, keys, passwords, cert data, exec env)."""
    if not path:
        return
    try:
        import yaml

        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except Exception:
        return
    _register_tree(doc)


def _register_tree(obj: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and is_secret_name(k) and isinstance(v, (str, bytes)):
                register(v)
                if isinstance(v, str) and len(v) > 64:  # base64 data: also its decoded PEM body
                    _register_decoded(v)
            elif k == "env" and isinstance(v, list):  # exec plugin env: [{name, value}]
                for e in v:
                    if isinstance(e, dict) and is_secret_name(str(e.get("name", ""))):
                        register(e.get("value"))
            else:
                _register_tree(v)
    elif isinstance(obj, list):
        for v in obj:
            _register_tree(v)


def _register_decoded(data: str) -> None:
    import base64
    import binascii

    try:
        text = base64.b64decode(data, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return
    for line in text.splitlines():
        if not line.startswith("-----") and len(line) >= 32:
            register(line)


def _field_sub(m: re.Match) -> str:
    if not is_secret_name(m.group("key")):
        return m.group(0)
    val = m.group("val")
    if val in ("", '""', "''", "null", "None", "~", "{", "[", "|", ">", "|-", ">-", MASK) \
            or val.lower() in ("bearer", "basic") or val.strip("\"'") == MASK:
        return m.group(0)
    if val[:1] in "\"'":
        return m.group("pre") + val[0] + MASK + val[0]
    return m.group("pre") + MASK


def redact(text: Any) -> Any:
    """The text with every credential replaced by [REDACTED]; non-strings are returned unchanged."""
    if not isinstance(text, str) or not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    text = _PEM.sub(lambda m: f"-----BEGIN {m.group(1)}----- {MASK} -----END {m.group(1)}-----", text)
    text = _BEARER.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = _JWT.sub(MASK, text)
    text = _BOOTSTRAP.sub(MASK, text)
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _FIELD.sub(_field_sub, text)
    return _multiline_fields(text)


_BLOCK_FIELD = re.compile(r"^(?P<ind>[ \t]*)(?P<key>[A-Za-z0-9_.-]+):[ \t]*[|>][-+]?[ \t]*\n", re.MULTILINE)


def _multiline_fields(text: str) -> str:
    """YAML block scalars (`key: |` + indented lines) under a secret key: drop the lines."""
    out, pos = [], 0
    for m in _BLOCK_FIELD.finditer(text):
        if m.start() < pos or not is_secret_name(m.group("key")):
            continue
        ind = len(m.group("ind").expandtabs())
        end = m.end()
        lines = text[end:].split("\n")
        skip = 0
        for line in lines:
            if line.strip() and len(line) - len(line.lstrip()) <= ind:
                break
            skip += len(line) + 1
        out.append(text[pos:m.end()] + " " * (ind + 2) + MASK + "\n")
        pos = min(end + skip, len(text))
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like structure with secret-named fields masked and every string redacted."""
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and isinstance(v, (str, bytes)) and v
                    else redact_obj(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    if isinstance(obj, str):
        return redact(obj)
    return obj


class LogRecordRedactor:
    """A log-record factory wrapper: every record's message is redacted when it is created."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, *args, **kwargs):
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record
