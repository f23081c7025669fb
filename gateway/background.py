"""Periodic work run by the gateway's lifespan.

* **Session expiry sweep** (``platform.session_sweep_interval_s``): forget
  sessions past their idle or absolute deadline, so the store (and the
  ``active sessions`` metric) holds only live ones.  Expired sessions are
  refused on use anyway; the sweep is housekeeping.
* **Audit integrity self-check** (``platform.integrity_check_interval_s``;
  0 turns it off): verify the whole hash chain on disk, current and rotated
  files, and raise a critical alert (and an ``audit.integrity_failed`` audit
  event) when a record was edited, removed or reordered.  Audit rotation is
  the audit writer's own job (by size and by day) and needs no task here.

Request-triggered work (a test alert, an export) uses Starlette's
``BackgroundTask`` in the route that triggers it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import structlog

from gateway.audit import VerifyResult, load_key, verify_paths
from gateway.audit.files import rotated_siblings
from gateway.features import BaseFeature, ReadinessCheck
from gateway.settings import AuditSettings

if TYPE_CHECKING:
    from gateway.alerts import AlertsFeature
    from gateway.services import Services

log = structlog.get_logger(__name__)


def trail_files(path: Path) -> list[Path]:
    """Every file of the audit trail at ``path``: the rotated ones, then the current one."""
    files = rotated_siblings(path)
    if path.is_file():
        files.append(path)
    return files


def verify_trail(settings: AuditSettings) -> VerifyResult:
    """Verify the configured trail as one chain (blocking: run it in a thread)."""
    files = trail_files(settings.path)
    if not files:
        return VerifyResult()
    return verify_paths(files, load_key(settings.key_file))


class BackgroundFeature(BaseFeature):
    name = "background"

    def __init__(self, services: "Services", alerts: "AlertsFeature | None" = None) -> None:
        self.services = services
        self.alerts = alerts
        p = services.settings.platform
        self.sweep_interval = p.session_sweep_interval_s
        self.integrity_interval = p.integrity_check_interval_s
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.swept = 0
        self.integrity: dict[str, Any] = {"checked_at": None, "ok": None, "records": 0, "problem": None}

    # ------------------------------------------------------------ the jobs

    async def sweep_sessions(self) -> None:
        n = await self.services.identity.sessions.sweep()
        self.swept += n
        if n:
            log.info("sessions_swept", forgotten=n)

    async def check_integrity(self) -> VerifyResult:
        result = await asyncio.to_thread(verify_trail, self.services.audit.settings)
        problem = str(result.problem) if result.problem is not None else None
        # A torn last line is what a concurrent write (or a crash) leaves; only
        # evidence of editing counts as a failure.
        ok = not result.tampered
        was_ok = self.integrity["ok"]
        self.integrity = {"checked_at": time.time(), "ok": ok, "records": result.records, "problem": problem if not ok else None}
        if ok:
            if was_ok is False:
                log.info("audit_integrity_restored", records=result.records)
            return result
        assert result.problem is not None
        log.error("audit_integrity_failed", problem=problem, records=result.records)
        self.services.emit(
            "audit.integrity_failed", outcome="failure", reason=problem[:500] if problem else None,
            details={"kind": result.problem.kind, "file": Path(result.problem.file).name, "line": result.problem.line},
        )  # fmt: skip
        if self.alerts is not None:
            from gateway.alerts import Alert

            await self.alerts.raise_alert(Alert(
                "audit_integrity", "critical",
                f"The audit trail failed its integrity check: {result.problem.kind} at {Path(result.problem.file).name}:{result.problem.line}",
                {"kind": result.problem.kind, "file": Path(result.problem.file).name, "line": result.problem.line,
                 "message": result.problem.message, "records_verified": result.records},
                key=f"integrity:{result.problem.kind}:{Path(result.problem.file).name}:{result.problem.line}",
            ))  # fmt: skip
        return result

    # ------------------------------------------------------------ scheduling

    async def _every(self, interval: float, job: Callable[[], Awaitable[Any]], name: str) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
                return
            try:
                await job()
            except Exception:  # noqa: BLE001 - the schedule outlives one failed run
                log.exception("background_job_failed", job=name)

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._every(self.sweep_interval, self.sweep_sessions, "session-sweep"), name="session-sweep"))
        if self.integrity_interval > 0:
            self._tasks.append(asyncio.create_task(self._every(self.integrity_interval, self.check_integrity, "audit-integrity"), name="audit-integrity"))

    async def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks.clear()

    def readiness(self) -> dict[str, ReadinessCheck]:
        def check() -> tuple[bool, dict[str, object]]:
            # Reported, not failed: a tampered trail is for people to look at,
            # not a reason to take the gateway out of the load balancer.
            i = self.integrity  # no problem text here: /readyz is public
            return True, {"audit_integrity_ok": i["ok"], "audit_integrity_checked_at": i["checked_at"], "sessions_swept": self.swept}

        return {"background": check}
