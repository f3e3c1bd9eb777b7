"""How a check reports: it applies a Verdict (clusterproof.verdict) to the running test.

`apply` is the one exit of a check: a pass or warn returns, a skip skips, a fail raises
CheckFailed (an AssertionError, so pytest reports a failure), an error raises CheckError.
The verdict and the evidence travel to the reports in the test report's user_properties
under the keys below, so they survive pytest-xdist's wire.
"""
from __future__ import annotations

import contextvars
import json
from typing import Any, NoReturn

import pytest

from .verdict import Status, Verdict

_current_item: contextvars.ContextVar[Any] = contextvars.ContextVar("clusterproof_item", default=None)
VERDICT_KEY = "clusterproof.verdict"
EVIDENCE_KEY = "clusterproof.evidence"
EVIDENCE_LIMIT = 20000


class CheckFailed(AssertionError):
    """A check's verdict is FAIL; str() is the one-paragraph explanation."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.message)
        self.verdict = verdict


class CheckError(Exception):
    """A check could not reach a verdict (an API error, a probe that did not run): never a pass."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.message)
        self.verdict = verdict


def set_current_item(item: Any) -> None:
    """Remember the running test item so helpers can attach evidence without `request`."""
    _current_item.set(item)


def _props() -> list | None:
    item = _current_item.get()
    return None if item is None else item.user_properties


def evidence(source: str, output: Any) -> None:
    """Attach evidence (a command or API call and what it returned) to the running check."""
    props = _props()
    if props is None:
        return
    if not isinstance(output, str):
        output = json.dumps(output, indent=1, default=str, sort_keys=True)
    if len(output) > EVIDENCE_LIMIT:
        output = output[:EVIDENCE_LIMIT] + "\n... (cut)"
    props.append((EVIDENCE_KEY, {"source": source, "output": output}))


def record(verdict: Verdict) -> None:
    """Keep a verdict with the running check (for the reports) without acting on it."""
    props = _props()
    if props is not None:
        props.append((VERDICT_KEY, verdict.to_dict()))
    for ev in verdict.evidence:
        evidence(ev.source, ev.output)


def apply(verdict: Verdict) -> Verdict:
    """Act on a rule's verdict: return on pass/warn, skip, or raise CheckFailed/CheckError."""
    __tracebackhide__ = True
    record(verdict)
    if verdict.status == Status.SKIP:
        pytest.skip(verdict.reason or verdict.message)
    if verdict.status == Status.FAIL:
        raise CheckFailed(verdict)
    if verdict.status == Status.ERROR:
        raise CheckError(verdict)
    return verdict


def fail(subject: str, expected: Any, observed: Any, fix: str, rows: list[str] | None = None) -> NoReturn:
    """Fail the running check with expected vs observed and the fix."""
    __tracebackhide__ = True
    apply(Verdict.failed(subject, expected, observed, fix, rows or ()))
    raise AssertionError("unreachable")  # apply raised; this keeps NoReturn honest for type checkers


def require(ok: bool, subject: str, expected: Any, observed: Any, fix: str, rows: list[str] | None = None) -> None:
    """`fail(...)` unless ok."""
    __tracebackhide__ = True
    if not ok:
        fail(subject, expected, observed, fix, rows)


def skip(reason: str, blames: str | None = None) -> NoReturn:
    """Skip the running check; the reason says how to enable it, `blames` the check that owns the finding."""
    __tracebackhide__ = True
    apply(Verdict.skipped(reason, blames=blames))
    raise AssertionError("unreachable")


def check_id(item: Any) -> str | None:
    """The stable check ID of a test item, from @pytest.mark.check("ID")."""
    mark = item.get_closest_marker("check")
    return mark.args[0] if mark and mark.args else None


def must(item: Any) -> str:
    """The check's MUST sentence, from the catalog."""
    from . import catalog

    entry = catalog.CATALOG.get(check_id(item) or "")
    return entry.must if entry else ""
