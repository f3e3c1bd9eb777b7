"""The progress plugin (fixtures/progress.py) on a small fake suite: a line per finished check with its
area's count, --no-progress, the default off for a pipe, and the controller's lines under pytest-xdist.

The fake checks use the catalog's own test paths and names, so a check is known by its ID even where only
its node id is (the xdist controller)."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from fixtures import progress

ROOT = Path(__file__).resolve().parent.parent

HOST = '''
import os, time
from pathlib import Path
import pytest

@pytest.mark.check("HOST-001")
def test_br_netfilter_loaded():
    if os.environ.get("PROGRESS_XDIST"):   # stay in flight until the nodes' checks have run on the other worker
        Path("host-started").write_text("")
        end = time.monotonic() + 30
        while not Path("nodes-done").exists() and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(1)

@pytest.mark.check("HOST-003")
def test_ip_forward_enabled():
    pytest.skip("not this time")
'''

NODES = '''
import os, time
from pathlib import Path
import pytest

@pytest.mark.check("NODE-001")
def test_every_node_ready():
    if os.environ.get("PROGRESS_XDIST"):
        end = time.monotonic() + 30
        while not Path("host-started").exists() and time.monotonic() < end:
            time.sleep(0.05)

@pytest.mark.check("NODE-002")
@pytest.mark.parametrize("node", ["tb-node-1", "tb-node-2"])
def test_no_node_pressure(node):
    pass

@pytest.mark.check("NODE-003")
def test_kubelet_version_skew():
    if os.environ.get("PROGRESS_XDIST"):
        Path("nodes-done").write_text("")
    assert False, "kubelet newer than the API server"
'''


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("PROGRESS_XDIST", raising=False)
    pytester.makeconftest('pytest_plugins = ["fixtures.options", "fixtures.catalog", "fixtures.reporting", '
                          '"fixtures.progress"]\n')
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    for name, text in {"suites/host/test_host_kernel.py": HOST, "suites/nodes/test_nodes.py": NODES}.items():
        p = pytester.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (pytester.path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters:\n- name: x\n  cluster: {server: "
        "'https://127.0.0.1:1'}\ncontexts:\n- name: x\n  context: {cluster: x, user: x}\nusers:\n- name: x\n"
        "  user: {token: t}\n")
    return pytester


def run(pytester: pytest.Pytester, *args: str, subprocess_: bool = False) -> pytest.RunResult:
    base = ["--kubeconfig", str(pytester.path / "kubeconfig"), "--report-dir", "out", "-p", "no:randomly"]
    if subprocess_:
        return pytester.runpytest_subprocess(*base, *args, timeout=240)
    return pytester.runpytest(*base, *args)


def progress_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if re.match(r"\[\w+ \d+/\d+\] ", line)]


def test_a_line_per_finished_check_counted_per_area(suite: pytest.Pytester) -> None:
    result = run(suite, "--progress")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    lines = progress_lines(result)
    assert [re.sub(r" \(\d+\.\d s\)", "", line) for line in lines] == [
        "[host 1/2] HOST-001 passed · 1/6 in all",
        "[host 2/2] HOST-003 skipped · 2/6 in all",
        "[nodes 1/4] NODE-001 passed · 3/6 in all",
        "[nodes 2/4] NODE-002[tb-node-1] passed · 4/6 in all",
        "[nodes 3/4] NODE-002[tb-node-2] passed · 5/6 in all",
        "[nodes 4/4] NODE-003 failed · 6/6 in all",
    ]
    # the lines stand for pytest's dots and file names, which stand down
    assert not any(re.match(r"suites/\S+\.py( |$)", line) for line in result.outlines)
    result.stdout.fnmatch_lines(["*1 failed, 4 passed, 1 skipped*"])


def test_selection_sets_the_totals(suite: pytest.Pytester) -> None:
    result = run(suite, "--progress", "-m", "nodes", "-k", "not version_skew")
    assert [line.split(" (")[0] for line in progress_lines(result)] == [
        "[nodes 1/3] NODE-001 passed", "[nodes 2/3] NODE-002[tb-node-1] passed",
        "[nodes 3/3] NODE-002[tb-node-2] passed"]


def test_no_progress_silences_it(suite: pytest.Pytester) -> None:
    result = run(suite, "--progress", "--no-progress")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    assert progress_lines(result) == []
    result.stdout.fnmatch_lines(["suites/host/test_host_kernel.py .s*", "suites/nodes/test_nodes.py ...F*"])


def test_off_by_default_when_the_output_is_not_a_terminal(suite: pytest.Pytester) -> None:
    result = run(suite)
    assert progress_lines(result) == []
    result.stdout.fnmatch_lines(["suites/host/test_host_kernel.py .s*"])


def test_verbose_keeps_pytests_lines_and_adds_the_progress(suite: pytest.Pytester) -> None:
    result = run(suite, "--progress", "-v")
    result.stdout.fnmatch_lines(["*test_br_netfilter_loaded PASSED*", "[[]host 1/2[]] HOST-001 passed*"])


@pytest.mark.parametrize(("flag", "verbosity", "tty", "on"), [
    (None, 0, True, True), (None, 0, False, False), (None, -1, True, False), (True, -1, False, True),
    (False, 1, True, False)])
def test_when_it_is_on(flag: bool | None, verbosity: int, tty: bool, on: bool) -> None:
    config = SimpleNamespace(getoption=lambda name, default=None: flag, get_verbosity=lambda: verbosity)
    tr = SimpleNamespace(_tw=SimpleNamespace(_file=SimpleNamespace(isatty=lambda: tty)))
    assert progress.enabled(config, tr) is on  # type: ignore[arg-type]
    assert progress.enabled(config, None) is False  # type: ignore[arg-type]  # -p no:terminal


def test_under_xdist_the_controller_writes_the_lines_and_what_is_in_flight(suite: pytest.Pytester,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROGRESS_XDIST", "1")
    # loadfile: one file per worker, so HOST-001 is in flight while the nodes' checks finish
    result = run(suite, "--progress", "-n", "2", "--dist", "loadfile", subprocess_=True)
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    lines = progress_lines(result)
    assert len(lines) == 6, result.outlines
    assert sorted(line.split(" ")[1] for line in lines if line.startswith("[nodes")) == ["1/4]", "2/4]", "3/4]",
                                                                                         "4/4]"]
    assert sorted(line.split(" ")[1] for line in lines if line.startswith("[host")) == ["1/2]", "2/2]"]
    assert lines[-1].split(" · ")[1] == "6/6 in all"
    assert any(re.search(r"NODE-00\d.* · slowest in flight: HOST-001 \(\d+\.\d s\)$", line) for line in lines), lines
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
