"""One API client per run, built from an explicit kubeconfig and context (never global config).

Also the project's one kubeconfig resolver (`resolve_kubeconfig`) and its one version parser
(`parse_version` for Kubernetes versions, `parse_runtime` for a node's containerRuntimeVersion).
"""
from __future__ import annotations

import os
import re
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, overload

from . import timeouts

# Exit codes for bad input; pytest itself uses 0-5.
EXIT_KUBECONFIG = 10
EXIT_CONTEXT = 11
EXIT_API = 12
EXIT_USAGE = 13
EXIT_SSH = 14
EXIT_CODES = (EXIT_KUBECONFIG, EXIT_CONTEXT, EXIT_API, EXIT_USAGE, EXIT_SSH)


class InputError(Exception):
    """Bad input from the user: one line, one exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass
class Target:
    kubeconfig: str
    context: str | None


def kubeconfig_candidate(option: str | None) -> Path:
    """The kubeconfig kubectl would read: --kubeconfig, then $KUBECONFIG (first entry), then ~/.kube/config."""
    path = option or (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]) or str(Path.home() / ".kube" / "config")
    return Path(path).expanduser()


@overload
def resolve_kubeconfig(option: str | None, required: Literal[True] = ...) -> str: ...
@overload
def resolve_kubeconfig(option: str | None, required: bool) -> str | None: ...
def resolve_kubeconfig(option: str | None, required: bool = True) -> str | None:
    """The kubeconfig path (see kubeconfig_candidate); it must exist and be readable.

    required=True raises InputError (EXIT_KUBECONFIG) otherwise; required=False returns None instead
    (for best-effort readers such as the report's redaction and fingerprint).
    """
    p = kubeconfig_candidate(option)
    problem = None
    if not p.exists():
        problem = f"kubeconfig {p} does not exist; pass --kubeconfig PATH or set KUBECONFIG"
    else:
        try:
            p.read_bytes()
        except OSError as exc:
            problem = f"kubeconfig {p} cannot be read ({exc.strerror}); check its permissions"
    if problem is None:
        return str(p)
    if required:
        raise InputError(problem, EXIT_KUBECONFIG)
    return None


def new_client(kubeconfig: str, context: str | None):
    """An ApiClient for this kubeconfig/context; InputError for a bad file or unknown context."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, Exception) as exc:  # yaml errors come as various types
        raise InputError(f"kubeconfig {kubeconfig} is not a valid kubeconfig: {str(exc).splitlines()[0]}",
                         EXIT_KUBECONFIG) from None
    names = [c["name"] for c in contexts or []]
    if context and context not in names:
        raise InputError(f"context {context!r} is not in {kubeconfig}; known contexts: {', '.join(names) or 'none'}",
                         EXIT_CONTEXT)
    if not context and not active:
        raise InputError(f"kubeconfig {kubeconfig} has no current-context; pass --context NAME", EXIT_CONTEXT)
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except Exception as exc:
        raise InputError(f"kubeconfig {kubeconfig}: {str(exc).splitlines()[0]}", EXIT_KUBECONFIG) from None


def server_address(api_client) -> str:
    """The API server URL without credentials."""
    url = urllib.parse.urlsplit(api_client.configuration.host)
    netloc = url.hostname or ""
    if url.port:
        netloc += f":{url.port}"
    return urllib.parse.urlunsplit((url.scheme, netloc, url.path, "", ""))


def ping(api_client) -> str:
    """Ask the server's version within the connect timeout; InputError when it does not answer."""
    from kubernetes import client

    url = urllib.parse.urlsplit(api_client.configuration.host)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    t = timeouts.get("connect")
    try:
        socket.create_connection((host, port), timeout=t).close()
    except OSError as exc:
        raise InputError(f"API server {server_address(api_client)} does not answer ({exc.strerror or exc}); "
                         "check the cluster is up and --kubeconfig/--context point at it", EXIT_API) from None
    try:
        info = client.VersionApi(api_client).get_code(_request_timeout=t)
    except Exception as exc:
        raise InputError(f"API server {server_address(api_client)} did not answer a version request "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", EXIT_API) from None
    return info.git_version


def active_context(kubeconfig: str, context: str | None = None) -> str | None:
    """The context the run uses: `context` when given, else the kubeconfig's current-context; None if unknown."""
    if context:
        return context
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:
        return None
    return (active or {}).get("name")


# ------------------------------------------------------------------ versions

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
_RELEASE = re.compile(r"v?(\d+(?:\.\d+)*)")


class Version(NamedTuple):
    """A Kubernetes-style version: v1.35.4, v1.30.2-eks-1, v1.29.3+k3s1 all parse (suffixes dropped)."""

    major: int
    minor: int
    patch: int = 0

    @property
    def minor_version(self) -> tuple[int, int]:
        return self.major, self.minor

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str | None) -> Version | None:
    """The version at the start of `text` (leading "v" optional), None when there is none."""
    m = _VERSION.match((text or "").strip())
    if not m:
        return None
    return Version(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


@dataclass(frozen=True)
class Runtime:
    """A container runtime as the kubelet names it (containerRuntimeVersion `containerd://1.7.20`).

    `version` is the numeric release (`1.6.20~ds1` -> `1.6.20`), so two spellings of one runtime
    compare equal; `raw` keeps the text as reported (not compared).
    """

    name: str
    version: str
    raw: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.name}://{self.version}" if self.name else self.version

    @property
    def semver(self) -> Version | None:
        return parse_version(self.version)


def parse_runtime(text: str | None) -> Runtime:
    """`name://version` (containerRuntimeVersion, or crictl's RuntimeName/RuntimeVersion joined so)."""
    raw = (text or "").strip()
    name, sep, ver = raw.partition("://")
    if not sep:
        name, ver = "", raw
    m = _RELEASE.match(ver)
    return Runtime(name.lower(), m.group(1) if m else ver, raw)
