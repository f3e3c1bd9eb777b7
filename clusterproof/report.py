"""The sign-off results document (summary.json), its digest, the comparison and the HTML header.

Pure functions, no pytest: the reporting plugin builds the document with them and
`python -m clusterproof.verify` re-derives digest and HTML from the same functions, so a
hand-edited summary.json or report.html no longer matches what these functions produce.
"""
from __future__ import annotations

import hashlib
import html
import json
from typing import Any

SCHEMA = "clusterproof.summary/1"
AREAS = ["host", "runtime", "nodes", "network", "pods", "apps", "gpu"]
BAD = ("failed", "error")
GOOD = ("passed", "xfailed")
DIGEST_NOTE = ("sha256 over the UTF-8 JSON of this document without its 'digest' field, "
               "keys sorted, separators ',' and ':' (python -m clusterproof.verify recomputes it)")


# ---------------------------------------------------------------- outcomes

def combine(phases: dict[str, str]) -> str:
    """One outcome for a check from its phases' outcomes (setup/call/teardown -> passed|failed|skipped|x...)."""
    setup, call, teardown = phases.get("setup"), phases.get("call"), phases.get("teardown")
    if setup == "failed":
        return "error"
    if setup in ("skipped", "xfailed"):
        outcome = setup
    else:
        outcome = call or setup or "error"
    if teardown == "failed" and outcome not in BAD:
        return "error"
    return outcome


def verdict(checks: list[dict], exitstatus: int | None, collect_errors: int = 0) -> tuple[str, str]:
    """(PASS|FAIL|INCOMPLETE, why). PASS only when no check failed or errored and the run completed."""
    bad = [c for c in checks if c["outcome"] in BAD]
    if bad or collect_errors:
        n = len(bad) + collect_errors
        return "FAIL", f"{n} check{'s' if n != 1 else ''} failed or errored"
    if exitstatus not in (0, 1, None):
        return "INCOMPLETE", f"the run ended early (pytest exit status {exitstatus})"
    if not any(c["outcome"] in GOOD for c in checks):
        return "INCOMPLETE", "no check ran to a verdict"
    skipped = sum(c["outcome"] == "skipped" for c in checks)
    return "PASS", "no check failed" + (f" ({skipped} skipped, listed below)" if skipped else "")


def totals(checks: list[dict]) -> dict[str, int]:
    out = {k: 0 for k in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")}
    for c in checks:
        out[c["outcome"]] = out.get(c["outcome"], 0) + 1
    return out


def areas(checks: list[dict]) -> dict[str, dict[str, Any]]:
    """Per area: counts and a verdict (PASS/FAIL/SKIPPED/NOT RUN); known areas first, others after."""
    names = area_order(set(AREAS) | {c["area"] for c in checks})
    out = {}
    for name in names:
        mine = [c for c in checks if c["area"] == name]
        t = totals(mine)
        if not mine:
            v = "NOT RUN"
        elif t["failed"] or t["error"]:
            v = "FAIL"
        elif t["passed"] or t["xfailed"]:
            v = "PASS"
        else:
            v = "SKIPPED"
        out[name] = {"verdict": v, "total": len(mine), **t}
    return out


def area_order(names) -> list[str]:
    """Known areas in the suite's order, then any others alphabetically (JSON round trips sort keys)."""
    return [a for a in AREAS if a in names] + sorted(set(names) - set(AREAS))


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

def label(c: dict) -> str:
    ident = c.get("id") or c["nodeid"]
    return f"{ident} [{c['target']}]" if c.get("target") else ident


def compare(previous: dict, doc: dict) -> dict[str, Any]:
    """Newly failing, fixed, still failing (and failing before but not run now), keyed by test node id."""
    prev = {c["nodeid"]: c for c in previous.get("checks", [])}
    now = {c["nodeid"]: c for c in doc.get("checks", [])}

    def entry(c: dict, before: dict | None) -> dict:
        return {"nodeid": c["nodeid"], "id": c.get("id"), "target": c.get("target"), "label": label(c),
                "now": now[c["nodeid"]]["outcome"] if c["nodeid"] in now else "absent",
                "before": before["outcome"] if before else "absent"}

    newly = [entry(c, prev.get(k)) for k, c in sorted(now.items())
             if c["outcome"] in BAD and (k not in prev or prev[k]["outcome"] not in BAD)]
    still = [entry(c, prev[k]) for k, c in sorted(now.items()) if c["outcome"] in BAD and k in prev
             and prev[k]["outcome"] in BAD]
    fixed = [entry(now[k], c) for k, c in sorted(prev.items()) if c["outcome"] in BAD and k in now
             and now[k]["outcome"] in GOOD]
    gone = [entry(c, c) for k, c in sorted(prev.items()) if c["outcome"] in BAD and
            (k not in now or now[k]["outcome"] not in BAD + GOOD)]
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
.cp-check.skipped{border-left-color:#d99a00}
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


def render_header(doc: dict) -> str:
    """The sign-off block at the top of report.html: verdict, fingerprint, areas, failures, comparison."""
    v, fp = doc["verdict"], doc.get("fingerprint") or {}
    t = doc["totals"]
    parts = [f'<div class="cp" id="clusterproof-header" data-digest="{e(doc["digest"]["value"])}">']
    parts.append(
        f'<div class="cp-verdict cp-{e(v)}" id="cp-verdict" data-verdict="{e(v)}">'
        f'<div class="big">SIGN-OFF: {e(v)}</div><div><div class="why">{e(doc["verdict_reason"])} &mdash; '
        f'{t["passed"]} passed, {t["failed"]} failed, {t["error"]} errors, {t["skipped"]} skipped</div>'
        f'<div class="who">{e(_identity(fp))}</div>'
        f'<div class="digest">SHA-256 <code id="cp-digest">{e(doc["digest"]["value"])}</code> '
        f'(verify: <code>python -m clusterproof.verify summary.json report.html</code>)</div></div></div>')

    parts.append('<h3>Results by area</h3><div class="cp-areas" id="cp-areas">')
    for name in area_order(doc["areas"]):
        a = doc["areas"][name]
        counts = (f'{a["passed"]} passed · {a["failed"] + a["error"]} failed · {a["skipped"]} skipped'
                  if a["total"] else "no checks selected")
        parts.append(f'<div class="cp-area cp-{e(a["verdict"].replace(" ", ""))}" data-area="{e(name)}">'
                     f'<div class="name">{e(name)}</div><div class="state">{e(a["verdict"])}</div>'
                     f'<div class="counts">{e(counts)}</div></div>')
    parts.append("</div>")

    bad = [c for c in doc["checks"] if c["outcome"] in BAD]
    if bad:
        parts.append('<h3>What failed</h3><table id="cp-failures"><colgroup><col class="c1"><col class="c2">'
                     '<col class="c3"><col><col><col></colgroup><tr><th>Check</th><th>Area</th><th>Node / host'
                     '</th><th>Expected</th><th>Observed</th><th>Fix</th></tr>')
        for c in bad:
            f = c.get("finding") or {}
            observed = f.get("observed") or c.get("message") or c["outcome"]
            parts.append(f'<tr><td><b>{e(c.get("id") or "-")}</b><br><span class="cp-muted">{e(c["nodeid"])}'
                         f'</span></td><td>{e(c["area"])}</td><td>{e(c.get("target") or f.get("subject") or "-")}</td>'
                         f'<td>{e(f.get("expected", "-"))}</td><td>{e(observed)}</td><td>{e(f.get("fix", "-"))}</td>'
                         "</tr>")
        parts.append("</table>")
    skipped = [c for c in doc["checks"] if c["outcome"] == "skipped"]
    if skipped:
        parts.append('<h3>Skipped (not part of the sign-off)</h3><ul class="cp-list" id="cp-skipped">')
        for c in skipped:
            parts.append(f'<li><b>{e(label(c))}</b> &mdash; {e(c.get("message") or "skipped")}</li>')
        parts.append("</ul>")

    if doc.get("compare"):
        parts.append(render_compare(doc["compare"]))

    parts.append(render_fingerprint(fp, doc))
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


def render_fingerprint(fp: dict, doc: dict) -> str:
    rows = [("API server", fp.get("server") or "-"), ("Server version", fp.get("server_version") or "-"),
            ("Context", fp.get("context") or "-"), ("CNI", fp.get("cni") or "not detected"),
            ("Suite", f'clusterproof {doc.get("suite_version")}'), ("Run", doc.get("run") or "-"),
            ("Started", doc.get("started")), ("Finished", doc.get("finished"))]
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


def render_check(c: dict) -> str:
    """The per-check block shown above the log: ID, target, expected vs observed, fix, evidence folded."""
    f = c.get("finding") or {}
    out = [f'<div class="cp-check {e(c["outcome"])}" data-check="{e(c.get("id") or c["nodeid"])}">',
           (f'<div><b>{e(c.get("id") or "(no check ID)")}</b> {_badge(c["outcome"].upper())} '
           f'<span class="cp-muted">area {e(c["area"])} · node/host {e(c.get("target") or "cluster")}</span></div>')]
    if c.get("must"):
        out.append(f'<div class="must">{e(c["must"])}</div>')
    if f:
        out.append(f'<dl class="cp-grid"><dt>Subject</dt><dd>{e(f.get("subject"))}</dd>'
                   f'<dt>Expected</dt><dd>{e(f.get("expected"))}</dd><dt>Observed</dt><dd>{e(f.get("observed"))}</dd>'
                   f'<dt>Remediation</dt><dd><span class="fix">{e(f.get("fix"))}</span></dd></dl>')
        if f.get("rows"):
            out.append("<ul>" + "".join(f"<li>{e(r)}</li>" for r in f["rows"]) + "</ul>")
    elif c.get("message") and c["outcome"] != "passed":
        out.append(f'<div>{e(c["message"])}</div>')
    for i, ev in enumerate(c.get("evidence") or []):
        out.append(f'<details class="cp-evidence"><summary>Evidence {i + 1}: {e(ev.get("source"))}</summary>'
                   f'<pre>{e(ev.get("output"))}</pre></details>')
    out.append("</div>")
    return "".join(out)


def embed(doc: dict) -> str:
    """The results document inside the HTML (inert JSON, `</` escaped) for verification."""
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/json" id="clusterproof-results">{text}</script>'
