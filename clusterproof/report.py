"""The sign-off reports rendered from the typed result tree: summary.json's digest, the comparison,
the HTML header and per-check blocks, and junit.xml.

Pure functions, no pytest: the reporting plugin renders with them and `python -m clusterproof.verify`
re-renders from summary.json's tree with the same functions, so a hand-edited summary.json or
report.html no longer matches what these functions produce.
"""
from __future__ import annotations

import hashlib
import html
import json
from typing import Any
from xml.etree import ElementTree as ET

from . import catalog
from .results import BAD, GOOD, SCHEMA, CheckResult, Outcome, RunResult, TargetResult, area_order, label, totals

__all__ = ["SCHEMA", "BAD", "GOOD", "CSS", "canonical", "digest", "seal", "is_sealed", "compare", "render_header",
           "render_check", "render_junit", "embed", "e", "area_order"]
DIGEST_NOTE = ("sha256 over the UTF-8 JSON of this document without its 'digest' field, "
               "keys sorted, separators ',' and ':' (python -m clusterproof.verify recomputes it)")


# ---------------------------------------------------------------- digest

def canonical(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k != "digest"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest(doc: dict) -> str:
    return hashlib.sha256(canonical(doc)).hexdigest()


def seal(doc: dict) -> dict:
    """Add the digest field (after any other change to the document)."""
    doc["digest"] = {"algorithm": "sha256", "value": digest(doc), "over": DIGEST_NOTE}
    return doc


def is_sealed(doc: dict) -> bool:
    d = doc.get("digest")
    return isinstance(d, dict) and d.get("algorithm") == "sha256" and d.get("value") == digest(doc)


# ---------------------------------------------------------------- compare

def compare(previous: dict, run: RunResult) -> dict[str, Any]:
    """Newly failing, fixed, still failing (and failing before but not run now), keyed by test node id."""
    prev = {c["nodeid"]: c for c in previous.get("checks", [])}
    now = {t.nodeid: (c, t) for c, t in run.leaves()}
    bad, good = [str(o) for o in BAD], [str(o) for o in GOOD]

    def entry(check_id: str | None, nodeid: str, target: str | None, before: dict | None) -> dict:
        return {"nodeid": nodeid, "id": check_id, "target": target, "label": label(check_id, nodeid, target),
                "now": str(now[nodeid][1].outcome) if nodeid in now else "absent",
                "before": before["outcome"] if before else "absent"}

    newly = [entry(c.id, k, t.target, prev.get(k)) for k, (c, t) in sorted(now.items())
             if t.outcome in BAD and (k not in prev or prev[k]["outcome"] not in bad)]
    still = [entry(c.id, k, t.target, prev[k]) for k, (c, t) in sorted(now.items()) if t.outcome in BAD
             and k in prev and prev[k]["outcome"] in bad]
    fixed = [entry(p.get("id"), k, p.get("target"), p) for k, p in sorted(prev.items()) if p["outcome"] in bad
             and k in now and now[k][1].outcome in GOOD]
    gone = [entry(p.get("id"), k, p.get("target"), p) for k, p in sorted(prev.items()) if p["outcome"] in bad
            and (k not in now or str(now[k][1].outcome) not in bad + good)]
    return {
        "previous": {"run": previous.get("run"), "started": previous.get("started"),
                     "verdict": previous.get("verdict"), "digest_valid": is_sealed(previous)},
        "newly_failing": newly, "fixed": fixed, "still_failing": still, "not_run_now": gone,
    }


# ---------------------------------------------------------------- HTML

def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


CSS = """
.cp{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d232b;max-width:1200px}
.cp h3{font-size:17px;margin:22px 0 8px;border-bottom:2px solid #e3e7ed;padding-bottom:4px}
.cp table{border-collapse:collapse;margin:4px 0 8px;font-size:13px;max-width:100%}
.cp th,.cp td{border:1px solid #d5dbe3;padding:4px 9px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
#cp-failures{width:100%;table-layout:fixed}
#cp-failures col.c1{width:25%}#cp-failures col.c2{width:7%}#cp-failures col.c3{width:12%}
body{display:flex;flex-direction:column}
body>h1{order:-3}body>p:first-of-type{order:-2}body>.summary{order:-1}
#environment-header,#environment{order:5}body>footer{order:6}
#environment-header h2:after{content:" (of the machine that ran the suite)";font-weight:400;font-size:14px}
.cp th{background:#f1f4f8;font-weight:600}
.cp code{font:12px/1.4 "DejaVu Sans Mono",Menlo,Consolas,monospace;background:#f1f4f8;padding:1px 4px;border-radius:3px}
.cp-verdict{display:flex;align-items:center;gap:18px;padding:14px 18px;border-radius:8px;margin:6px 0 14px;
 border:2px solid}
.cp-verdict .big{font-size:30px;font-weight:800;letter-spacing:1px;white-space:nowrap}
.cp-verdict .who{font-size:13px;color:#1d232b;margin:2px 0}
.cp-verdict .why{font-size:15px}
.cp-verdict .digest{font-size:12px;color:#39424e;word-break:break-all}
.cp-PASS{background:#e8f6ec;border-color:#2e8b57;color:#155d32}
.cp-FAIL{background:#fdecec;border-color:#c62828;color:#8e1c1c}
.cp-INCOMPLETE,.cp-SKIPPED{background:#fff6e0;border-color:#d99a00;color:#6d4d00}
.cp-NOTRUN{background:#f4f5f7;border-color:#b9c0ca;color:#59636f}
.cp-areas{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0 10px}
.cp-area{min-width:130px;padding:8px 12px;border-radius:8px;border:2px solid}
.cp-area .name{font-weight:700;font-size:15px;text-transform:uppercase;letter-spacing:.5px}
.cp-area .state{font-weight:800;font-size:18px}
.cp-area .counts{font-size:12px}
.cp-badge{display:inline-block;padding:0 7px;border-radius:10px;font-weight:700;font-size:12px;border:1px solid}
.cp-grid{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:4px 0 8px}
.cp-grid dt{font-weight:600;color:#39424e}
.cp-grid dd{margin:0}
.cp-check{font:14px/1.45 system-ui,"DejaVu Sans",sans-serif;border-left:5px solid #b9c0ca;padding:8px 12px;
 margin:4px 0 10px;background:#fafbfc;white-space:normal}
.cp-check.failed,.cp-check.error{border-left-color:#c62828;background:#fff7f7}
.cp-check.passed{border-left-color:#2e8b57}
.cp-check.skipped,.cp-check.warned{border-left-color:#d99a00}
.cp-WARN{background:#fff6e0;border-color:#d99a00;color:#6d4d00}
.cp-check .must{font-style:italic;color:#39424e;margin-bottom:4px}
.cp-check .fix{background:#fff3cd;padding:3px 6px;border-radius:4px}
.cp-check details{margin:6px 0 0}
.cp-check summary{cursor:pointer;font-weight:600;color:#1f4e8c}
.cp-check pre{white-space:pre-wrap;word-break:break-word;max-height:420px;overflow:auto;background:#f4f6f9;
 border:1px solid #d5dbe3;padding:6px 8px;font:12px/1.4 "DejaVu Sans Mono",Menlo,Consolas,monospace}
.cp-muted{color:#59636f}
.cp-list li{margin:3px 0}
body,#results-table,.filters button,.collapse button{color:#3a434e}
#results-table{font-size:13px}
.cp-check,.cp-check dd{color:#1d232b}
"""

def _badge(v: str) -> str:
    return f'<span class="cp-badge cp-{e(v.replace(" ", ""))}">{e(v)}</span>'


def render_header(run: RunResult, digest_value: str) -> str:
    """The sign-off block at the top of report.html: verdict, areas, failures, warnings, skips, comparison,
    fingerprint."""
    v, why = run.verdict()
    fp = run.fingerprint or {}
    t = totals(run.targets)
    parts = [f'<div class="cp" id="clusterproof-header" data-digest="{e(digest_value)}">']
    parts.append(
        f'<div class="cp-verdict cp-{e(v)}" id="cp-verdict" data-verdict="{e(v)}">'
        f'<div class="big">SIGN-OFF: {e(v)}</div><div><div class="why">{e(why)} &mdash; '
        f'{t["passed"]} passed, {t["warned"]} warned, {t["failed"]} failed, {t["error"]} errors, '
        f'{t["skipped"]} skipped</div>'
        f'<div class="who">{e(_identity(fp))}</div>'
        f'<div class="digest">SHA-256 <code id="cp-digest">{e(digest_value)}</code> '
        f'(verify: <code>python -m clusterproof.verify summary.json report.html</code>)</div></div></div>')

    parts.append('<h3>Results by area</h3><div class="cp-areas" id="cp-areas">')
    for name in area_order(set(catalog.AREAS) | {a.name for a in run.areas}):
        a = run.area(name)
        n = a.counts()
        counts = (f'{n["passed"] + n["warned"]} passed · {n["failed"] + n["error"]} failed · {n["skipped"]} skipped'
                  if a.targets else "no checks selected")
        parts.append(f'<div class="cp-area cp-{e(a.verdict.replace(" ", ""))}" data-area="{e(name)}">'
                     f'<div class="name">{e(name)}</div><div class="state">{e(a.verdict)}</div>'
                     f'<div class="counts">{e(counts)}</div></div>')
    parts.append("</div>")

    for outcomes, title, ident in ((BAD, "What failed", "cp-failures"), ((Outcome.WARNED,), "Warnings", "cp-warnings")):
        rows = [(c, x) for c, x in run.leaves() if x.outcome in outcomes]
        if not rows:
            continue
        parts.append(f'<h3>{title}</h3><table id="{ident}"><colgroup><col class="c1"><col class="c2">'
                     '<col class="c3"><col><col><col></colgroup><tr><th>Check</th><th>Area</th><th>Node / host'
                     '</th><th>Expected</th><th>Observed</th><th>Fix</th></tr>')
        for c, x in rows:
            vd = x.verdict
            observed = (vd.observed if vd and vd.observed else "") or x.message or str(x.outcome)
            parts.append(f'<tr><td><b>{e(c.id or "-")}</b><br><span class="cp-muted">{e(x.nodeid)}'
                         f'</span></td><td>{e(c.area)}</td><td>{e(x.target or (vd.subject if vd else "") or "-")}'
                         f'</td><td>{e(vd.expected if vd else "-")}</td><td>{e(observed)}</td>'
                         f'<td>{e(vd.fix if vd else "-")}</td></tr>')
        parts.append("</table>")
    skipped = [(c, x) for c, x in run.leaves() if x.outcome == Outcome.SKIPPED]
    if skipped:
        parts.append('<h3>Skipped (not part of the sign-off)</h3><ul class="cp-list" id="cp-skipped">')
        for c, x in skipped:
            parts.append(f'<li><b>{e(label(c.id, x.nodeid, x.target))}</b> &mdash; {e(x.message or "skipped")}</li>')
        parts.append("</ul>")
    if run.notes:
        parts.append('<h3>Why the run is incomplete</h3><ul class="cp-list" id="cp-notes">'
                     + "".join(f"<li>{e(n)}</li>" for n in run.notes) + "</ul>")
    if run.compare:
        parts.append(render_compare(run.compare))
    parts.append(render_fingerprint(fp, run))
    parts.append("</div>")
    return "".join(parts)


def _identity(fp: dict) -> str:
    if not fp.get("server"):
        return "cluster: not reached"
    nodes = fp.get("nodes") or []
    return (f'cluster {fp["server"]} · Kubernetes {fp.get("server_version") or "?"} · {len(nodes)} node'
            f'{"s" if len(nodes) != 1 else ""} · context {fp.get("context") or "-"}'
            + (" · facts incomplete" if fp.get("error") else ""))


def render_compare(cmp: dict) -> str:
    prev = cmp["previous"]
    warn = "" if prev.get("digest_valid") else ' <b class="cp-FAIL">(its digest does not match: it was altered)</b>'
    out = [(f'<h3>Compared with run {e(prev.get("run"))} of {e(prev.get("started"))} '
           f'(then {e(prev.get("verdict"))}){warn}</h3><div id="cp-compare">')]
    for key, title in (("newly_failing", "Newly failing"), ("fixed", "Fixed"), ("still_failing", "Still failing"),
                       ("not_run_now", "Failing before, not run now")):
        rows = cmp.get(key) or []
        if key == "not_run_now" and not rows:
            continue
        items = "".join(f'<li><b>{e(r["label"])}</b> <span class="cp-muted">({e(r["before"])} &rarr; '
                        f'{e(r["now"])}) {e(r["nodeid"])}</span></li>' for r in rows) or "<li>none</li>"
        out.append(f'<div data-compare="{key}"><b>{title}: {len(rows)}</b><ul class="cp-list">{items}</ul></div>')
    out.append("</div>")
    return "".join(out)


def render_fingerprint(fp: dict, run: RunResult) -> str:
    rows = [("API server", fp.get("server") or "-"), ("Server version", fp.get("server_version") or "-"),
            ("Context", fp.get("context") or "-"), ("CNI", fp.get("cni") or "not detected"),
            ("Control plane", fp.get("control_plane") or "-"),
            ("Suite", f"clusterproof {run.suite_version}"), ("Run", run.run or "-"),
            ("Started", run.started), ("Finished", run.finished)]
    out = ['<h3>Cluster fingerprint</h3>']
    if fp.get("error"):
        out.append(f'<p class="cp-FAIL" style="padding:6px 10px;border:1px solid;border-radius:6px" id="cp-nocluster">'
                   f'No cluster facts: {e(fp["error"])}</p>')
    out.append('<dl class="cp-grid" id="cp-fingerprint">')
    out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows]
    out.append("</dl>")
    nodes = fp.get("nodes") or []
    if nodes:
        out.append('<table id="cp-nodes"><tr><th>Node</th><th>Roles</th><th>Internal IP</th><th>Kubelet</th>'
                   '<th>Runtime</th><th>Kernel</th><th>OS</th><th>GPUs</th></tr>')
        for n in nodes:
            gpus = ", ".join(f"{k}={v}" for k, v in (n.get("gpus") or {}).items()) or "none"
            out.append(f'<tr><td><b>{e(n["name"])}</b></td><td>{e(", ".join(n.get("roles") or []))}</td>'
                       f'<td>{e(n.get("internal_ip"))}</td><td>{e(n.get("kubelet_version"))}</td>'
                       f'<td>{e(n.get("runtime_version"))}</td><td>{e(n.get("kernel_version"))}</td>'
                       f'<td>{e(n.get("os_image"))}</td><td>{e(gpus)}</td></tr>')
        out.append("</table>")
    return "".join(out)


def render_check(check: CheckResult, t: TargetResult) -> str:
    """The per-check block shown above the log: ID, target, expected vs observed, fix, evidence folded."""
    vd = t.verdict
    out = [f'<div class="cp-check {e(t.outcome)}" data-check="{e(check.id or t.nodeid)}">',
           (f'<div><b>{e(check.id or "(no check ID)")}</b> {_badge(str(t.outcome).upper())} '
            f'<span class="cp-muted">area {e(check.area)} · node/host {e(t.target or "cluster")}'
            + (f" · severity {e(check.severity)}" if check.severity != "FAIL" else "") + "</span></div>")]
    if check.must:
        out.append(f'<div class="must">{e(check.must)}</div>')
    if vd is not None and vd.status in ("fail", "warn", "error") and (vd.expected or vd.observed):
        out.append(f'<dl class="cp-grid"><dt>Subject</dt><dd>{e(vd.subject)}</dd>'
                   f'<dt>Expected</dt><dd>{e(vd.expected)}</dd><dt>Observed</dt><dd>{e(vd.observed)}</dd>'
                   f'<dt>Remediation</dt><dd><span class="fix">{e(vd.fix)}</span></dd></dl>')
        if vd.rows:
            out.append("<ul>" + "".join(f"<li>{e(r)}</li>" for r in vd.rows) + "</ul>")
    elif t.message and t.outcome != Outcome.PASSED:
        out.append(f'<div>{e(t.message)}</div>')
    for i, ev in enumerate(t.evidence):
        out.append(f'<details class="cp-evidence"><summary>Evidence {i + 1}: {e(ev.source)}</summary>'
                   f'<pre>{e(ev.output)}</pre></details>')
    out.append("</div>")
    return "".join(out)


def embed(doc: dict) -> str:
    """The results document inside the HTML (inert JSON, `</` escaped) for verification."""
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/json" id="clusterproof-results">{text}</script>'


# ---------------------------------------------------------------- JUnit

def render_junit(run: RunResult, digest_value: str = "") -> str:
    """junit.xml: one testsuite per area, one testcase per target (classname = check ID, name = the test's
    name with its target, as pytest writes it, file = its module).

    A warned check is a passing testcase with a <system-out> note (CI should not go red on a WARN);
    failures carry expected/observed/fix as the message and the rows as text."""
    suites = ET.Element("testsuites", name="clusterproof", verdict=run.verdict()[0])
    if digest_value:
        suites.set("digest", digest_value)
    for a in run.areas:
        c = a.counts()
        suite = ET.SubElement(suites, "testsuite", name=a.name, tests=str(len(a.targets)),
                              failures=str(c["failed"]), errors=str(c["error"]), skipped=str(c["skipped"]),
                              time=f"{sum(t.duration for t in a.targets):.3f}")
        for check in a.checks:
            for t in check.targets:
                case = ET.SubElement(suite, "testcase", classname=check.id or a.name,
                                     name=t.nodeid.split("::")[-1], file=t.nodeid.split("::")[0],
                                     time=f"{t.duration:.3f}")
                vd = t.verdict
                text = vd.message if vd is not None and vd.status != "pass" else t.message
                if t.outcome == Outcome.FAILED:
                    ET.SubElement(case, "failure", message=text.splitlines()[0] if text else "failed").text = text
                elif t.outcome == Outcome.ERROR:
                    ET.SubElement(case, "error", message=text.splitlines()[0] if text else "error").text = text
                elif t.outcome == Outcome.SKIPPED:
                    ET.SubElement(case, "skipped", message=text or "skipped")
                elif t.outcome == Outcome.WARNED:
                    ET.SubElement(case, "system-out").text = f"WARN: {text}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
