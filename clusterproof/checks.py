"""What every check reports: an ID, a MUST sentence, expected vs observed, a fix, evidence.

Checks call `require(...)`/`fail(...)` instead of a bare assert, so the failure message has
one shape everywhere and the structured fields reach the reports (via user_properties).
"""
from __future__ import annotations

import contextvars
import json
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import pytest

_current_item: contextvars.ContextVar[Any] = contextvars.ContextVar("clusterproof_item", default=None)
MAX_ROWS = 10


@dataclass
class Finding:
    """One failed expectation on one object."""

    subject: str
    expected: str
    observed: str
    fix: str
    rows: list[str] = field(default_factory=list)

    def message(self) -> str:
        text = f"{self.subject}: expected {self.expected}, observed {self.observed}; fix: {self.fix}"
        if self.rows:
            shown = self.rows[:MAX_ROWS]
            more = len(self.rows) - len(shown)
            text += "\n" + "\n".join(f"  - {r}" for r in shown)
            if more:
                text += f"\n  ... and {more} more (full list in the report)"
        return text


class CheckFailed(AssertionError):
    """A check's verdict is FAIL; str() is the one-paragraph explanation."""

    def __init__(self, finding: Finding):
        super().__init__(finding.message())
        self.finding = finding


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
    if len(output) > 20000:
        output = output[:20000] + "\n... (cut)"
    props.append(("evidence", {"source": source, "output": output}))


def fail(subject: str, expected: Any, observed: Any, fix: str, rows: list[str] | None = None) -> NoReturn:
    """Fail the running check with expected vs observed and the fix."""
    __tracebackhide__ = True
    finding = Finding(str(subject), str(expected), str(observed), fix, list(rows or []))
    props = _props()
    if props is not None:
        props.append(("finding", asdict(finding)))
    raise CheckFailed(finding)


def require(ok: bool, subject: str, expected: Any, observed: Any, fix: str, rows: list[str] | None = None) -> None:
    """`fail(...)` unless ok."""
    __tracebackhide__ = True
    if not ok:
        fail(subject, expected, observed, fix, rows)


def skip(reason: str) -> NoReturn:
    """Skip the running check; the reason should say how to enable it."""
    __tracebackhide__ = True
    pytest.skip(reason)


def check_id(item: Any) -> str | None:
    """The stable check ID of a test item, from @pytest.mark.check("ID")."""
    mark = item.get_closest_marker("check")
    return mark.args[0] if mark and mark.args else None


def must(item: Any) -> str:
    """First line of the check's docstring: the MUST sentence."""
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
