"""Tell an untouched sign-off report from one altered by hand.

    python -m clusterproof.verify reports/summary.json [reports/report.html]

summary.json: its SHA-256 digest is recomputed over its canonical JSON.
report.html: the results embedded in it must carry a valid digest, the sign-off header and each
check's block must be exactly what those results render to, and the results table must show the
same outcomes. Several files: they must all carry the same digest.
Prints VALID or ALTERED (with the reasons) per file. Exit status: 0 all valid, 1 altered,
2 a file could not be read or is not a clusterproof report.

The digest tells edits apart; it is not a signature: whoever can rerun the suite can make a
new valid report. Keep the digest printed by the run (CI log) to pin a report down.
"""
from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

from . import report
from .results import RunResult

EXIT_VALID, EXIT_ALTERED, EXIT_UNREADABLE = 0, 1, 2
_EMBED = re.compile(r'<script type="application/json" id="clusterproof-results">(.*?)</script>', re.DOTALL)
_BLOB = re.compile(r'data-jsonblob="([^"]*)"')
_HTML_RESULT = {"Passed": "passed", "Failed": "failed", "Error": "error", "Skipped": "skipped",
                "XFailed": "xfailed", "XPassed": "xpassed"}


class Unreadable(Exception):
    pass


def check_summary(text: str) -> tuple[dict, list[str]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Unreadable(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("schema") != report.SCHEMA or not isinstance(doc.get("checks"), list):
        raise Unreadable(f"not a clusterproof summary (schema {report.SCHEMA} expected)")
    problems = []
    stated = (doc.get("digest") or {}).get("value")
    actual = report.digest(doc)
    if stated != actual:
        problems.append(f"digest {str(stated)[:16]}... does not match the content (recomputed {actual[:16]}...)")
    return doc, problems


def check_html(text: str) -> tuple[dict, list[str]]:
    m = _EMBED.search(text)
    if not m:
        raise Unreadable("no clusterproof results embedded (not a clusterproof report.html)")
    doc, problems = check_summary(m.group(1))
    try:
        run = RunResult.from_doc(doc)
    except (KeyError, ValueError, TypeError) as exc:
        raise Unreadable(f"the embedded results are not a clusterproof result tree ({exc})") from None
    if report.render_header(run, (doc.get("digest") or {}).get("value", "")) not in text:
        problems.append("the sign-off header (verdict, areas, failures, fingerprint) differs from the results")
    blob = _BLOB.search(text)
    if not blob:
        problems.append("the results table data is missing")
        return doc, problems
    try:
        table = json.loads(html.unescape(blob.group(1))).get("tests", {})
    except (json.JSONDecodeError, AttributeError):
        problems.append("the results table data is not readable")
        return doc, problems
    bad = {str(o) for o in report.BAD}
    for check, t in run.leaves():
        if "collect" in t.phases:
            continue
        rows = table.get(t.nodeid) or []
        shown = {_HTML_RESULT.get(r.get("result"), r.get("result")) for r in rows}
        # pytest-html knows no WARN: a warned check is a passed row there.
        outcome = "passed" if t.outcome == "warned" else str(t.outcome)
        if not rows:
            problems.append(f"{t.nodeid}: missing from the results table")
        elif bool(shown & bad) != (outcome in bad) or (outcome not in bad and outcome not in shown):
            problems.append(f"{t.nodeid}: table shows {sorted(shown)}, results say {t.outcome}")
        block = report.render_check(check, t)
        if not any(block in (x.get("content") or "") for r in rows for x in r.get("extras", [])):
            problems.append(f"{t.nodeid}: its check block (expected vs observed, evidence) was changed")
    return doc, problems


def verify(paths: list[str]) -> tuple[int, list[str]]:
    lines, digests, code = [], {}, EXIT_VALID
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8")
            doc, problems = (check_html if p.endswith((".html", ".htm")) else check_summary)(text)
        except OSError as exc:
            lines.append(f"UNREADABLE {p}: {exc.strerror}")
            code = max(code, EXIT_UNREADABLE)
            continue
        except Unreadable as exc:
            lines.append(f"UNREADABLE {p}: {exc}")
            code = max(code, EXIT_UNREADABLE)
            continue
        digests[p] = (doc.get("digest") or {}).get("value")
        if problems:
            code = max(code, EXIT_ALTERED)
            lines.append(f"ALTERED {p}")
            lines += [f"  - {x}" for x in problems]
        else:
            lines.append(f"VALID {p}: verdict {doc.get('verdict')}, run {doc.get('run')}, sha256 {digests[p]}")
    if len(set(digests.values())) > 1:
        code = max(code, EXIT_ALTERED) if code != EXIT_UNREADABLE else code
        lines.append("ALTERED: the files carry different digests (not the same run, or one was changed): "
                     + ", ".join(f"{k}={str(v)[:16]}..." for k, v in digests.items()))
    return code, lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return EXIT_UNREADABLE if not args else EXIT_VALID
    code, lines = verify(args)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
