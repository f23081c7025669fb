"""The gateway side of ``audit.writer = "process"``: ship queued events to the writer process.

:class:`ProcessWriter` stands where the in-process :class:`~gateway.audit.writer.Writer`
stands for :class:`~gateway.audit.trail.AuditTrail` (same attributes: ``run``,
``open``, ``error``, ``signer``, ``closing``, ``close_deadline``, ``pending``,
``waiting``) so the trail's API and semantics do not change.  Its thread
takes batches from the trail's queue on the same rules as the writer thread
(every BATCH_DELAY_S, or when emit() sees WAKE_AT events waiting), marshals
them and writes them to the child (gateway/audit/writer_process.py), which
does the ECS mapping, redaction, chain and disk on the other core.  A second,
mostly idle thread reads the child's reports (counters, chain head, error
state, log lines) and keeps the trail's Stats current.

Failure model, as with the writer thread: an I/O error in the child makes
the trail unhealthy at once (fail_closed: emit raises AuditUnavailable) and
the child retries by itself.  If the child dies, the trail is unhealthy, the
death is logged, and the child is started again after RETRY_INTERVAL_S
(backing off to RESTART_MAX_S); the new child continues the chain from the
file as any restart does.  Events shipped to a dead child and not reported
written count as ``lost`` (some may have reached the file just before it
died; the count errs on the side of reporting).  Events still queued here
are not lost: they go to the next child.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import structlog

import gateway
from gateway.settings import AuditSettings, ConfigError

from . import wire
from .chain import GENESIS
from .redact import Redactor
from .schema import _OPTS, ToECS, _scrub, dumps_record, orjson_default
from .writer import BATCH_DELAY_S, BATCH_MAX, RETRY_INTERVAL_S, WAKE_AT, Item, Stats
from .writer_process import REPORTED

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 30.0
RESTART_MAX_S = 5.0
PIPE_BYTES = 1 << 20  # room for a few batches in the pipe, so shipping rarely waits for the child
SHIP_MAX = 1024  # events per frame: the writer unpacks a frame at once, and small ones stay in its cache

# The child: a fresh interpreter importing this very gateway package (-P: no
# current directory on sys.path).  Descriptor numbers are not secrets.
_BOOT = "import sys; sys.path[:0] = [sys.argv[1]]; from gateway.audit.writer_process import main; sys.exit(main(sys.argv[2:]))"
_ROOT = str(Path(gateway.__file__).resolve().parent.parent)

_MAX_FIELDS = ("latency_seconds_max",)
_LAST_FIELDS = ("latency_last",)
_LOG_METHODS = frozenset({"debug", "info", "warning", "error", "critical"})


class Head:
    """(seq, chain) of the newest record the child reported; replaced whole, so readers never see a mix."""

    __slots__ = ("seq", "chain")

    def __init__(self, seq: int, chain: bytes) -> None:
        self.seq = seq
        self.chain = chain


class _Child:
    """One writer process and its pipes."""

    def __init__(self, gen: int, proc: subprocess.Popen[bytes], cmd_fd: int, rep_fd: int) -> None:
        self.gen = gen
        self.proc = proc
        self.cmd_fd = cmd_fd
        self.reader = wire.FrameReader(rep_fd)
        self.rep_fd = rep_fd
        self.report: dict[str, Any] = dict.fromkeys(REPORTED, 0)
        self.shipped = 0  # events sent to it
        self.final = False  # it sent its FINAL report
        self.gone = threading.Event()  # its report pipe reached EOF

    def unconfirmed(self) -> int:
        r = self.report
        return max(0, self.shipped - r["written"] - r["lost"])

    def describe_exit(self) -> str:
        try:
            rc = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return "closed its pipe"
        return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"


class ProcessWriter:
    def __init__(
        self,
        settings: AuditSettings,
        key: bytes,
        *,
        replica_id: str | None,
        clock: Callable[[], float],
        queue: Any,
        wake: threading.Event,
        stats: Stats,
        lock: threading.Lock,
        on_state: Callable[[str | None], None],
        lock_wait_s: float,
    ) -> None:
        self.settings = settings
        self.lock_wait_s = lock_wait_s
        self.path = Path(settings.path)
        self.key = key
        self.replica_id = replica_id
        self.clock = clock
        self.real_clock = clock is time.time
        self.queue = queue
        self.wake = wake
        self.stats = stats
        self.lock = lock
        self.on_state = on_state
        self.cap = max(2 * BATCH_MAX, settings.queue_size)  # events shipped and not yet reported written
        self.signer = Head(0, GENESIS)
        self.error: str | None = None
        self.closing = False
        self.close_deadline = 0.0
        self.child: _Child | None = None
        self.gen = 0
        self.plock = threading.Lock()  # the child's state and the counters below
        self.base: dict[str, Any] = dict.fromkeys(REPORTED, 0)  # counters of children that ended
        self.parent_errors = 0  # events whose record failed to build here (prebuilt path)
        self.parent_lost = 0  # shipped to a child that died, never reported written
        self.child_error: str | None = None
        self.proc_error: str | None = None
        self.blocked = False  # the shipper waits for reports (too much in flight)
        self.next_start = 0.0
        self.backoff = RETRY_INTERVAL_S
        # Builds records here for events marshal cannot carry (wire.encode_batch);
        # used by the shipper thread only.
        self.builder = ToECS(replica_id, redactor=Redactor())

    # ------------------------------------------------------------ start-up

    def open(self) -> None:
        """Start the child; its start-up errors raise here as they would from Writer.open()."""
        self._start_child(max(START_TIMEOUT_S, self.lock_wait_s + 10.0))

    def _spawn(self) -> _Child:
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            try:
                fcntl.fcntl(cmd_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            except (OSError, AttributeError):
                pass  # the default 64 KiB only means more, smaller writes
            proc = subprocess.Popen(
                [sys.executable, "-P", "-c", _BOOT, _ROOT, str(cmd_r), str(rep_w)],
                pass_fds=(cmd_r, rep_w),
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C to the gateway's process group
                # must not reach it before the gateway has shipped everything.
                start_new_session=True,
            )
        except BaseException:
            for fd in (cmd_r, cmd_w, rep_r, rep_w):
                os.close(fd)
            raise
        os.close(cmd_r)
        os.close(rep_w)
        self.gen += 1
        return _Child(self.gen, proc, cmd_w, rep_r)

    def _start_child(self, timeout: float = START_TIMEOUT_S, *, restart: bool = False) -> None:
        t0 = time.monotonic()
        try:
            child = self._spawn()
        except OSError as exc:
            raise ConfigError("audit.writer", f"cannot start the audit writer process: {exc.strerror or exc}") from None
        init = {"settings": self.settings, "key": self.key, "replica_id": self.replica_id, "real_clock": self.real_clock, "clock": float(self.clock()),
                "lock_wait_s": self.lock_wait_s}  # fmt: skip
        try:
            try:
                wire.send_frame(child.cmd_fd, wire.INIT, pickle.dumps(init, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                pass  # it is gone already; _await_ready reports how it ended
            del init
            ready = self._await_ready(child, time.monotonic() + timeout)
        except BaseException:
            self._discard(child)
            raise
        if restart:  # logged before the trail turns healthy again
            log.warning("audit_writer_process_restarted", pid=child.proc.pid, seq=ready["seq"], path=str(self.path))
        with self.plock:
            self.child = child
            child.report = ready
            self.signer = Head(ready["seq"], ready["chain"].encode("ascii"))
            self.child_error = ready["error"]
            self.proc_error = None
            self._publish()
            self._state_changed()
        threading.Thread(target=self._read_reports, args=(child,), name="audit-reports", daemon=True).start()
        log.debug("audit_writer_process_started", pid=child.proc.pid, seq=ready["seq"], startup_s=round(time.monotonic() - t0, 3))

    def _await_ready(self, child: _Child, deadline: float) -> dict[str, Any]:
        def idle() -> None:
            if time.monotonic() >= deadline:
                raise TimeoutError

        reader = wire.FrameReader(child.rep_fd, idle=idle, idle_s=0.05)
        try:
            while True:
                frame = reader.read()
                if frame is None:
                    raise ConfigError("audit.writer", f"the audit writer process ended during start-up ({child.describe_exit()}; see its error output)")
                tag, payload = frame
                if tag == wire.READY:
                    child.reader.buf = reader.buf  # frames read ahead belong to the report reader
                    return orjson.loads(payload)  # type: ignore[no-any-return]
                if tag == wire.FAILED:
                    raise wire.decode_error(payload)
                if tag == wire.LOG:
                    _relog(payload)
        except TimeoutError:
            raise ConfigError("audit.writer", f"the audit writer process did not start in time ({child.describe_exit()})") from None

    def _discard(self, child: _Child) -> None:
        """Forget a child that failed to start (it holds nothing we need)."""
        for fd in (child.cmd_fd, child.rep_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            child.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()

    # ------------------------------------------------------------ reports

    def _read_reports(self, child: _Child) -> None:
        try:
            while True:
                frame = child.reader.read()
                if frame is None:
                    break
                tag, payload = frame
                if tag == wire.REPORT or tag == wire.FINAL:
                    self._apply(child, orjson.loads(payload), final=tag == wire.FINAL)
                elif tag == wire.LOG:
                    _relog(payload)
        except Exception:  # noqa: BLE001 - a garbled pipe is a dead child
            log.exception("audit_writer_process_report_failed")
        finally:
            os.close(child.rep_fd)
            self._child_gone(child)

    def _apply(self, child: _Child, rep: dict[str, Any], *, final: bool = False) -> None:
        with self.plock:
            if child is not self.child:
                return
            child.report = rep
            child.final = child.final or final
            self.signer = Head(rep["seq"], rep["chain"].encode("ascii"))
            self._publish()
            if rep["error"] != self.child_error:
                self.child_error = rep["error"]
                self._state_changed()
            if self.blocked:
                self.blocked = False
                self.wake.set()

    def _child_gone(self, child: _Child) -> None:
        how = child.describe_exit()  # also reaps it
        with self.plock:
            child.gone.set()
            if child is not self.child:
                return
            lost = child.unconfirmed()
            self._fold(child)
            self.child = None
            if child.final and self.closing:
                return
            self.proc_error = f"the audit writer process ended ({how}); restarting it"
            self.child_error = None
            self._state_changed()
            self.next_start = time.monotonic() + self.backoff
            self.wake.set()
        log.error("audit_writer_process_died", pid=child.proc.pid, how=how, lost=lost, seq=self.signer.seq, path=str(self.path))

    def _fold(self, child: _Child) -> None:
        """Add an ended child's counters to the base (plock held)."""
        r, b = child.report, self.base
        for k in REPORTED:
            if k in _MAX_FIELDS:
                b[k] = max(b[k], r[k])
            elif k in _LAST_FIELDS:
                if r["batches"]:
                    b[k] = r[k]
            else:
                b[k] += r[k]
        self.parent_lost += child.unconfirmed()
        child.report = dict.fromkeys(REPORTED, 0)
        child.shipped = 0
        self._publish()

    def _publish(self) -> None:
        """The trail's counters = ended children + the current child + this side's own (plock held)."""
        s, b = self.stats, self.base
        c = self.child.report if self.child is not None else dict.fromkeys(REPORTED, 0)
        s.written = b["written"] + c["written"]
        s.records_written = b["records_written"] + c["records_written"]
        s.errors = b["errors"] + c["errors"] + self.parent_errors
        s.lost = b["lost"] + c["lost"] + self.parent_lost
        s.sink_errors = b["sink_errors"] + c["sink_errors"]
        s.batches = b["batches"] + c["batches"]
        s.rotations = b["rotations"] + c["rotations"]
        s.write_seconds_total = b["write_seconds_total"] + c["write_seconds_total"]
        s.latency_seconds_total = b["latency_seconds_total"] + c["latency_seconds_total"]
        s.latency_seconds_max = max(b["latency_seconds_max"], c["latency_seconds_max"])
        s.latency_last = c["latency_last"] if c["batches"] else b["latency_last"]

    def _state_changed(self) -> None:
        """Tell the trail (plock held): healthy exactly while a child runs without an error."""
        error = self.proc_error or self.child_error
        if self.child is None and error is None:
            error = "the audit writer process is not running"
        if error != self.error:
            self.error = error
            self.on_state(error)

    # ------------------------------------------------------------ the shipper loop

    def in_flight(self) -> int:
        c = self.child
        return c.unconfirmed() if c is not None else 0

    def waiting(self) -> int:
        """Events shipped to the child and not yet reported written."""
        return self.in_flight()

    def pending(self) -> int:
        return len(self.queue) + self.in_flight()

    def _build(self, item: Item) -> tuple[str, tuple[tuple[str, bytes], ...]]:
        """An event marshal cannot carry: its record, built here by the same builder and redactor."""
        return record_parts(next(self.builder.records((item,), self._build_failed)))

    def _build_failed(self, item: Item, exc: Exception) -> None:
        with self.plock:
            self.parent_errors += 1
            self._publish()
        log.error("audit_record_failed", action=item[1] if len(item) > 1 else None, error=repr(exc))

    def run(self) -> None:
        q = self.queue
        # Only this thread writes to a child's command pipe, so only this
        # thread closes it (a descriptor closed under a writer could be
        # reused by the next child's pipe).
        ours: _Child | None = self.child
        try:
            while True:
                child = self.child
                if ours is not None and ours is not child:
                    _close_fd(ours.cmd_fd)
                    ours = None
                if child is None:
                    if not self._restart():
                        break
                    ours = self.child
                    continue
                n = len(q)
                room = self.cap - child.unconfirmed()
                if n and room > 0:
                    with self.lock:  # emit() retracts items under it (see AuditTrail._retract)
                        batch = [q.popleft() for _ in range(min(n, SHIP_MAX, room))]
                        self.stats.taken += len(batch)
                    payload = wire.encode_batch(batch, float(self.clock()), self._build)
                    with self.plock:
                        alive = child is self.child
                        if alive:
                            child.shipped += len(batch)
                    if alive:
                        try:
                            wire.send_frame(child.cmd_fd, wire.BATCH, payload)
                        except OSError:
                            # The child died before it read the whole frame, so
                            # none of the batch was written: take it back from
                            # the lost count its death added up.
                            alive = False
                            child.gone.wait(5.0)
                            with self.plock:
                                if child is self.child:
                                    child.shipped -= len(batch)
                                else:
                                    self.parent_lost -= len(batch)
                                    self._publish()
                    if not alive:
                        # The next child writes the batch, in its place at the front.
                        with self.lock:
                            q.extendleft(reversed(batch))
                            self.stats.taken -= len(batch)
                        continue
                    # Shipped.  Under a steady stream the queue is never empty:
                    # shipping again at once would ship one or two events a
                    # time, each costing the request path a GIL hand-off, so
                    # this goes on to collect below, as the writer thread does.
                if self.closing and not q:
                    self._close_child(child)
                    break
                self.wake.clear()
                if n and room <= 0:
                    with self.plock:
                        self.blocked = self.child is child and child.unconfirmed() >= self.cap
                    if self.blocked:
                        self.wake.wait(BATCH_DELAY_S)
                elif len(q) < WAKE_AT and not self.closing:
                    self.wake.wait(BATCH_DELAY_S)
        except BaseException as exc:  # a bug must not silently stop the trail
            self.error = f"audit shipper crashed: {exc!r}"
            log.exception("audit_shipper_crashed")
        finally:
            self.on_state("writer stopped")  # nothing is accepted once the thread is gone
            self._finish()

    def _restart(self) -> bool:
        """No child: start one when due.  False when closing has run out of time."""
        now = time.monotonic()
        if self.closing and (not self.queue or now >= self.close_deadline):
            return False
        if now < self.next_start:
            self.wake.wait(min(self.next_start - now, RETRY_INTERVAL_S))
            self.wake.clear()
            return True
        try:
            self._start_child(max(1.0, self.close_deadline - now) if self.closing else START_TIMEOUT_S, restart=True)
        except Exception as exc:  # noqa: BLE001 - keep trying, loudly
            msg = str(exc)
            with self.plock:
                first = self.proc_error is None or "restarting" in self.proc_error
                self.proc_error = f"cannot restart the audit writer process: {msg}"
                self._state_changed()
            (log.error if first else log.debug)("audit_writer_process_restart_failed", error=msg, retry_in_s=self.backoff)
            self.next_start = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, RESTART_MAX_S)
            return True
        self.backoff = RETRY_INTERVAL_S
        return True

    def _close_child(self, child: _Child) -> None:
        """Everything is shipped: the child drains, fsyncs, reports and exits."""
        remaining = max(0.0, self.close_deadline - time.monotonic())
        try:
            wire.send_frame(child.cmd_fd, wire.CLOSE, orjson.dumps({"timeout": remaining}))
        except OSError:
            pass  # already dead: its reader counts what it lost
        # The trail waits timeout + 1 s for this thread; leave some of it.
        if not child.gone.wait(remaining + 0.8):
            with self.plock:
                if child is self.child:
                    log.error("audit_close_timeout", pending=child.unconfirmed(), timeout=remaining, pid=child.proc.pid)
                    self._fold(child)  # counts the unconfirmed as lost
                    self.child = None
        _close_fd(child.cmd_fd)  # EOF: a child still draining exits when it is done

    def _finish(self) -> None:
        """After the loop: whatever is still queued here will never be written."""
        with self.plock:
            child = self.child
            if child is not None and not child.gone.is_set():
                self._fold(child)
                self.child = None
                _close_fd(child.cmd_fd)
            left = len(self.queue)
            if left:
                self.parent_lost += left
                self._publish()
        if left:
            log.error("audit_events_lost", path=str(self.path), lost=left, error=self.error)


def record_parts(rec: dict[str, Any]) -> tuple[str, tuple[tuple[str, bytes], ...]]:
    """``(@timestamp, ((key, JSON of its value), ...))`` for the keys after ``seq``.

    The JSON is what the writer's serialization (``_sign``, then
    ``dumps_record``'s fallbacks) would write for those values, so the child,
    putting the parts back as ``orjson.Fragment`` values, writes the line
    the writer thread would have written, byte for byte.
    """
    rest = [(k, v) for k, v in rec.items() if k != "@timestamp" and k != "seq"]
    for opts, prep in ((None, _same), (_OPTS, _same), (_OPTS, _scrub)):
        try:
            return rec["@timestamp"], tuple((k, orjson.dumps(prep(v), orjson_default, opts)) for k, v in rest)
        except TypeError:
            continue
    # Nothing serializes: dumps_record's minimal record, whose values all do.
    minimal = orjson.loads(dumps_record(rec))
    return minimal["@timestamp"], tuple((k, orjson.dumps(v)) for k, v in minimal.items() if k != "@timestamp" and k != "seq")


def _same(v: Any) -> Any:
    return v


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _relog(payload: bytes) -> None:
    """A structlog event from the child, logged here (where the gateway's logging is configured)."""
    try:
        d = orjson.loads(payload)
        method = d.get("method")
        ed = d["event"]
        event = ed.pop("event", "audit_writer_log")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        log.error("audit_writer_log_garbled")
        return
    getattr(log, method if method in _LOG_METHODS else "error")(event, **ed)

