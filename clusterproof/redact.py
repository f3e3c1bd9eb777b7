"""Remove credentials from text and data before anything is written to a report or a log.

Two layers, because neither alone is enough:
- patterns: kubeconfig fields (token, client-key-data, ...; camelCase too), Authorization headers,
  PEM blocks, JWTs, bootstrap tokens, well-known token shapes (exec plugins, GitHub, GitLab, AWS),
  URL userinfo and query parameters, `--flag value` options, pod-env name/value pairs, and
  NAME=value pairs whose NAME looks like *TOKEN*/*PASSWORD*/*SECRET*/*KEY*;
- known values: the secrets of the kubeconfig(s) in use and of such environment variables are
  registered once and replaced wherever they appear, even without a telltale key beside them.

Every pattern is anchored (a look-behind or a literal prefix) so that redact() stays linear on
long runs without spaces (base64 blobs, minified JSON): it runs on every report string.

Left alone on purpose: image tags and sha256: digests (public), IPs and ports, ssh user names,
`--token-ttl` and other flags that merely mention a secret, `-p` outside a `login` command (it is
--previous / --port elsewhere), booleans under a secret-looking key, paths given to --client-key.
"""
from __future__ import annotations

import functools
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
    # AWS/INI style: the secret key and, as half of the pair that names the account, the key id.
    "access-key", "secret-key", "access-key-id", "secret-access-key",
    "certificate-key",  # kubeadm --certificate-key decrypts the uploaded control-plane certs
    ".dockerconfigjson", ".dockercfg",  # a registry Secret's data: base64 of {"auths": {...auth...}}
}

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?(?:-----END \1-----|\Z)", re.DOTALL)
# Any Authorization header, whatever the scheme (Bearer, Basic, Token, Digest, AWS4-HMAC-SHA256, none).
_AUTH_HEADER = re.compile(
    r"""(?<![A-Za-z0-9_-])(?P<pre>(?:proxy-)?authorization\\?["']?[ \t]*[:=][ \t]*\\?["']?"""
    r"""(?:[A-Za-z][A-Za-z0-9_-]*[ \t]+)?)(?P<val>[^\s"'\\,;]+)""", re.IGNORECASE)
# Bare "Bearer X" / "Basic X" in prose: only when X looks like a credential (a digit, + / =, or aBc mixed
# case), so that "Basic connectivity" or "Bearer token authentication" stay readable.
_BEARER = re.compile(r"\b((?i:Bearer|Basic))(\s+)(?=[A-Za-z0-9._~+/-]*(?:[0-9+/=]|[a-z][A-Z]))[A-Za-z0-9._~+/\-]+=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_BOOTSTRAP = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
# Tokens recognisable by their prefix alone, with or without a key beside them: exec-plugin tokens
# (aws-iam-authenticator/EKS, GCP OAuth, OpenShift), GitHub/GitLab/Slack tokens, AWS key ids, Google API keys.
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_-])(?:k8s-aws-v1\.[A-Za-z0-9_-]{20,}|ya29\.[A-Za-z0-9._-]{20,}|sha256~[A-Za-z0-9_-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])|AIza[A-Za-z0-9_-]{35})")
# URL userinfo: user:password@ (the password may hold @ and /: up to the last @ before the host; a
# host:port/path is not a password), or a bare token of 16+ characters before @ in an http(s)/git URL.
_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.-])(?:([a-z][a-z0-9+.-]*://)[^/\s:@\"'<>]*:(?![0-9]+(?:[/?#\s\"'<>]|$))[^\s\"'<>?#]{0,256}"
    r"|((?:https?|wss?|git(?:\+https?)?)://)[^/\s:@\"'<>?#]{16,})@(?=[A-Za-z0-9\[])", re.IGNORECASE)
# A secret query/fragment parameter (?access_token=X&...): mask the value only, up to the next &.
_QUERY = re.compile(r"(?P<pre>[?&#](?P<key>[A-Za-z0-9_.-]+)=)(?P<val>[^&#\s\"'<>]+)")
# `--token X` / `--password X` (space-separated); the = form is a key=value field below.
_FLAG = re.compile(r"""(?<![\w-])(?P<pre>(?P<key>--?[A-Za-z][A-Za-z0-9_-]*)[ \t]+)"""
                   r"""(?P<val>"[^"\n]*"|'[^'\n]*'|[^\s"'-]\S*)""")
# Words that follow a flag's name in CLI prose ("--token and --username are ..."): not a value.
_FLAG_PROSE = {"and", "or", "is", "are", "was", "were", "must", "to", "the", "a", "an", "with", "without", "flag",
               "option", "not", "cannot", "can", "requires", "required", "should", "will", "may", "value", "of",
               "for", "in", "when", "if", "given", "set", "instead"}
# `docker|podman|nerdctl|helm registry login ... -p X`: -p is the password only in a login command.
_LOGIN_P = re.compile(r"(?P<pre>(?<![\w-])login\b[^\n]{0,200}?(?<![\w-])-p[ \t]+)(?P<val>[^\s-]\S*)")
# curl/wget `-u user:password` / `--user user:password`: the part after the colon (not a uid:gid).
_USER_PASS = re.compile(r"(?P<pre>(?<![\w-])(?:-u|--user)(?:[ \t]+|=)[^\s:\"']+:)(?P<val>(?![0-9]+(?:\s|$))[^\s\"']+)")
# .netrc: machine H login U password P
_NETRC = re.compile(r"(?P<pre>\bmachine\s+\S+\s+login\s+\S+\s+password\s+)(?P<val>\S+)")
# Pod / exec-plugin env entries: {"name": "DB_PASSWORD", "value": "X"} and `- name: X\n  value: Y`.
_NAME_VALUE = re.compile(
    r"""(?P<pre>(?<![A-Za-z0-9_-])name(?P<q1>\\?["']?)[ \t]*[:=][ \t]*(?P<q2>\\?["']?)(?P<key>[A-Za-z0-9_.-]+)(?P=q2)"""
    r"""[ \t]*,?\s*(?P<q3>\\?["']?)value(?P=q3)[ \t]*[:=][ \t]*)"""
    r"""(?P<val>\\"[^"\n]*"|"[^"\n]*"|'[^'\n]*'|[^\s,;}\]]+)""")
# key: value / key=value / "key": "value" / 'key': 'value' / \"key\": \"value\" (JSON inside a JSON
# string, e.g. last-applied-configuration) where the key names a secret field. The look-behind makes a
# key start only at a token boundary, which keeps the scan linear on long runs without spaces.
# The value is matched apart (_FIELD_VAL), only after a secret key: scanning it after every key would
# be quadratic on lines like a=b=c=...
_FIELD = re.compile(r"""(?<![A-Za-z0-9_.-])(?P<q>\\?["']?)(?P<key>[A-Za-z0-9_.-]+)(?P=q)\s*(?::|=)[ \t]*""")
_FIELD_VAL = re.compile(r"""\[REDACTED\]|\\"[^"\n]*"|"[^"\n]*"|'[^'\n]*'|[^\s,;}\]]+""")
# Values under a secret-looking key that are not secrets: empty, null, YAML block markers, booleans.
_NOT_A_VALUE = {"", '""', "''", "null", "none", "~", "{", "[", "|", ">", "|-", ">-", "true", "false"}
# Authorization schemes: the credential follows them (masked by _AUTH_HEADER / _BEARER).
_AUTH_SCHEMES = {"bearer", "basic", "token", "digest", "negotiate", "ntlm", "aws4-hmac-sha256"}

_PLAIN_WORD = re.compile(r"[a-z][a-z.-]{0,14}")
_lock = threading.Lock()
_known: set[str] = set()


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _norm(key: str) -> str:
    # clientKeyData -> client-key-data, aws_secret_access_key -> aws-secret-access-key
    return _CAMEL.sub("-", key.strip()).lower().replace("_", "-")


@functools.lru_cache(maxsize=4096)  # called for every key-like token of every report string
def is_secret_name(name: str) -> bool:
    """True for a field or variable name whose value must never be shown."""
    if name.isupper():
        return bool(_SECRET_ENV.search(name))
    n = _norm(name)
    return n in _SECRET_FIELDS or n.endswith(_SECRET_SUFFIXES)


_SECRET_SUFFIXES = ("-token", "-password", "-passwd", "-secret", "-key-data", "-certificate-data", "-api-key",
                    "-private-key", "-credentials", "-access-key", "-secret-key", "-access-key-id", "-account-key")


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


def register_kubeconfigs(value: str | None) -> None:
    """Register the secrets of every file in a KUBECONFIG-style list (os.pathsep-separated), as kubectl
    merges them all; missing or unreadable entries are skipped."""
    for path in (value or "").split(os.pathsep):
        register_kubeconfig(path.strip())


def register_kubeconfig(path: str | None) -> None:
    """Register every secret the kubeconfig holds (tokens, keys, passwords, cert data, exec env)."""
    if not path:
        return
    try:
        import yaml

        with open(os.path.expanduser(path), encoding="utf-8") as fh:
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


def _masked(pre: str, val: str) -> str:
    """pre + the value masked, keeping its quotes; unchanged where the value is no secret."""
    bare = val.strip("\\\"'")
    scheme, _, rest = bare.partition(" ")
    if bare == MASK or val.lower() in _NOT_A_VALUE or scheme.lower() in _AUTH_SCHEMES and rest in ("", MASK):
        return pre + val
    if val.startswith('\\"'):
        return pre + '\\"' + MASK + '\\"'
    if val[:1] in "\"'":
        return pre + val[0] + MASK + val[0]
    return pre + MASK


def _keyed_sub(m: re.Match) -> str:
    """For patterns with pre/key/val groups: mask val when key names a secret."""
    if not is_secret_name(m.group("key")):
        return m.group(0)
    return _masked(m.group("pre"), m.group("val"))


def _flag_sub(m: re.Match) -> str:
    val = m.group("val")
    if not is_secret_name(m.group("key").lstrip("-")) or val.lower() in _FLAG_PROSE or _looks_like_path(val):
        return m.group(0)
    return _masked(m.group("pre"), val)


def _fields(text: str) -> str:
    """_FIELD over text; after a key that is no secret, the search goes on inside its value, so that
    `--from-literal=password=X` and `url: https://...?token=X` are looked at too."""
    out, pos, done = [], 0, 0
    while (m := _FIELD.search(text, pos)) is not None:
        pos = m.end()
        if is_secret_name(m.group("key")) and (v := _FIELD_VAL.match(text, pos)) is not None:
            out.append(text[done:m.start()] + _masked(m.group(0), v.group(0)))
            pos = done = v.end()
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


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
    text = _TOKEN_SHAPES.sub(MASK, text)
    text = _AUTH_HEADER.sub(lambda m: _masked(m.group("pre"), m.group("val")), text)
    text = _BEARER.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = _JWT.sub(MASK, text)
    text = _BOOTSTRAP.sub(MASK, text)
    text = _USERINFO.sub(lambda m: (m.group(1) or m.group(2)) + MASK + "@", text)
    text = _QUERY.sub(_keyed_sub, text)
    text = _NETRC.sub(lambda m: _masked(m.group("pre"), m.group("val")), text)
    text = _LOGIN_P.sub(lambda m: _masked(m.group("pre"), m.group("val")), text)
    text = _USER_PASS.sub(lambda m: _masked(m.group("pre"), m.group("val")), text)
    text = _FLAG.sub(_flag_sub, text)
    text = _NAME_VALUE.sub(_keyed_sub, text)
    text = _fields(text)
    return _multiline_fields(text)


_BLOCK_FIELD = re.compile(r"^(?P<ind>[ \t]*)(?P<key>[A-Za-z0-9_.-]+):[ \t]*[|>][-+]?[ \t]*\n", re.MULTILINE)


def _multiline_fields(text: str) -> str:
    """YAML block scalars (`key: |` + indented lines) under a secret key: drop the lines."""
    out, pos = [], 0
    for m in _BLOCK_FIELD.finditer(text):
        if m.start() < pos or not is_secret_name(m.group("key")):
            continue
        ind = len(m.group("ind").expandtabs())
        end = stop = m.end()
        while stop < len(text):  # the indented lines that follow (line by line: no copy of the rest)
            nl = text.find("\n", stop)
            line = text[stop:] if nl < 0 else text[stop:nl]
            if line.strip() and len(line) - len(line.lstrip()) <= ind:
                break
            stop = len(text) if nl < 0 else nl + 1
        out.append(text[pos:end] + " " * (ind + 2) + MASK + "\n")
        pos = stop
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
