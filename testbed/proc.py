"""Starting, finding and stopping the testbed's processes (pid files under the state folder)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .paths import STATE

PIDS = STATE / "pids"
LOGS = STATE / "logs"


def pid_of(name: str) -> int | None:
    f = PIDS / f"{name}.pid"
    try:
        pid = int(f.read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(name: str, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    """Start a long-running process in its own session, logging to logs/<name>.log."""
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = (LOGS / f"{name}.log").open("ab")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env, cwd=cwd)
    log.close()
    (PIDS / f"{name}.pid").write_text(str(p.pid))
    return p.pid


def stop(name: str, timeout: float = 10) -> bool:
    """SIGTERM then SIGKILL; True if it was running."""
    pid = pid_of(name)
    (PIDS / f"{name}.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    kill_wait([pid], timeout)
    return True


def kill_wait(pids: list[int], timeout: float = 10) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)


def pids_in_netns(netns_path: str) -> list[int]:
    """Every process whose network namespace is the one bound at netns_path."""
    try:
        target = os.stat(netns_path).st_ino
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                found.append(int(entry))
        except OSError:
            continue
    return found


def log_tail(name: str, lines: int = 5) -> str:
    try:
        text = (LOGS / f"{name}.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
