"""How a host check reaches a node: one small interface, two transports.

A check asks a `Host` to `run` a shell command, `read` a file or tell a path's `file_type`;
it never knows whether SSH (testinfra) or the privileged probe DaemonSet answered.
Both transports run the same `sh -c` text with the same PATH, so they give the same verdicts.
"""
from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import timeouts

# kubeadm's binaries live in sbin, which a non-root SSH user or a container's sh may lack on PATH.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HostUnreachable(Exception):
    """The host could not be reached at all (down, key refused, probe pod missing): one line."""


@dataclass
class Result:
    """What one command returned on a host."""

    rc: int
    stdout: str
    stderr: str
    command: str

    def evidence(self) -> str:
        """The command and what it printed, for a check's evidence."""
        text = f"$ {self.command}\n{self.stdout}"
        if self.stderr.strip():
            text += f"\n[stderr]\n{self.stderr}"
        return text + f"\n[exit {self.rc}]"


@dataclass
class HostSpec:
    """One host to check: its test id, how to reach it, and the Node it is (when known)."""

    id: str                      # e.g. ssh://tb-node-1, pod://tb-node-1, ssh://198.18.250.2
    transport: str               # "ssh" (any testinfra backend) or "pod"
    address: str = ""            # testinfra host spec (ssh://user@ip:port) or node name for pod
    node: str | None = None      # Node name when the host is a cluster node
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.id


class Host:
    """The interface a host check uses; subclasses implement `_exec`."""

    def __init__(self, spec: HostSpec):
        self.spec = spec

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def node(self) -> str | None:
        return self.spec.node

    def __str__(self) -> str:
        return self.spec.id

    def _exec(self, script: str, timeout: float) -> tuple[int, str, str]:
        raise NotImplementedError

    def run(self, cmd: str, timeout: float | None = None) -> Result:
        """Run `cmd` with `sh -c` on the host; (rc, stdout, stderr) in a Result."""
        script = f"PATH={HOST_PATH}; export PATH; {cmd}"
        rc, out, err = self._exec(script, timeout or timeouts.get("exec"))
        return Result(rc, out, err, cmd)

    def read(self, path: str) -> str | None:
        """The file's text, or None when it does not exist or cannot be read."""
        r = self.run(f"cat -- {shlex.quote(path)}")
        return r.stdout if r.rc == 0 else None

    def file_type(self, path: str) -> str:
        """One of: socket, regular, directory, symlink-dangling, other, missing (follows symlinks)."""
        return self.file_types([path])[path]

    def file_types(self, paths: list[str]) -> dict[str, str]:
        """`file_type` of each path, asked in one command (one round trip instead of one per path)."""
        if not paths:
            return {}
        test = ('if [ -S "$p" ]; then t=socket; elif [ -f "$p" ]; then t=regular; elif [ -d "$p" ]; then '
                't=directory; elif [ -L "$p" ]; then t=symlink-dangling; elif [ -e "$p" ]; then t=other; '
                'else t=missing; fi')
        r = self.run(f"for p in {' '.join(shlex.quote(p) for p in paths)}; do {test}; echo \"$t\"; done")
        got = r.stdout.split()
        return {p: (got[i] if i < len(got) else "missing") for i, p in enumerate(paths)}

    def ping(self) -> None:
        """Raise HostUnreachable unless the host runs a trivial command."""
        r = self.run("echo clusterproof-ok", timeout=timeouts.get("ssh_connect") + timeouts.get("exec"))
        if "clusterproof-ok" not in r.stdout:
            raise HostUnreachable(f"host {self.id} did not run a trivial command (exit {r.rc}): "
                                  f"{_last_line(r.stderr) or 'no output'}")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------ SSH (testinfra)

class _TimedRunLocal:
    """testinfra's run_local with a deadline: testinfra itself waits forever on a hung ssh."""

    exec_timeout: float = 30.0

    def run_local(self, command: str, *args: str):  # same signature as testinfra's BaseBackend.run_local
        command = self.quote(command, *args)  # type: ignore[attr-defined]
        cmd = self.encode(command)  # type: ignore[attr-defined]
        try:
            p = subprocess.run(cmd, shell=True, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=self.exec_timeout, check=False)
        except subprocess.TimeoutExpired:
            raise HostUnreachable(f"no answer within {self.exec_timeout:.0f}s") from None
        return self.result(p.returncode, cmd, p.stdout, p.stderr)  # type: ignore[attr-defined]


def _with_deadline(backend: Any, seconds: float) -> Any:
    """Give a testinfra backend that runs local commands (ssh, docker, kubectl...) a deadline."""
    cls = type(backend)
    if "run_local" in cls.__dict__ or not hasattr(backend, "run_local") or isinstance(backend, _TimedRunLocal):
        return backend
    backend.__class__ = type(f"Timed{cls.__name__}", (_TimedRunLocal, cls), {})
    backend.exec_timeout = seconds
    return backend


class SSHHost(Host):
    """A host reached through a testinfra backend (ssh:// by default; any --hosts spec works)."""

    def __init__(self, spec: HostSpec, testinfra_host: Any = None):
        super().__init__(spec)
        self._th = testinfra_host

    @property
    def testinfra(self) -> Any:
        if self._th is None:
            import testinfra

            opts = dict(self.spec.options)
            self._th = testinfra.get_host(self.spec.address, **opts)
        return self._th

    def _exec(self, script: str, timeout: float) -> tuple[int, str, str]:
        th = self.testinfra
        backend = _with_deadline(th.backend, timeout + timeouts.get("ssh_connect"))
        if isinstance(backend, _TimedRunLocal):
            backend.exec_timeout = timeout + timeouts.get("ssh_connect")
        try:
            out = th.run("sh -c %s", script)
        except HostUnreachable as exc:
            raise HostUnreachable(f"host {self.id}: {exc}") from None
        except RuntimeError as exc:  # testinfra's ssh backend: exit 255 is ssh's own error
            res = exc.args[0] if exc.args else None
            err = getattr(res, "stderr", "") or str(exc)
            raise HostUnreachable(f"host {self.id} unreachable over SSH: {_last_line(err) or 'ssh failed'}"
                                  ) from None
        except Exception as exc:  # paramiko and other backends raise their own types
            raise HostUnreachable(f"host {self.id} unreachable: {type(exc).__name__}: "
                                  f"{_last_line(str(exc)) or 'no detail'}") from None
        return out.rc, out.stdout, out.stderr


def ssh_options(ssh_config: str | None, identity: str | None, extra_args: str | None) -> dict[str, Any]:
    """testinfra keyword arguments for the SSH backends: never prompt, bounded connect."""
    extra = extra_args or ""
    if "batchmode" not in extra.lower():
        extra = (extra + " -o BatchMode=yes").strip()
    if "stricthostkeychecking" not in extra.lower() and not ssh_config:
        # First contact with a node accepts its key (as kubeadm join does); a changed key still fails.
        extra += " -o StrictHostKeyChecking=accept-new"
    if "serveraliveinterval" not in extra.lower():
        extra += " -o ServerAliveInterval=5 -o ServerAliveCountMax=2"
    opts: dict[str, Any] = {"ssh_extra_args": extra, "timeout": int(timeouts.get("ssh_connect"))}
    if ssh_config:
        opts["ssh_config"] = ssh_config
    if identity:
        opts["ssh_identity_file"] = identity
    return opts


# ------------------------------------------------------------------ the probe DaemonSet

class PodHost(Host):
    """A node reached through its probe pod: `chroot /host sh -c ...` over the exec stream."""

    def __init__(self, spec: HostSpec, core_v1: Any, namespace: str, pod: Callable[[], str]):
        super().__init__(spec)
        self._core = core_v1
        self._ns = namespace
        self._pod = pod

    def _exec(self, script: str, timeout: float) -> tuple[int, str, str]:
        from kubernetes.stream import stream

        pod = self._pod()
        # An absolute path: busybox's chroot would otherwise run its own `sh` applet, not the host's shell.
        cmd = ["chroot", "/host", "/bin/sh", "-c", script]
        try:
            ws = stream(self._core.connect_get_namespaced_pod_exec, pod, self._ns, command=cmd,
                        stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False,
                        _request_timeout=timeouts.get("api"))
        except Exception as exc:  # ApiException, websocket errors
            raise HostUnreachable(f"host {self.id}: exec into probe pod {self._ns}/{pod} failed: "
                                  f"{_last_line(str(exc))[:200]}") from None
        try:
            ws.run_forever(timeout=timeout)
            if ws.is_open():
                raise HostUnreachable(f"host {self.id}: command did not finish within {timeout:.0f}s in "
                                      f"probe pod {self._ns}/{pod}")
            out, err = ws.read_stdout() or "", ws.read_stderr() or ""
            rc = ws.returncode
        finally:
            ws.close()
        return (rc if rc is not None else 255), out, err
