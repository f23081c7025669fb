"""Is the shared state backend usable right now?  One flag, and its transitions.

Every Redis call that fails raises :class:`StateUnavailable` (the guard
middleware turns it into a branded 503) and asks the monitor to look at once.
Only the monitor's own ping flips the flag: down when the ping fails, up when
it answers again.  While down, calls fail at once instead of each waiting for
a timeout, so an outage cannot pile up requests; the monitor keeps probing and
the service resumes by itself.  Each transition is logged and audited once
(``state.unavailable`` / ``state.recovered``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import structlog

log = structlog.get_logger(__name__)

Emit = Callable[..., None]


class StateUnavailable(RuntimeError):
    """The shared state cannot answer; security decisions that need it must refuse."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"shared state unavailable: {reason}")
        self.reason = reason


def describe(exc: BaseException) -> str:
    """A short, secret-free reason: the error class and its first line, no paths or URLs."""
    text = " ".join(str(exc).split())[:120]
    # redis-py messages name host:port at most; never a password.
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BackendHealth:
    def __init__(self, *, emit: Emit, backend: str, target: str, replica: str | None) -> None:
        self.emit = emit
        self.backend = backend
        self.target = target
        self.replica = replica
        self.available = True  # optimistic until the first check: calls simply try
        self.reason: str | None = None
        self.since = time.time()
        self.checked_at = 0.0
        self.transitions = 0
        self._suspect = asyncio.Event()  # binds to a loop only when first awaited

    # ------------------------------------------------------------ calls

    def refuse(self) -> StateUnavailable:
        return StateUnavailable(self.reason or "unavailable")

    def failed(self, exc: BaseException, *, op: str) -> StateUnavailable:
        """A call failed: the caller raises what this returns; the monitor re-checks now."""
        log.warning("state_call_failed", op=op, error=describe(exc), backend=self.backend)
        self.suspect()
        return StateUnavailable(describe(exc))

    def suspect(self) -> None:
        self._suspect.set()

    async def wait_suspect(self, timeout: float) -> None:  # noqa: ASYNC109 - a bounded wait is the point
        try:
            await asyncio.wait_for(self._suspect.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self._suspect.clear()

    # ------------------------------------------------------------ transitions

    def mark_down(self, reason: str) -> None:
        self.checked_at = time.time()
        if not self.available:
            self.reason = reason
            return
        self.available = False
        self.reason = reason
        self.since = time.time()
        self.transitions += 1
        log.error("state.unavailable", backend=self.backend, target=self.target, reason=reason, replica=self.replica)
        self.emit(
            "state.unavailable",
            outcome="failure",
            reason=reason[:200],
            details=self._details(),
        )

    def mark_up(self, **details: Any) -> None:
        self.checked_at = time.time()
        if self.available:
            return
        down_for = round(time.time() - self.since, 3)
        self.available = True
        self.reason = None
        self.since = time.time()
        self.transitions += 1
        log.warning("state.recovered", backend=self.backend, target=self.target, downtime_s=down_for, replica=self.replica, **details)
        self.emit(
            "state.recovered",
            outcome="success",
            details={**self._details(), "downtime_s": down_for, **details},
        )

    def _details(self) -> dict[str, Any]:
        d: dict[str, Any] = {"backend": self.backend, "target": self.target}
        if self.replica:
            d["replica"] = self.replica
        return d

