"""The chain verification behind the viewer's integrity badge, cached and off the page's thread.

``verify_paths`` reads every byte of the trail (about 2 s per million
records), so a viewer cannot run it on every rerun.  The monitor remembers
the result together with the files' (name, size, mtime) signature, verifies
again in a background thread when the signature changed (at most every
``min_interval_s`` unless forced), and lets the caller wait a little for a
fresh result.  A file edited in place changes its mtime, so an edit is
picked up on the next check even when its size stays the same (and its
ctime when someone puts the mtime back).  Timestamps are only as fine as
the kernel's clock tick, so results older than ``max_age_s`` are verified
again even when nothing seems to have changed.

Each chain (the audit folder's own files, and each replica's or worker's
sub-folder) is verified on its own; the status is the worst of them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import structlog

from .index import chain_folders
from .verify import TORN_TAIL, Problem, VerifyResult, verify_paths

log = structlog.get_logger(__name__)

Signature = tuple[tuple[str, int, int, int, int], ...]


@dataclass(frozen=True)
class ChainResult:
    name: str  # "" for the audit folder itself, else the sub-folder (replica id)
    result: VerifyResult


@dataclass(frozen=True)
class IntegrityStatus:
    state: str  # ok | broken | incomplete | unavailable | pending
    chains: tuple[ChainResult, ...]
    checked_at: float | None  # unix time the shown result was computed
    current: bool  # the shown result covers the files as they are now
    running: bool
    error: str | None = None
    warnings: tuple[Problem, ...] = field(default=())

    @property
    def records(self) -> int:
        return sum(c.result.records for c in self.chains)

    @property
    def files(self) -> list[Path]:
        return [p for c in self.chains for p in c.result.files]

    @property
    def problem(self) -> Problem | None:
        """The first problem, tampering before a torn tail."""
        bad = [c.result.problem for c in self.chains if c.result.problem is not None]
        bad.sort(key=lambda p: p.kind == TORN_TAIL)
        return bad[0] if bad else None

    @property
    def headline(self) -> str:
        p = self.problem
        if self.state == "ok":
            n = len(self.files)
            return f"Chain intact: {self.records:,} records in {n} file{'s' if n != 1 else ''}"
        if self.state in ("broken", "incomplete") and p is not None:
            where = f"{p.file.name}:{p.line}" if p.line else p.file.name
            label = "Chain broken" if self.state == "broken" else "Trail incomplete"
            return f"{label} at {where} ({p.kind}): {p.message}"
        if self.state == "unavailable":
            return f"Integrity cannot be checked: {self.error}"
        return "Verifying the chain..."


def signature(root: Path) -> Signature:
    out = []
    for _, files in chain_folders(root):
        for p in files:
            try:
                st = p.stat()
            except OSError:
                continue
            # ctime too: whoever edits a file and puts its mtime back still moves its ctime.
            out.append((str(p), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


class IntegrityMonitor:
    def __init__(self, audit_dir: Path, key: Callable[[], bytes], *, min_interval_s: float = 5.0, max_age_s: float = 300.0) -> None:
        self.audit_dir = Path(audit_dir)
        self._key = key
        self.min_interval_s = min_interval_s
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._chains: tuple[ChainResult, ...] | None = None
        self._error: str | None = None
        self._sig: Signature | None = None
        self._checked_at: float | None = None
        self._started_at = 0.0
        self._duration = 0.0
        self._thread: threading.Thread | None = None

    def status(self, *, force: bool = False, wait: float = 0.0) -> IntegrityStatus:
        """The latest result; starts a check when the files changed (or ``force``), waits up to ``wait`` s for it."""
        sig = signature(self.audit_dir)
        with self._lock:
            stale = sig != self._sig or (self._checked_at is not None and time.time() - self._checked_at >= self.max_age_s)
            # A big trail is re-verified less often: at most a third of the time goes to it.
            interval = max(self.min_interval_s, 3 * self._duration)
            due = force or self._checked_at is None or time.monotonic() - self._started_at >= interval
            if (stale or force) and due and self._thread is None:
                self._start(sig)
            if wait > 0 and self._thread is not None:
                self._done.wait_for(lambda: self._thread is None, timeout=wait)
            return self._snapshot(sig)

    def _start(self, sig: Signature) -> None:
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(sig,), name="audit-verify", daemon=True)
        self._thread.start()

    def _run(self, sig: Signature) -> None:
        chains: tuple[ChainResult, ...] | None = None
        error: str | None = None
        try:
            key = self._key()
            chains = tuple(ChainResult(name, self._verify(files, key)) for name, files in chain_folders(self.audit_dir))
        except Exception as exc:  # noqa: BLE001 - shown on the badge, never a crash
            error = str(exc) or type(exc).__name__
            log.warning("audit_verify_failed", error=error)
        with self._lock:
            self._chains, self._error = chains, error
            self._sig = sig
            self._checked_at = time.time()
            self._duration = time.monotonic() - self._started_at
            self._thread = None
            self._done.notify_all()

    @staticmethod
    def _verify(files: list[Path], key: bytes) -> VerifyResult:
        folder = files[0].parent
        result = VerifyResult()
        for attempt in range(3):
            try:
                result = verify_paths([folder], key)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                time.sleep(0.05)  # a file was rotated away while listing
                continue
            p = result.problem
            if p is not None and p.kind == TORN_TAIL and result.files and p.file == result.files[-1] and attempt < 2:
                # The writer may be half-way through appending a batch; a
                # real torn tail is still there a moment later.
                time.sleep(0.2)
                continue
            break
        return result

    def _snapshot(self, sig: Signature) -> IntegrityStatus:
        chains, err = self._chains, self._error
        if err is not None:
            state = "unavailable"
        elif chains is None:
            state = "pending"
        elif any(c.result.tampered for c in chains):
            state = "broken"
        elif any(not c.result.ok for c in chains):
            state = "incomplete"
        else:
            state = "ok"
        return IntegrityStatus(
            state=state,
            chains=chains or (),
            checked_at=self._checked_at,
            current=sig == self._sig,
            running=self._thread is not None,
            error=err,
            warnings=tuple(w for c in chains or () for w in c.result.warnings),
        )
