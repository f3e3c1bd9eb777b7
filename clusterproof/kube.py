"""One API client per run, built from an explicit kubeconfig and context (never global config)."""
from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

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


def resolve_kubeconfig(option: str | None) -> str:
    """--kubeconfig, then $KUBECONFIG (first entry), then ~/.kube/config; must be readable."""
    path = option or (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]) or str(Path.home() / ".kube" / "config")
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"kubeconfig {p} does not exist; pass --kubeconfig PATH or set KUBECONFIG", EXIT_KUBECONFIG)
    try:
        p.read_bytes()
    except OSError as exc:
        raise InputError(f"kubeconfig {p} cannot be read ({exc.strerror}); check its permissions",
                         EXIT_KUBECONFIG) from None
    return str(p)


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
