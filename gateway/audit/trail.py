"""AuditTrail: the object the rest of the gateway emits audit events into.

``emit`` only validates, timestamps and appends to a bounded in-memory queue;
the writer (gateway/audit/writer.py) does processors, chain, disk and sinks:
in a separate process by default (``audit.writer = "process"``: a shipper
thread here sends it the queue in batches, gateway/audit/shipper.py), or in
a thread of this process (``"thread"``).  With ``fail_closed`` an unhealthy
trail makes ``emit`` raise :class:`AuditUnavailable` so the caller can refuse
the request instead of serving it unrecorded; otherwise events are dropped,
counted and logged.
"""

from __future__ import annotations

import atexit
import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.settings import AUDIT_WRITERS, AuditSettings, ConfigError

from .chain import load_key
from .event_view import AuditEvent
from .schema import OUTCOMES, Roles, check_action, check_outcome
from .shipper import ProcessWriter
from .sinks import build_sinks, close_sinks
from .writer import LOCK_WAIT_S, LOG_EVERY_S, WAKE_AT, Item, Stats, Writer

log = structlog.get_logger(__name__)


class AuditUnavailable(RuntimeError):
    """The trail cannot take the event (writer failing, queue full, not running)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"audit trail unavailable: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class AuditStats:
    """A snapshot for /metrics and /readyz."""

    healthy: bool
    queue_depth: int
    accepted: int
    written: int
    dropped: int
    rejected: int
    errors: int
    lost: int
    sink_errors: int
    batches: int
    rotations: int
    write_seconds_total: float
    latency_seconds_total: float
    latency_seconds_max: float
    latency_last: float
    last_error: str | None
    seq: int




class AuditTrail:
    """Tamper-evident JSONL audit trail (see docs/audit-events.md).

    Lifecycle: construct, ``start()`` (in the app lifespan; raises ConfigError
    naming ``audit.*`` when the key or path is unusable), ``emit()`` from
    anywhere (any thread, the event loop included), ``close()`` on shutdown.
    """

    def __init__(
        self,
        settings: AuditSettings,
        *,
        replica_id: str | None = None,
        clock: Callable[[], float] = time.time,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        """``lock_wait_s``: how long start() waits for another process to let go of the trail."""
        self.lock_wait_s = lock_wait_s
        self.settings = settings
        self.replica_id = replica_id
        self.fail_closed = settings.fail_closed
        self._clock = clock
        self._maxsize = settings.queue_size
        self._queue: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stats = Stats()
        self._writer: Writer | ProcessWriter | None = None
        self._thread: threading.Thread | None = None
        self._ok = False  # accepting events: started, not closed, writer not failing
        self._state = "new"  # new | running | closing | closed
        self._seen_actions: set[str] = set()
        self._last_reject_log = 0.0
        self._rejects_since_log = 0
        self._listeners: tuple[Callable[[dict[str, Any]], None], ...] = ()
        self._roles = Roles()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the key, open/lock the file, continue the chain, start the writer (process or thread)."""
        if self._state != "new":
            raise RuntimeError(f"AuditTrail.start() called twice (state {self._state})")
        if self.settings.writer not in AUDIT_WRITERS:
            raise ConfigError("audit.writer", f'must be "process" or "thread", got {self.settings.writer!r}')
        key = load_key(self.settings.key_file)
        # What the writer shares with emit(): the queue, its wake-up, the
        # counters and the lock items are taken under.
        shared: dict[str, Any] = dict(
            replica_id=self.replica_id, clock=self._clock, queue=self._queue, wake=self._wake,
            stats=self._stats, lock=self._lock, on_state=self._on_writer_state, lock_wait_s=self.lock_wait_s,
        )  # fmt: skip
        if self.settings.writer == "process":
            # The child opens and locks the file and builds the sinks; its
            # start-up errors raise here as the same ConfigError/OSError.
            pw = ProcessWriter(self.settings, key, **shared)
            pw.open()
            self._run(pw, "audit-shipper")
            return
        sinks = build_sinks(self.settings)
        w = Writer(self.settings, key, sinks=sinks, **shared)
        try:
            w.open()
        except BaseException:
            close_sinks(sinks)
            raise
        self._run(w, "audit-writer")

    def _run(self, w: Writer | ProcessWriter, name: str) -> None:
        self._writer = w
        self._thread = threading.Thread(target=w.run, name=name, daemon=True)
        self._state = "running"
        self._ok = True
        self._thread.start()
        # The writer/shipper is a daemon thread (it must never keep a dying
        # process alive); this drains the queue if the app's shutdown never ran.
        atexit.register(self.close, 2.0)
        log.info("audit_trail_started", path=str(self.settings.path), seq=w.signer.seq, fail_closed=self.fail_closed, writer=self.settings.writer)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop taking events, write every queued one, fsync, stop the thread.

        Returns True when every accepted event reached the file.  Idempotent.
        """
        with self._lock:
            if self._state in ("closing", "closed"):
                return self._state == "closed" and self._stats.lost == 0
            started = self._state == "running"
            self._state = "closing"
            self._ok = False
        if not started:
            self._state = "closed"
            return True
        assert self._writer is not None and self._thread is not None
        atexit.unregister(self.close)
        self._writer.close_deadline = time.monotonic() + timeout
        self._writer.closing = True
        self._wake.set()
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            self._stats.lost += self._writer.pending()
            log.error("audit_close_timeout", pending=self._writer.pending(), timeout=timeout)
            self._state = "closed"
            return False
        self._state = "closed"
        return self._stats.lost == 0

    def __enter__(self) -> AuditTrail:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ emit

    def emit(
        self,
        action: str,
        *,
        outcome: str | None = None,
        request_id: str | None = None,
        client_ip: str | None = None,
        user: str | None = None,
        email: str | None = None,
        groups: Iterable[str] | None = None,
        auth_method: str | None = None,
        method: str | None = None,
        path: str | None = None,
        tool: str | None = None,
        status: int | None = None,
        bytes: int | None = None,
        duration_ms: float | None = None,
        decision: str | None = None,
        rule_id: str | None = None,
        policy_version: str | None = None,
        user_agent: str | None = None,
        reason: str | None = None,
        session_id: str | None = None,
        details: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """Queue one event; never blocks on disk.

        The keyword parameters are the conventions' flat field set, spelled
        out (rather than ``**fields``) because binding them costs less than
        building and unpacking a dict on every request.  Anything else lands
        under ``gateway.details``.  Do not mutate ``details`` after the call:
        the writer thread reads it later.

        Raises ValueError for a malformed action/outcome (a programming error),
        AuditUnavailable when the trail cannot take it and fail_closed is set.
        """
        if action not in self._seen_actions:
            check_action(action)
            self._seen_actions.add(action)
        if outcome is not None and outcome not in OUTCOMES:
            check_outcome(outcome)
        roles = groups
        if groups is not None:
            # A sorted tuple from a cache, rather than the caller's set: a
            # queued item holding only atomic values is untracked by the
            # cyclic GC at its first collection instead of being promoted and
            # walked by every full collection while it waits for the writer.
            try:
                roles = self._roles[groups]
            except TypeError:  # unhashable (a list): the writer sorts it
                pass
        item = (
            self._clock(), action, outcome, request_id, client_ip, user, email, roles, auth_method, method,
            path, tool, status, bytes, duration_ms, decision, rule_id, policy_version, user_agent, reason,
            session_id, details, extra or None,
        )  # fmt: skip
        q = self._queue
        # No lock on this path: deque.append is atomic, and close() and a
        # failing writer clear ``_ok`` before the writer can stop taking
        # items, so an item appended while ``_ok`` still reads true
        # afterwards is one the writer will take.  Otherwise _retract()
        # decides, under the lock the writer takes items with.
        if self._ok and len(q) < self._maxsize:
            q.append(item)
            if self._ok or not self._retract(item):
                # The writer wakes by itself every BATCH_DELAY_S; waking it
                # per event would hand it the GIL on every request (each
                # hand-off costs the request path far more than the event).
                if len(q) == WAKE_AT:
                    self._wake.set()
                if self._listeners:
                    self._notify(item, groups)
                return
        self._refuse(action)

    def _retract(self, item: Item) -> bool:
        """Take back an item appended while the trail stopped accepting; False if the writer already has it."""
        q = self._queue
        with self._lock:
            # The writer takes items only under this lock and emit() only
            # appends, so indices below len(q) stay put while we look (from
            # the right: the item was appended moments ago).
            for i in range(len(q) - 1, -1, -1):
                if q[i] is item:
                    del q[i]
                    return True
        return False

    # ------------------------------------------------------------ listeners

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener(event)`` for every accepted event (live feed, alerts, metrics).

        ``event`` is a read-only mapping (:class:`AuditEvent`) of the emit
        fields that were set, plus ``action``, ``outcome`` and ``ts``; call
        ``dict(event)`` to keep a copy.  Listeners run on the emitting
        thread and must be quick and never raise (failures are logged and
        swallowed).  Returns a function that unsubscribes.
        """
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    def _notify(self, item: Item, groups: Any) -> None:
        event = AuditEvent(item, groups)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener never breaks auditing
                log.exception("audit_listener_failed", listener=getattr(listener, "__qualname__", repr(listener)))

    def _refuse(self, action: str) -> None:
        reason = self.unhealthy_reason or "unavailable"
        s = self._stats
        with self._lock:
            if self.fail_closed:
                s.rejected += 1
            else:
                s.dropped += 1
        # One log line per second at most: a failing disk under load must not
        # turn into a second outage through the log pipeline.
        self._rejects_since_log += 1
        now = time.monotonic()
        if now - self._last_reject_log >= LOG_EVERY_S:
            self._last_reject_log = now
            n, self._rejects_since_log = self._rejects_since_log, 0
            if self.fail_closed:
                log.error("audit_event_rejected", action=action, reason=reason, rejected_since_last_log=n, rejected_total=s.rejected)
            else:
                log.error("audit_event_dropped", action=action, reason=reason, dropped_since_last_log=n, dropped_total=s.dropped)
        if self.fail_closed:
            raise AuditUnavailable(reason)

    def _on_writer_state(self, error: str | None) -> None:
        with self._lock:
            self._ok = error is None and self._state == "running"

    # ------------------------------------------------------------ health and metrics

    @property
    def healthy(self) -> bool:
        """True while events are being accepted and written (readiness).

        Checked on every request, so it reads one flag: the writer clears
        ``_ok`` itself on an I/O error and when it stops for any reason.
        """
        return self._ok and len(self._queue) < self._maxsize

    @property
    def unhealthy_reason(self) -> str | None:
        if self._state == "new":
            return "not started"
        if self._state in ("closing", "closed"):
            return "closed"
        w = self._writer
        if w is not None and w.error is not None:
            return w.error
        if self._thread is not None and not self._thread.is_alive():
            return "writer thread stopped"
        if len(self._queue) >= self._maxsize:
            return f"queue full ({self._maxsize} events waiting)"
        return None

    @property
    def queue_depth(self) -> int:
        w = self._writer
        return len(self._queue) + (w.waiting() if w is not None else 0)

    @property
    def written(self) -> int:
        return self._stats.written

    @property
    def dropped(self) -> int:
        return self._stats.dropped

    @property
    def accepted(self) -> int:
        """Events queued by emit(): those the writer has taken plus those still waiting."""
        with self._lock:
            return self._stats.taken + len(self._queue)

    @property
    def path(self) -> Path:
        return Path(self.settings.path)

    def sync(self, timeout: float = 2.0) -> bool:
        """Block until every event emitted before this call is on disk.

        For readers in this process (a search, the viewer) that must see
        their own writes despite the writer's batching.  False on timeout or
        when the trail is not running.
        """
        target = self.accepted
        if self._thread is None:
            return False
        self._wake.set()
        deadline = time.monotonic() + timeout
        s = self._stats
        while s.written + s.errors + s.lost < target:
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.002)
        return True

    @property
    def head(self) -> tuple[int, str]:
        """(seq, chain) of the newest signed record: publish it to anchor the chain."""
        w = self._writer
        if w is None:
            return 0, "0" * 64
        return w.signer.seq, w.signer.chain.decode("ascii")

    def stats(self) -> AuditStats:
        s = self._stats
        return AuditStats(
            healthy=self.healthy,
            queue_depth=self.queue_depth,
            accepted=self.accepted,
            written=s.written,
            dropped=s.dropped,
            rejected=s.rejected,
            errors=s.errors,
            lost=s.lost,
            sink_errors=s.sink_errors,
            batches=s.batches,
            rotations=s.rotations,
            write_seconds_total=s.write_seconds_total,
            latency_seconds_total=s.latency_seconds_total,
            latency_seconds_max=s.latency_seconds_max,
            latency_last=s.latency_last,
            last_error=self._writer.error if self._writer else None,
            seq=self.head[0],
        )
