"""The sign-off report as a person sees it: rendered by headless Chromium (Debian's chromium package)."""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_report_plugin import SECRETS, run, suite  # noqa: F401 - `suite` is a fixture

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("no chromium: apt-get install chromium to run the browser tests")
    with tempfile.TemporaryDirectory(prefix="cp-chromium-") as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, check=False)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_renders_header_summary_and_evidence(suite: pytest.Pytester) -> None:  # noqa: F811
    run(suite)
    html = suite.path / "reports" / "report.html"
    url = html.resolve().as_uri()

    dom = chromium("--virtual-time-budget=5000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    # header: verdict and fingerprint
    assert 'id="cp-verdict"' in text
    assert "SIGN-OFF: FAIL" in text
    assert 'id="cp-fingerprint"' in text
    assert "clusterproof 0." in text
    assert "no cluster reached" in text
    # summary per area
    for area in ("host", "runtime", "nodes", "network", "pods", "apps", "gpu"):
        assert f'data-area="{area}"' in text
    # the failing check: rendered by pytest-html's script into the results table, evidence folded away
    start = text.index('id="results-table"')
    table = text[start:]
    assert 'data-check="NODE-001"' in table
    assert "Ready=True" in table
    assert "journalctl -u kubelet" in table
    assert '<details class="cp-evidence"><summary>Evidence 1: kubectl config view --raw</summary>' in table
    assert "Authorization: Bearer [REDACTED]" in table
    assert [s[:12] for s in SECRETS if s in text] == []

    shot = suite.path / "report.png"
    res = chromium("--virtual-time-budget=5000", f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert png_size(shot) == (1280, 2000)
    assert shot.stat().st_size > 60_000, "the screenshot is nearly empty"
    keep = Path(__file__).resolve().parent.parent / "reports" / "browser"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "report.png")
    shutil.copy(html, keep / "report.html")
