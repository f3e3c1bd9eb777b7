"""The project's one polling helper."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Never(Exception):
    """Raised by a condition when it sees a state that can never become good."""


class WaitTimeout(AssertionError):
    """A wait ran out of time; the message says what was awaited and what was last seen."""


def wait_for(
    condition: Callable[[], tuple[bool, Any]],
    what: str,
    timeout: float,
    interval: float = 1.0,
    describe: Callable[[Any], str] = str,
) -> Any:
    """Poll `condition` until it returns (True, value); return value.

    `condition` returns (done, observed). It may raise `Never("why")` to stop early.
    API errors are kept as the last observation and polling goes on until the deadline.
    """
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    last: Any = "nothing observed yet"
    last_error: BaseException | None = None
    while True:
        try:
            done, observed = condition()
            last, last_error = observed, None
            if done:
                return observed
        except Never as exc:
            raise WaitTimeout(f"gave up waiting for {what}: {exc}") from None
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            seen = f"last error: {_short(last_error)}" if last_error else f"last observed: {describe(last)}"
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; {seen}")
        time.sleep(interval)


def _short(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    status = getattr(exc, "status", None)
    if status:
        return f"{type(exc).__name__} {status} {reason}"
    return f"{type(exc).__name__}: {exc}"
