"""The one verdict type every check ends in: pass, fail, warn, skip or error, with its explanation.

Rule functions (pure: facts in, a Verdict out) live in `clusterproof/`; a check gathers facts,
calls a rule and hands the verdict to `clusterproof.checks.apply`. Nothing here knows pytest, so
the rules are tested with plain values and re-judged offline (gpu-verify, recorded outputs).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

MAX_ROWS = 10


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    ERROR = "error"


@dataclass(frozen=True)
class Evidence:
    """What was asked (a command or API call) and what it returned."""

    source: str
    output: str


@dataclass(frozen=True)
class Verdict:
    """One judgement on one subject.

    `expected`/`observed`/`fix` explain a fail or warn (and a pass's evidence line); `reason` says
    why a check skipped or errored and how to enable it; `blames` names the check that owns the
    finding when this one skips because of it; `requires` names the missing capability of a skip
    that an option turns into a failure (e.g. "cuda" under --require-gpu).
    """

    status: Status
    subject: str = ""
    expected: str = ""
    observed: str = ""
    fix: str = ""
    reason: str = ""
    rows: tuple[str, ...] = ()
    blames: str | None = None
    requires: str | None = None
    evidence: tuple[Evidence, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))
        object.__setattr__(self, "rows", tuple(str(r) for r in self.rows))

    # -- constructors that read as the rule's outcome
    @classmethod
    def passed(cls, subject: str, expected: Any = "", observed: Any = "") -> Verdict:
        return cls(Status.PASS, str(subject), str(expected), str(observed))

    @classmethod
    def failed(cls, subject: str, expected: Any, observed: Any, fix: str, rows: list[str] | tuple[str, ...] = ()
               ) -> Verdict:
        return cls(Status.FAIL, str(subject), str(expected), str(observed), fix, rows=tuple(rows))

    @classmethod
    def warned(cls, subject: str, expected: Any, observed: Any, fix: str, rows: list[str] | tuple[str, ...] = ()
               ) -> Verdict:
        return cls(Status.WARN, str(subject), str(expected), str(observed), fix, rows=tuple(rows))

    @classmethod
    def skipped(cls, reason: str, blames: str | None = None, subject: str = "", requires: str | None = None
                ) -> Verdict:
        return cls(Status.SKIP, subject, reason=reason, blames=blames, requires=requires)

    @classmethod
    def errored(cls, subject: str, reason: str) -> Verdict:
        return cls(Status.ERROR, subject, reason=reason)

    # -- reading it
    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.WARN)

    @property
    def message(self) -> str:
        """One paragraph: expected vs observed and the fix (a skip or error: its reason), then up to 10 rows."""
        if self.status in (Status.SKIP, Status.ERROR) and self.reason:
            text = f"{self.subject}: {self.reason}" if self.status == Status.ERROR and self.subject else self.reason
        else:
            text = f"{self.subject}: expected {self.expected}, observed {self.observed}"
            if self.fix:
                text += f"; fix: {self.fix}"
        if self.rows:
            shown = self.rows[:MAX_ROWS]
            text += "\n" + "\n".join(f"  - {r}" for r in shown)
            if len(self.rows) > MAX_ROWS:
                text += f"\n  ... and {len(self.rows) - MAX_ROWS} more (full list in the report)"
        return text

    def with_evidence(self, source: str, output: str) -> Verdict:
        return replace(self, evidence=(*self.evidence, Evidence(source, output)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the reports carry (evidence travels separately, once per check)."""
        out: dict[str, Any] = {"status": str(self.status), "subject": self.subject, "expected": self.expected,
                               "observed": self.observed, "fix": self.fix, "rows": list(self.rows)}
        for key in ("reason", "blames", "requires"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        return cls(Status(d.get("status", "fail")), d.get("subject", ""), d.get("expected", ""),
                   d.get("observed", ""), d.get("fix", ""), d.get("reason", ""), tuple(d.get("rows") or ()),
                   d.get("blames"), d.get("requires"))


def worst(verdicts: list[Verdict], subject: str, expected: str = "") -> Verdict:
    """Fold per-object verdicts into one: the first error, else all fails merged, else warns, else pass."""
    error = next((v for v in verdicts if v.status == Status.ERROR), None)
    if error is not None:
        return error
    for status in (Status.FAIL, Status.WARN):
        bad = [v for v in verdicts if v.status == status]
        if len(bad) == 1:
            return bad[0]
        if bad:
            return Verdict(status, subject, expected or bad[0].expected, f"{len(bad)} problems",
                           "; ".join(dict.fromkeys(v.fix for v in bad if v.fix)),
                           rows=tuple(f"{v.subject}: {v.observed}" for v in bad))
    if verdicts and all(v.status == Status.SKIP for v in verdicts):
        return verdicts[0]
    return Verdict.passed(subject, expected, f"{len(verdicts)} checked")
