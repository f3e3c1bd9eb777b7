"""clusterproof.nightly without a cluster: the reports folder (stamps, previous run, keep-last-N, latest), the
Prometheus metrics (parsed with prometheus_client), a whole `run` with a stand-in for pytest, and the manifests
as kustomize renders them."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clusterproof import nightly
from clusterproof.report import seal
from clusterproof.results import Outcome, RunResult, TargetResult
from clusterproof.verdict import Status, Verdict
from conftest import ROOT


def summary(outcomes: dict[tuple[str, str | None], str], run: str = "r1", compare: dict | None = None) -> dict:
    """A sealed summary.json document with one target per (check id, target) -> outcome."""
    rr = RunResult(run, "2026-11-28T02:30:00+00:00", "2026-11-28T02:31:15.500000+00:00", 0, "0.1.0",
                   {"server": "https://198.19.0.1:6443"})
    for (cid, target), outcome in outcomes.items():
        area = {"HOST": "host", "NODE": "nodes"}[cid.split("-")[0]]
        status = {"passed": Status.PASS, "failed": Status.FAIL, "error": Status.ERROR}.get(outcome, Status.PASS)
        nodeid = f"suites/{area}/test_x.py::test_{cid.lower().replace('-', '_')}" + (f"[{target}]" if target else "")
        rr.add(cid, area, TargetResult(nodeid, target, Outcome(outcome), 0.5,
                                       [Verdict(status, cid, "expected", "observed")]))
    rr.compare = compare
    return seal(rr.to_doc())


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


# ------------------------------------------------------------------ the reports folder

def test_stamps_are_utc_unique_and_ordered(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 28, 2, 30, 0, tzinfo=dt.UTC)
    first = nightly.new_stamp(tmp_path, now)
    assert first == "20261128T023000Z"
    (tmp_path / first).mkdir()
    second = nightly.new_stamp(tmp_path, now)
    assert second == "20261128T023000Z-1"
    for name in (second, "20261127T023000Z", "20261128T023000Z-10", "not-a-run"):
        (tmp_path / name).mkdir()
    (tmp_path / "latest").symlink_to(first)
    (tmp_path / "20261126T023000Z").write_text("a file, not a run")
    assert [p.name for p in nightly.runs(tmp_path)] == ["20261127T023000Z", first, second, "20261128T023000Z-10"]


def test_previous_run_is_the_newest_with_a_readable_summary(tmp_path: Path) -> None:
    good_old, good, broken, unfinished, current = (tmp_path / n for n in (
        "20261125T023000Z", "20261126T023000Z", "20261127T023000Z", "20261127T120000Z", "20261128T023000Z"))
    for d in (good_old, good, broken, unfinished, current):
        d.mkdir()
    (good_old / "summary.json").write_text(json.dumps(summary({("HOST-003", "n1"): "passed"})))
    (good / "summary.json").write_text(json.dumps(summary({("HOST-003", "n1"): "passed"})))
    (broken / "summary.json").write_text("{not json")
    (current / "summary.json").write_text(json.dumps(summary({("HOST-003", "n1"): "passed"})))
    assert nightly.previous_summary(tmp_path, before=current.name) == good / "summary.json"
    assert nightly.previous_summary(tmp_path) == current / "summary.json"
    assert nightly.previous_summary(tmp_path / "missing") is None
    (good / "summary.json").write_text(json.dumps({"schema": "something else"}))
    assert nightly.previous_summary(tmp_path, before=current.name) == good_old / "summary.json"


def test_keep_last_n_deletes_the_oldest_runs_only(tmp_path: Path) -> None:
    names = ["20261125T023000Z", "20261126T023000Z", "20261126T023000Z-1", "20261127T023000Z"]
    for n in names:
        (tmp_path / n).mkdir()
        (tmp_path / n / "report.html").write_text("x")
    (tmp_path / "lost+found").mkdir()
    nightly.point_latest(tmp_path, names[-1])
    gone = nightly.prune(tmp_path, 2)
    assert [p.name for p in gone] == names[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[2:], "latest", "lost+found"])
    assert nightly.prune(tmp_path, 2) == []
    with pytest.raises(ValueError):
        nightly.prune(tmp_path, 0)


def test_latest_is_replaced_atomically(tmp_path: Path) -> None:
    for n in ("20261127T023000Z", "20261128T023000Z"):
        (tmp_path / n).mkdir()
    nightly.point_latest(tmp_path, "20261127T023000Z")
    nightly.point_latest(tmp_path, "20261128T023000Z")
    assert os.readlink(tmp_path / "latest") == "20261128T023000Z"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------ metrics

def test_metrics_parse_and_carry_every_target() -> None:
    cmp = {"previous": {"run": "r0"}, "newly_failing": [{"id": "HOST-003"}], "fixed": [], "still_failing": []}
    doc = summary({("HOST-003", "pod://tb-node-1"): "passed", ("HOST-003", "pod://tb-node-2"): "failed",
                   ("NODE-001", None): "passed", ("HOST-004", "pod://tb-node-1"): "skipped",
                   ("HOST-009", "pod://tb-node-1"): "error"}, compare=cmp)
    fams = families(nightly.render_metrics(doc))
    status = {(s.labels["id"], s.labels["area"], s.labels["target"]): s.value
              for s in fams["clusterproof_check_status"].samples}
    assert status == {("HOST-003", "host", "pod://tb-node-1"): 0, ("HOST-003", "host", "pod://tb-node-2"): 3,
                      ("NODE-001", "nodes", "cluster"): 0, ("HOST-004", "host", "pod://tb-node-1"): 2,
                      ("HOST-009", "host", "pod://tb-node-1"): 4}
    assert fams["clusterproof_check_status"].type == "gauge"
    verdict = {s.labels["verdict"]: s.value for s in fams["clusterproof_run_verdict"].samples}
    assert verdict == {"PASS": 0, "FAIL": 1, "INCOMPLETE": 0}
    assert fams["clusterproof_run_duration_seconds"].samples[0].value == pytest.approx(75.5)
    finished = dt.datetime(2026, 11, 28, 2, 31, 15, 500000, tzinfo=dt.UTC).timestamp()
    assert fams["clusterproof_run_finished_timestamp_seconds"].samples[0].value == pytest.approx(finished, abs=1)
    targets = {s.labels["outcome"]: s.value for s in fams["clusterproof_run_targets"].samples}
    assert (targets["passed"], targets["failed"], targets["skipped"], targets["error"]) == (2, 1, 1, 1)
    compared = {s.labels["change"]: s.value for s in fams["clusterproof_run_compared"].samples}
    assert compared == {"newly_failing": 1, "fixed": 0, "still_failing": 0}


def test_metrics_escape_labels_and_keep_the_worst_of_duplicates() -> None:
    doc = summary({("HOST-003", 'odd "node"\\x\nnext'): "passed"})
    doc["checks"].append(dict(doc["checks"][0], nodeid=doc["checks"][0]["nodeid"] + "-again", outcome="failed"))
    fams = families(nightly.render_metrics(doc))
    samples = fams["clusterproof_check_status"].samples
    assert [(s.labels["target"], s.value) for s in samples] == [('odd "node"\\x\nnext', 3)]
    assert "clusterproof_run_compared" not in fams  # no previous run


def test_metrics_command_line(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary({("NODE-001", None): "passed"})))
    r = subprocess.run([sys.executable, "-m", "clusterproof.nightly", "metrics", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert families(r.stdout)["clusterproof_run_verdict"].samples
    (tmp_path / "bad.json").write_text("[]")
    r = subprocess.run([sys.executable, "-m", "clusterproof.nightly", "metrics", str(tmp_path / "bad.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "not a clusterproof summary.json" in r.stderr


# ------------------------------------------------------------------ a whole run, pytest stood in for

FAKE_PYTEST = r"""
import json, sys
out, previous, outcome = sys.argv[1], sys.argv[2], sys.argv[3]
if outcome == "crash":
    sys.exit(3)
doc = json.loads(open(sys.argv[4]).read())
doc["checks"][0]["outcome"] = outcome
doc["compare"] = {"previous": {"path": previous}} if previous else None
open(out + "/summary.json", "w").write(json.dumps(doc))
sys.exit(0 if outcome == "passed" else 1)
"""


def test_run_compares_with_the_previous_run_keeps_n_and_points_latest(tmp_path: Path, monkeypatch) -> None:
    reports = tmp_path / "reports"
    template = tmp_path / "template.json"
    template.write_text(json.dumps(summary({("HOST-003", "pod://tb-node-2"): "passed"})))
    seen: list[list[str]] = []
    outcome = {"now": "passed"}
    real_command = nightly.pytest_command

    def command(out: Path, kubeconfig: str, previous: Path | None, extra: list[str]) -> list[str]:
        real = real_command(out, kubeconfig, previous, extra)
        seen.append(real)
        return [sys.executable, "-c", FAKE_PYTEST, str(out), str(previous or ""), outcome["now"], str(template)]

    monkeypatch.setattr(nightly, "pytest_command", command)
    quiet = lambda _msg: None  # noqa: E731

    first = nightly.run(reports, 2, ["-m", "host"], kubeconfig="/k", echo=quiet)
    assert (first.exitstatus, first.previous) == (0, None)
    assert "--host-transport=pod" in seen[0] and "--kubeconfig=/k" in seen[0] and seen[0][-2:] == ["-m", "host"]
    assert f"--report-dir={first.folder}" in seen[0] and not any(a.startswith("--compare") for a in seen[0])
    assert sorted(p.name for p in first.folder.iterdir()) == ["metrics.prom", "summary.json"]
    assert os.readlink(reports / "latest") == first.folder.name

    outcome["now"] = "failed"
    second = nightly.run(reports, 2, [], kubeconfig="/k", echo=quiet)
    assert second.exitstatus == 1 and second.previous == first.folder / "summary.json"
    assert f"--compare={first.folder / 'summary.json'}" in seen[1]
    fams = families((second.folder / "metrics.prom").read_text())
    assert [s.value for s in fams["clusterproof_check_status"].samples] == [3]

    outcome["now"] = "crash"  # no summary.json: latest stays, and the next run compares with the second
    third = nightly.run(reports, 2, [], kubeconfig="/k", echo=quiet)
    assert third.exitstatus == 3 and third.summary is None
    assert os.readlink(reports / "latest") == second.folder.name
    assert [p.name for p in nightly.runs(reports)] == [second.folder.name, third.folder.name]  # kept 2

    outcome["now"] = "passed"
    fourth = nightly.run(reports, 2, [], kubeconfig="/k", echo=quiet)
    assert fourth.previous == second.folder / "summary.json"
    with pytest.raises(ValueError):
        nightly.run(reports, 0, [], kubeconfig="/k", echo=quiet)


# ------------------------------------------------------------------ pull, without a cluster

def test_extract_refuses_paths_outside_the_destination(tmp_path: Path) -> None:
    def tgz(members: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    got = nightly.extract(tgz({"20261128T023000Z/summary.json": b"{}", "20261128T023000Z/report.html": b"<html>"}),
                          tmp_path / "out")
    assert got == ["20261128T023000Z"]
    assert (tmp_path / "out" / "20261128T023000Z" / "report.html").read_bytes() == b"<html>"
    with pytest.raises(tarfile.TarError):
        nightly.extract(tgz({"../evil": b"x"}), tmp_path / "out2")
    assert not (tmp_path / "evil").exists()


def test_reader_pod_fits_the_restricted_pod_security_level() -> None:
    pod = nightly.reader_pod("clusterproof-pull-x", nightly.SUITE_IMAGE, nightly.CLAIM)
    spec = pod["spec"]
    c = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"]["type"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert spec["volumes"][0]["persistentVolumeClaim"] == {"claimName": nightly.CLAIM, "readOnly": True}
    assert c["volumeMounts"][0]["readOnly"] and spec["activeDeadlineSeconds"] <= 900
    assert "imagePullSecrets" not in spec
    with_secret = nightly.reader_pod("x", "registry.example.com/clusterproof/suite:0.1.0", nightly.CLAIM, ["reg"])
    assert with_secret["spec"]["imagePullSecrets"] == [{"name": "reg"}]  # the CronJob's, so its image pulls


# ------------------------------------------------------------------ the manifests

def kubectl_binary() -> str | None:
    from testbed.paths import bin_dir
    from testbed.state import current_version

    built = bin_dir(current_version()) / "kubectl"
    return str(built) if built.exists() else shutil.which("kubectl")


def test_kustomize_renders_the_cronjob_with_the_three_knobs_and_rbac() -> None:
    exe = kubectl_binary()
    if exe is None:
        pytest.skip("no kubectl (python -m testbed up builds one)")
    r = subprocess.run([exe, "kustomize", str(ROOT / "manifests" / "nightly")], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(r.stdout) if d}
    cron = docs[("CronJob", nightly.CRONJOB)]
    assert cron["metadata"]["namespace"] == nightly.NAMESPACE
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "clusterproof"
    c = pod["containers"][0]
    assert c["image"] == nightly.SUITE_IMAGE == "localhost/clusterproof/suite:" + __import__("clusterproof").__version__
    assert c["command"][:4] == ["python3", "-m", "clusterproof.nightly", "run"] and c["command"][-1] == "--"
    assert c["args"] == ["-n", "2", "-m", "not destructive"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsUser"] == 10001
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == nightly.CLAIM for v in pod["volumes"])
    assert ("PersistentVolumeClaim", nightly.CLAIM) in docs
    # ../rbac comes along, its kube-system Role left in kube-system
    assert docs[("Role", "clusterproof-read-config")]["metadata"]["namespace"] == "kube-system"
    assert {("Namespace", "clusterproof"), ("ServiceAccount", "clusterproof"), ("ClusterRole", "clusterproof"),
            ("ClusterRoleBinding", "clusterproof")} <= set(docs)
    # the pytest the pod runs uses the pod transport and compares with the previous run
    cmd = nightly.pytest_command(Path("/reports/x"), "/tmp/k", Path("/reports/y/summary.json"), c["args"])
    assert "--host-transport=pod" in cmd and "--compare=/reports/y/summary.json" in cmd


def test_print_images_lists_the_suite_image() -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT),
                        "--print-images"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert nightly.SUITE_IMAGE in r.stdout.splitlines()


INTERRUPTIBLE = r"""
import json, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
(out / "started").write_text("")
try:
    time.sleep(60)
except KeyboardInterrupt:  # what pytest does on SIGINT: clean up, report INCOMPLETE, exit 2
    doc = json.loads(open(sys.argv[2]).read())
    doc["verdict"] = "INCOMPLETE"
    (out / "summary.json").write_text(json.dumps(doc))
    sys.exit(2)
sys.exit(0)
"""


def test_sigterm_reaches_pytest_as_ctrl_c(tmp_path: Path, monkeypatch) -> None:
    """The Job's deadline (SIGTERM to the pod's first process) lets pytest clean up and still leave a report."""
    import signal
    import threading
    import time

    template = tmp_path / "template.json"
    template.write_text(json.dumps(summary({("NODE-001", None): "passed"})))
    monkeypatch.setattr(nightly, "pytest_command", lambda out, *_a: [sys.executable, "-c", INTERRUPTIBLE, str(out),
                                                                     str(template)])
    reports = tmp_path / "reports"

    def terminate_when_started() -> None:
        # the signal goes to a started child; one it never reaches sleeps its 60 s and exits 0, failing the asserts
        while not list(reports.glob("*/started")):
            time.sleep(0.05)
        # to the main thread, which waits on the child (as the pod's first process gets it): a signal the kernel
        # hands to this thread instead would leave the main thread in waitpid until the child's 60 s are over
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_when_started, daemon=True).start()
    result = nightly.run(reports, 5, [], kubeconfig="/k", echo=lambda _m: None)
    assert result.exitstatus == 2 and result.summary is not None and result.summary["verdict"] == "INCOMPLETE"
    assert (result.folder / "metrics.prom").exists()
    assert signal.getsignal(signal.SIGTERM) == before


def test_metrics_are_put_to_a_pushgateway(tmp_path: Path) -> None:
    """What `run --pushgateway URL` sends: a PUT of the text format under job=clusterproof (a local stand-in)."""
    import http.server
    import threading

    got: list[tuple[str, str, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.command, self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        text = nightly.render_metrics(summary({("NODE-001", None): "passed"}))
        nightly.push_metrics(f"http://127.0.0.1:{server.server_port}/", text, timeout=10)
    finally:
        server.server_close()
    assert got == [("PUT", "/metrics/job/clusterproof", "text/plain; version=0.0.4", text.encode())]
