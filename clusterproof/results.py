"""The typed result tree: run -> area -> check -> target, and the sign-off derived from it alone.

The reporting plugin fills the tree from pytest's reports; summary.json is its serialisation
(`RunResult.to_doc`, read back by `RunResult.from_doc`), and report.html and junit.xml are
rendered from it (clusterproof.report). A target is one test item: a check on one node or host
(`target` is its parameter id), or on the whole cluster (`target` None).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from . import catalog
from .verdict import Evidence, Status, Verdict

SCHEMA = "clusterproof.summary/2"


class Outcome(enum.StrEnum):
    PASSED = "passed"
    WARNED = "warned"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"


# The process's exit status when every check that ran passed but the sign-off is INCOMPLETE (an owner deselected, no
# check ran to a verdict): a run that cannot sign the cluster off must not exit 0 (pytest's own codes are 0..5; bad
# input is 10..14).
EXIT_INCOMPLETE = 15

BAD = (Outcome.FAILED, Outcome.ERROR)
GOOD = (Outcome.PASSED, Outcome.WARNED, Outcome.XFAILED)
_RANK = {o: i for i, o in enumerate((Outcome.ERROR, Outcome.FAILED, Outcome.WARNED, Outcome.XPASSED,
                                     Outcome.PASSED, Outcome.XFAILED, Outcome.SKIPPED))}
KNOWN_PHASE_OUTCOMES = ("passed", "failed", "skipped", "xfailed", "xpassed")


def combine(phases: dict[str, str]) -> Outcome:
    """One outcome from a test's phases (setup/call/teardown; any other phase, e.g. xdist's "???" for a
    crashed worker, or an outcome pytest does not define, is an error: machinery never passes)."""
    if any(p not in ("setup", "call", "teardown") or o not in KNOWN_PHASE_OUTCOMES for p, o in phases.items()):
        return Outcome.ERROR
    setup, call, teardown = phases.get("setup"), phases.get("call"), phases.get("teardown")
    if setup == "failed":
        return Outcome.ERROR
    if setup in ("skipped", "xfailed"):
        outcome = Outcome(setup)
    elif call is None:
        return Outcome.ERROR          # set up, never called: the run stopped under it
    else:
        outcome = Outcome(call)
    if teardown == "failed" and outcome not in BAD:
        return Outcome.ERROR
    return outcome


@dataclass
class TargetResult:
    """One test item's result: a check on one target."""

    nodeid: str
    target: str | None
    outcome: Outcome
    duration: float = 0.0
    verdicts: list[Verdict] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    message: str = ""
    phases: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict | None:
        """The verdict that explains the outcome: the first non-pass one, else the first."""
        return next((v for v in self.verdicts if v.status != Status.PASS), self.verdicts[0] if self.verdicts else None)

    def to_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {"nodeid": self.nodeid, "target": self.target, "outcome": str(self.outcome),
                "duration": round(self.duration, 3), "verdict": v.to_dict() if v else None,
                "verdicts": [x.to_dict() for x in self.verdicts],
                "evidence": [{"source": e.source, "output": e.output} for e in self.evidence],
                "message": self.message, "phases": dict(self.phases)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetResult:
        return cls(d["nodeid"], d.get("target"), Outcome(d["outcome"]), float(d.get("duration") or 0.0),
                   [Verdict.from_dict(x) for x in d.get("verdicts") or []],
                   [Evidence(e.get("source", ""), e.get("output", "")) for e in d.get("evidence") or []],
                   d.get("message") or "", dict(d.get("phases") or {}))


@dataclass
class CheckResult:
    """One check (a catalog ID) over its targets; `id` None for a test without one (e.g. a collection error)."""

    id: str | None
    area: str
    must: str = ""
    severity: str = "FAIL"
    depends_on: tuple[str, ...] = ()
    targets: list[TargetResult] = field(default_factory=list)

    @classmethod
    def of(cls, check_id: str | None, area: str) -> CheckResult:
        entry = catalog.CATALOG.get(check_id or "")
        if entry is None:
            return cls(check_id, area)
        return cls(check_id, entry.area, entry.must, str(entry.severity), entry.depends_on)

    @property
    def outcome(self) -> Outcome:
        if not self.targets:
            return Outcome.SKIPPED
        return min((t.outcome for t in self.targets), key=lambda o: _RANK[o])


@dataclass
class AreaResult:
    name: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def targets(self) -> list[TargetResult]:
        return [t for c in self.checks for t in c.targets]

    def counts(self) -> dict[str, int]:
        return totals(self.targets)

    @property
    def verdict(self) -> str:
        """PASS / FAIL / SKIPPED / NOT RUN for the area."""
        t = self.counts()
        if not self.targets:
            return "NOT RUN"
        if t["failed"] or t["error"]:
            return "FAIL"
        if t["passed"] or t["warned"] or t["xfailed"]:
            return "PASS"
        return "SKIPPED"


def totals(targets: list[TargetResult]) -> dict[str, int]:
    out = {str(o): 0 for o in Outcome}
    for t in targets:
        out[str(t.outcome)] += 1
    return out


def area_order(names) -> list[str]:
    """Known areas in the suite's order, then any others alphabetically."""
    return [a for a in catalog.AREAS if a in names] + sorted(set(names) - set(catalog.AREAS))


@dataclass
class RunResult:
    """The whole run; `verdict()` is the sign-off."""

    run: str
    started: str
    finished: str = ""
    exitstatus: int | None = None
    suite_version: str = ""
    fingerprint: dict[str, Any] = field(default_factory=dict)
    areas: list[AreaResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # why the machinery could not finish (INCOMPLETE)
    compare: dict[str, Any] | None = None
    strict: bool = False    # --strict: a warning fails the sign-off too

    # -- building
    def add(self, check_id: str | None, area: str, target: TargetResult) -> CheckResult:
        entry = catalog.CATALOG.get(check_id or "")
        area = entry.area if entry else area
        a = next((x for x in self.areas if x.name == area), None)
        if a is None:
            a = AreaResult(area)
            self.areas.append(a)
            order = area_order([x.name for x in self.areas])
            self.areas.sort(key=lambda x: order.index(x.name))
        c = next((x for x in a.checks if x.id == check_id and check_id is not None), None)
        if c is None:
            c = CheckResult.of(check_id, area)
            a.checks.append(c)
        c.targets.append(target)
        return c

    def check_skip_chains(self) -> list[tuple[CheckResult, TargetResult]]:
        """A skip that blames another check stands only when that check failed in this run, or itself skipped
        blaming one that did (NODE-001 skips for CNI-002's finding): followed transitively.

        A skip that blames a check which passed (directly or down the chain), or one it does not depend on,
        hides a finding nobody reported: it becomes a failure (a warning for a WARN-severity check) whose
        message states what was observed, and the run signs off FAIL. A skip whose chain ends in a check that
        was not run (deselected) stays a skip that says so, and a note keeps the run from signing off PASS.
        Returns the (check, target) pairs it changed (an outcome, or a message)."""
        by_id = {c.id: c for c in self.checks if c.id}

        def trace(owner: str, seen: frozenset[str]) -> tuple[str, str]:
            """("failed", owner) the chain ends in a failure; ("not run", id) in a deselected check;
            ("broken", what was observed) otherwise."""
            c = by_id.get(owner)
            if c is None:
                return "not run", owner
            if c.outcome in BAD:
                return "failed", owner
            if owner in seen:
                return "broken", f"the skips loop back to {owner}"
            if c.outcome != Outcome.SKIPPED:
                return "broken", f"{owner} {c.outcome} in this run"
            blamed = list(dict.fromkeys(t.verdict.blames for t in c.targets
                                        if t.verdict is not None and t.verdict.blames))
            if not blamed:
                return "broken", f"{owner} only skipped (for its own reason, not a failure) in this run"
            ends = [(b, trace(b, seen | {owner})) for b in blamed]
            for want in ("broken", "not run"):
                hit = next(((b, end) for b, end in ends if end[0] == want), None)
                if hit is not None:
                    b, (kind, what) = hit
                    return kind, (what if kind == "not run" else f"{owner} skipped blaming {b}, and {what}")
            return "failed", owner

        changed: list[tuple[CheckResult, TargetResult]] = []
        # every chain is judged on the outcomes as the checks ended, before any skip is turned into a failure
        skips = [(c, t, t.verdict) for c, t in self.leaves() if t.outcome == Outcome.SKIPPED]
        ends = {(v.blames, c.id): trace(v.blames, frozenset({c.id or ""})) for c, _, v in skips if v and v.blames}
        for c, t, v in skips:
            if v is None or not v.blames:
                continue
            owner, reason = v.blames, (t.message or v.reason)[:300]
            where = label(c.id, t.nodeid, t.target)
            if c.id in catalog.CATALOG and owner not in c.depends_on:
                observed = (f"skipped blaming {owner}, which is not among its dependencies "
                            f"({', '.join(c.depends_on) or 'none'}): {reason}")
            else:
                kind, what = ends[(owner, c.id)]
                if kind == "failed":
                    continue
                if kind == "not run":
                    t.message = (f"{t.message} (the owner {what} was not run in this run: deselected, so no "
                                 "check reported what this skipped on)")
                    self.notes.append(f"{where} skipped blaming {owner}, but {what} was not run (deselected): "
                                      f"run {what} too to know whether the skip stands")
                    changed.append((c, t))
                    continue
                observed = f"skipped blaming {owner}, but {what}: {reason}"
            warn = c.severity == str(catalog.Severity.WARN)
            t.outcome = Outcome.WARNED if warn else Outcome.FAILED
            t.message = observed
            expected = (f"a skip only while {owner} fails in this run (one of its dependencies: "
                        f"{', '.join(c.depends_on) or 'none'})")
            fix = (f"look on the cluster at what {c.id or where} skipped on; a check skipped on a finding its owner "
                   "does not report: make the skip condition and the owner's check agree")
            t.verdicts.insert(0, Verdict(Status.WARN if warn else Status.FAIL, where, expected, observed, fix))
            changed.append((c, t))
        return changed

    # -- reading
    @property
    def checks(self) -> list[CheckResult]:
        return [c for a in self.areas for c in a.checks]

    @property
    def targets(self) -> list[TargetResult]:
        return [t for c in self.checks for t in c.targets]

    def leaves(self) -> list[tuple[CheckResult, TargetResult]]:
        return [(c, t) for c in self.checks for t in c.targets]

    def area(self, name: str) -> AreaResult:
        return next((a for a in self.areas if a.name == name), AreaResult(name))

    def verdict(self) -> tuple[str, str]:
        """(PASS|FAIL|INCOMPLETE, why). PASS only when every selected check passed or honestly skipped and the
        run completed; a failure or error makes it FAIL, an unfinished run INCOMPLETE."""
        targets = self.targets
        bad = [t for t in targets if t.outcome in BAD]
        if bad:
            n = len(bad)
            return "FAIL", f"{n} check{'s' if n != 1 else ''} failed or errored"
        if self.notes:
            return "INCOMPLETE", "; ".join(self.notes)
        if self.exitstatus not in (0, 1, None, EXIT_INCOMPLETE):
            return "INCOMPLETE", f"the run ended early (pytest exit status {self.exitstatus})"
        if not any(t.outcome in GOOD for t in targets):
            return "INCOMPLETE", "no check ran to a verdict"
        skipped = sum(t.outcome == Outcome.SKIPPED for t in targets)
        warned = sum(t.outcome == Outcome.WARNED for t in targets)
        if warned and self.strict:
            return "FAIL", f"{warned} check{'s' if warned != 1 else ''} warned (--strict: a warning fails the sign-off)"
        extra = [f"{n} {what}" for n, what in ((warned, "warned"), (skipped, "skipped")) if n]
        return "PASS", "no check failed" + (f" ({', '.join(extra)}, listed below)" if extra else "")

    # -- serialisation (summary.json)
    def to_doc(self) -> dict[str, Any]:
        v, why = self.verdict()
        names = area_order(set(catalog.AREAS) | {a.name for a in self.areas})
        return {
            "schema": SCHEMA, "suite_version": self.suite_version, "run": self.run,
            "started": self.started, "finished": self.finished, "exitstatus": self.exitstatus,
            "fingerprint": self.fingerprint, "verdict": v, "verdict_reason": why, "notes": list(self.notes),
            "totals": totals(self.targets),
            "areas": {n: {"verdict": self.area(n).verdict, "total": len(self.area(n).targets),
                          **self.area(n).counts(), "checks": [c.id for c in self.area(n).checks if c.id]}
                      for n in names},
            "checks": [{"id": c.id, "area": c.area, "must": c.must, "severity": c.severity,
                        **t.to_dict()} for c, t in self.leaves()],
            "compare": self.compare, "strict": self.strict,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RunResult:
        run = cls(doc.get("run") or "", doc.get("started") or "", doc.get("finished") or "", doc.get("exitstatus"),
                  doc.get("suite_version") or "", doc.get("fingerprint") or {}, [], list(doc.get("notes") or []),
                  doc.get("compare"), bool(doc.get("strict")))
        for leaf in doc.get("checks") or []:
            c = run.add(leaf.get("id"), leaf.get("area") or "other", TargetResult.from_dict(leaf))
            # what the document said wins, even where the catalog changed since
            c.must, c.severity = leaf.get("must", c.must), leaf.get("severity", c.severity)
        return run


def label(check_id: str | None, nodeid: str, target: str | None) -> str:
    ident = check_id or nodeid
    return f"{ident} [{target}]" if target else ident
