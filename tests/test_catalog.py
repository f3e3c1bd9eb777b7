"""The check catalog against the code: every entry has its check, every check its entry, the README its table,
and the collection guard refuses unknown or duplicate IDs with one line."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clusterproof import catalog

ROOT = Path(__file__).resolve().parent.parent


def _marked_checks() -> dict[str, list[str]]:
    """check ID -> ["suites/...py::function", ...] from the @pytest.mark.check markers in suites/."""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "suites").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for d in fn.decorator_list:
                if (isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "check"
                        and d.args and isinstance(d.args[0], ast.Constant)):
                    out.setdefault(str(d.args[0].value), []).append(
                        f"{path.relative_to(ROOT).as_posix()}::{fn.name}")
    return out


def test_every_check_has_an_entry_and_every_entry_its_check() -> None:
    marked = _marked_checks()
    assert sorted(set(marked) - set(catalog.CATALOG)) == [], "checks marked in suites/ but not in the catalog"
    assert sorted(set(catalog.CATALOG) - set(marked)) == [], "catalog entries with no check in suites/"
    assert {k: v for k, v in marked.items() if len(v) > 1} == {}, "one ID on several tests"
    wrong = {c.id: (c.test, marked[c.id][0]) for c in catalog.CATALOG.values() if marked[c.id] != [c.test]}
    assert wrong == {}, "catalog 'test' must name the test that carries the marker"


def test_entries_are_complete_and_consistent() -> None:
    for c in catalog.CATALOG.values():
        assert c.id.split("-")[0] in {"HOST", "CRI", "CP", "NODE", "CNI", "DNS", "POD", "APP", "GPU"}, c.id
        assert c.path.startswith(f"suites/{c.area}/"), f"{c.id}: test outside suites/{c.area}/"
        assert " MUST " in f" {c.must} ", f"{c.id}: the MUST sentence says MUST"
        assert c.why and c.fix and c.must.endswith("."), c.id
        assert c.id not in c.depends_on and c.id not in catalog.dependents(c.id), f"{c.id} depends on itself"


def test_faults_name_real_testbed_faults() -> None:
    from testbed import faults

    known = set(faults.FAULTS)
    named = {f.name for c in catalog.CATALOG.values() for f in c.faults}
    assert named - known == set()


def test_readme_table_is_generated_from_the_catalog() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert catalog.readme_section() in text, (
        "README's check table drifted from clusterproof/catalog.py: run python -m clusterproof.catalog --write-readme")
    for c in catalog.CATALOG.values():
        assert f"[{c.id}]" in text


def test_rewrite_readme_replaces_only_the_section() -> None:
    before = f"intro\n{catalog.README_BEGIN}\nold table\n{catalog.README_END}\nafter\n"
    after = catalog.rewrite_readme(before)
    assert after.startswith("intro\n") and after.endswith("\nafter\n") and "old table" not in after
    with pytest.raises(ValueError, match="no catalog markers"):
        catalog.rewrite_readme("no markers here")


def test_list_checks_prints_the_catalog_without_a_cluster(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "missing")}
    p = subprocess.run([sys.executable, "-m", "pytest", "suites", "--list-checks", "-p", "no:cacheprovider"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert p.returncode == 0, p.stderr
    for c in catalog.CATALOG.values():
        assert f"  {c.id}" in p.stdout and c.must in p.stdout
    assert "fix: " in p.stdout and "depends on: HOST-001" in p.stdout


def _guarded_suite(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    pytester.makeconftest('pytest_plugins = ["fixtures.options", "fixtures.catalog"]\n')
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    path = pytester.path / "suites" / "nodes" / "test_x.py"
    path.parent.mkdir(parents=True)
    path.write_text("import pytest\n" + body)
    return pytester.runpytest_subprocess("--co", "-q", timeout=120)


def test_unknown_check_id_stops_collection_with_one_line(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    res = _guarded_suite(pytester, '@pytest.mark.check("NODE-999")\ndef test_a():\n    pass\n')
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in res.errlines if line.startswith("ERROR")]
    assert len(errors) == 1 and "NODE-999" in errors[0] and "not in the catalog" in errors[0]
    assert "Traceback" not in "\n".join(res.outlines + res.errlines)


def test_duplicate_check_id_stops_collection(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    res = _guarded_suite(pytester, '@pytest.mark.check("NODE-001")\ndef test_a():\n    pass\n\n\n'
                                   '@pytest.mark.check("NODE-001")\ndef test_b():\n    pass\n')
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["ERROR: check ID NODE-001 is marked on two tests:*test_a and *test_b"])


def test_check_without_an_id_stops_collection(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    res = _guarded_suite(pytester, "def test_unmarked():\n    pass\n")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["ERROR: *test_unmarked: a check without @pytest.mark.check(ID)*"])


def test_parametrized_check_is_one_check_and_gets_its_area(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    res = _guarded_suite(pytester, '@pytest.mark.check("NODE-002")\n@pytest.mark.parametrize("k", [1, 2])\n'
                                   'def test_a(k):\n    pass\n')
    assert res.ret == pytest.ExitCode.OK
    res = pytester.runpytest_subprocess("--co", "-q", "-m", "nodes", timeout=120)
    res.stdout.fnmatch_lines(["*test_a[[]1[]]", "*test_a[[]2[]]"])


def test_a_check_past_its_time_limit_is_an_error_not_a_pass(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest('pytest_plugins = ["fixtures.options", "fixtures.catalog", "fixtures.reporting"]\n')
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    path = pytester.path / "suites" / "nodes" / "test_x.py"
    path.parent.mkdir(parents=True)
    path.write_text("import time\nimport pytest\n\n\n@pytest.mark.check('NODE-002')\ndef test_hangs():\n"
                    "    time.sleep(30)\n\n\n@pytest.mark.check('NODE-003')\ndef test_quick():\n    pass\n")
    kc = pytester.path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    # NODE-002's limit is 60 s; scaled by 0.02 it is 1.2 s
    res = pytester.runpytest_subprocess("--kubeconfig", str(kc), "--timeout-scale", "0.02", "--report-dir", "out",
                                        timeout=120)
    doc = json.loads((pytester.path / "out" / "summary.json").read_text())
    by = {c["id"]: c for c in doc["checks"]}
    assert by["NODE-002"]["outcome"] == "error"
    assert "ran past its time limit of 1 s" in by["NODE-002"]["verdict"]["reason"]
    assert by["NODE-003"]["outcome"] == "passed"
    assert doc["verdict"] == "FAIL" and res.ret == pytest.ExitCode.TESTS_FAILED


def test_every_area_is_a_registered_marker() -> None:
    """Each check gets its area as a marker (fixtures/catalog.py) under --strict-markers: an area without one stops
    collection with an internal error."""
    from fixtures import options

    assert set(catalog.AREAS) <= set(options.MARKERS)
