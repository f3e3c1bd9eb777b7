"""The testbed build's progress lines (testbed/build.py `_go`): a fake `go` on PATH writes `go: downloading`
lines and sleeps; a short interval stands for the 15 s. No real go command runs."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from testbed import build


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a fake `go` (a shell script body) first on the PATH that go_env() gives every go command."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    monkeypatch.setattr(build, "go_env", lambda: {"PATH": f"{folder}:{os.environ.get('PATH', '/usr/bin:/bin')}"})

    def make(body: str) -> Path:
        go = folder / "go"
        go.write_text("#!/bin/sh\n" + body)
        go.chmod(0o755)
        return go

    return make


DOWNLOADS = """
for m in alpha beta gamma delta; do
  echo "go: downloading example.com/$m v1.0.0"
  sleep 0.3
done
echo "# example.com/delta" >&2
sleep 0.5
exit 3
"""


def test_progress_lines_while_go_runs(fake_go, tmp_path: Path) -> None:
    fake_go(DOWNLOADS)
    log = tmp_path / "build.log"
    lines: list[str] = []
    r = build._go(["mod", "tidy"], tmp_path, log, echo=lines.append, what="resolving Kubernetes v1.35.4 modules",
                  every=0.25)
    assert r.returncode == 3                         # the command's own status, as before
    assert r.args == ["go", "mod", "tidy"]
    text = log.read_text()
    assert text.startswith("$ go mod tidy\n") and text.count("go: downloading") == 4 and "# example.com/delta" in text
    assert len(lines) >= 3, lines
    for line in lines:
        assert re.match(r"go mod tidy: \d+s, resolving Kubernetes v1\.35\.4 modules; ", line), line
    counts = [int(m.group(1)) for line in lines if (m := re.search(r"; (\d) modules? downloaded", line))]
    assert counts and counts == sorted(counts) and counts[-1] >= 3, lines
    assert any("last: go: downloading example.com/" in line for line in lines), lines
    assert "last: # example.com/delta" in lines[-1]   # stderr lands in the log too


def test_no_echo_no_lines_and_log_appended(fake_go, tmp_path: Path) -> None:
    fake_go('echo "go: downloading example.com/x v1"\n')
    log = tmp_path / "build.log"
    log.write_text("earlier\n")
    r = build._go(["build", "./..."], tmp_path, log, every=0.01)
    assert r.returncode == 0
    assert log.read_text() == "earlier\n$ go build ./...\ngo: downloading example.com/x v1\n"


def test_a_quiet_command_says_so(fake_go, tmp_path: Path) -> None:
    fake_go("sleep 0.6\n")
    lines: list[str] = []
    assert build._go(["build", "x"], tmp_path, tmp_path / "log", echo=lines.append, what="building kubelet",
                     every=0.2).returncode == 0
    assert lines and all(line.startswith("go build: ") and line.endswith("building kubelet; no output yet")
                         for line in lines), lines


def test_past_its_timeout_the_command_is_killed(fake_go, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    fake_go(f"echo $$ > {pidfile}\nexec sleep 30\n")
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        build._go(["build", "x"], tmp_path, tmp_path / "log", timeout=0.5, echo=lambda _: None, every=0.1)
    assert time.monotonic() - t0 < 10
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)   # reaped: gone, not a zombie


def test_took_reads_minutes() -> None:
    assert build._took(9.7) == "9s" and build._took(75) == "1m15s" and build._took(3600) == "60m00s"
