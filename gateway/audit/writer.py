"""The single writer: queue -> processors -> chain -> batched writes -> sinks.

Everything that touches the disk happens here, so ``emit`` never waits on I/O.
It runs as a thread of the gateway (``audit.writer = "thread"``) or, by
default, in the writer process (gateway/audit/writer_process.py), unchanged.
Failure model: an OSError (disk full, directory gone, EIO) puts the writer
into an error state; the trail reports unhealthy (emit then raises or drops,
per fail_closed) and the writer retries every ``RETRY_INTERVAL_S``.  Events
it had already accepted stay in memory - signed lines in ``buf``, unsigned
records in ``backlog`` - and are written byte for byte once the disk
recovers; a partial write is cut off with ftruncate first, so a failure never
leaves a torn line behind in a running gateway.
"""

from __future__ import annotations

import binascii
import collections
import errno
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson
import structlog

from gateway.fsutil import fsync_dir
from gateway.settings import AuditSettings, ConfigError

from .chain import CHAIN_KEY, GENESIS, LINE_END, SUFFIX_LEN, Mac, Signer
from .files import ROTATED_ACTION, TailState, inspect_tail, rotated_name, rotated_siblings
from .redact import Redactor
from .schema import ToECS, dumps_record, orjson_default

# How long events may wait in the queue before the writer takes a batch
# (emit wakes it earlier once WAKE_AT events are waiting).
BATCH_DELAY_S = 0.05
# How long open() waits for the trail's lock: after a SIGKILL of the gateway,
# its orphaned writer process drains for up to 10 s (writer_process.ORPHAN_DRAIN_S)
# before it lets go, and a restarted gateway should wait for it, not fail.
LOCK_WAIT_S = 12.0
WAKE_AT = 512

log = structlog.get_logger(__name__)

RETRY_INTERVAL_S = 0.5
BATCH_MAX = 4096
BUF_FLUSH_BYTES = 1 << 20
LOG_EVERY_S = 1.0

# (timestamp, action, outcome, *schema.FLAT_FIELDS values, extra fields dict)
Item = tuple[Any, ...]


class Stats:
    """Counters read by the trail's properties (ints; torn reads are harmless under the GIL)."""

    def __init__(self) -> None:
        self.taken = 0  # events the writer took from the queue (accepted = taken + still queued)
        self.written = 0  # events on disk (rotation records not counted)
        self.records_written = 0  # all lines on disk, rotation records included
        self.dropped = 0  # fail-open: events refused because the trail was unhealthy/full
        self.rejected = 0  # fail-closed: emit() raised AuditUnavailable
        self.errors = 0  # events whose processing raised (written as a placeholder record)
        self.lost = 0  # accepted but never written (close() gave up)
        self.sink_errors = 0
        self.batches = 0
        self.rotations = 0
        self.write_seconds_total = 0.0  # time inside write(2)
        self.latency_seconds_total = 0.0  # emit -> on disk, oldest event of each batch
        self.latency_seconds_max = 0.0
        self.latency_last = 0.0


class Writer:
    def __init__(
        self,
        settings: AuditSettings,
        key: bytes,
        *,
        replica_id: str | None,
        clock: Callable[[], float],
        queue: collections.deque[Item],
        wake: threading.Event,
        stats: Stats,
        sinks: list[Any],
        on_state: Callable[[str | None], None],
        lock: threading.Lock | None = None,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.path = Path(settings.path)
        self.lock_wait_s = lock_wait_s
        self.max_bytes = settings.max_bytes
        self.rotate_daily = settings.rotate_daily
        self.flush_interval = settings.flush_interval_s
        self.clock = clock
        self.queue = queue
        self.wake = wake
        self.stats = stats
        self.lock = lock if lock is not None else threading.Lock()
        self.sinks = sinks
        self.on_state = on_state
        self.mac = Mac(key)
        self.batch_max = BATCH_MAX  # events taken from the queue per batch
        self.wake_at = WAKE_AT  # fewer waiting than this: collect more for up to BATCH_DELAY_S
        # The pipeline: the builder (timestamp + ECS mapping, with the
        # redactor applied to every value that can carry a secret as the
        # record is assembled), any further structlog-style processors, then
        # _sign renders the chained line (seq, orjson, HMAC).
        self.builder = ToECS(replica_id, redactor=Redactor())
        self.processors: list[Callable[[Any, str, Any], Any]] = []
        self.signer = Signer(self.mac)

        self.fd = -1
        self.lock_fd = -1
        self.size = 0
        self.day: str | None = None
        self.records_in_file = 0
        self.buf: list[bytes] = []  # signed lines, as pieces: one join and one write(2) per flush
        self.buf_bytes = 0
        self.buf_events = 0
        self.buf_records = 0
        self.partial = False  # a write failed midway: truncate to self.size before retrying
        self.dirty = False  # written since the last fdatasync
        self.backlog: collections.deque[Any] = collections.deque()  # dict records or serialized ones (ToECS.records)
        self.rot: dict[str, Any] | None = None  # a rotation in progress (survives failures)
        self.error: str | None = None
        self.closing = False
        self.close_deadline = 0.0
        self.last_maint = time.monotonic()
        self._last_sink_log = 0.0

    # ------------------------------------------------------------ start-up

    def open(self) -> None:
        """Lock and open the trail, continuing the chain found on disk (runs in start())."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError("audit.path", f"cannot create {self.path.parent}: {exc.strerror}") from None
        deadline = time.monotonic() + self.lock_wait_s
        waiting = False
        while True:
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.lock_fd)
                    self.lock_fd = -1
                    raise ConfigError(
                        "audit.path",
                        f"{self.path} is in use by another gateway process (waited {self.lock_wait_s:g} s; "
                        "each replica needs its own audit.path)",
                    ) from None
                if not waiting:
                    waiting = True
                    log.warning("audit_trail_locked_waiting", path=str(self.path), wait_s=self.lock_wait_s)
                time.sleep(0.1)
        try:
            self._open_existing()
        except OSError as exc:
            self.release()
            raise ConfigError("audit.path", f"cannot open {self.path}: {exc.strerror or exc}") from None

    def _open_existing(self) -> None:
        st: TailState | None = inspect_tail(self.path, self.mac) if self.path.exists() else None
        if st is not None and st.appendable:
            self.signer = Signer(self.mac, st.seq, st.chain)
            self.fd = self._open_fd()
            self.size = os.fstat(self.fd).st_size
            self.day = st.day
            self.records_in_file = 1
            return
        if st is not None and not st.empty:
            # Keep the damaged/foreign file untouched under a rotated name and
            # start a new one whose first record says why.
            reason = "torn_tail" if st.torn else ("key_changed" if st.recognized else "unrecognized_tail")
            if st.lines and st.recognized:
                self.signer = Signer(self.mac, st.seq, st.chain)
            else:
                self._continue_from_siblings()
            self.rot = {"reason": reason, "renamed": None}
            self._rotate(reason)
            return
        # No file (or an empty one): a fresh trail, or the newest rotated file
        # is the predecessor (a crash between rename and first record).
        prev = self._continue_from_siblings()
        self.fd = self._open_fd()
        self.size = os.fstat(self.fd).st_size
        if prev is not None:
            self.rot = {"reason": prev[1], "renamed": prev[0], "opened": True}
            self._rotate(prev[1])

    def _continue_from_siblings(self) -> tuple[Path, str] | None:
        for sib in reversed(rotated_siblings(self.path)):
            st = inspect_tail(sib, self.mac)
            if st.lines and st.recognized:
                self.signer = Signer(self.mac, st.seq, st.chain)
                return sib, ("torn_tail" if st.torn else "resume")
        self.signer = Signer(self.mac, 0, GENESIS)
        return None

    def _open_fd(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        q = self.queue
        lock = self.lock
        stats = self.stats
        try:
            while True:
                if self.error is not None:
                    if self.closing and (self.pending() == 0 or time.monotonic() >= self.close_deadline):
                        break
                    self.wake.wait(RETRY_INTERVAL_S)
                    self.wake.clear()
                    try:
                        self._recover()
                    except OSError as exc:
                        self._fail(exc, quiet=True)
                        continue
                    self._ok()
                n = len(q)
                if n:
                    with lock:  # emit() retracts items under it (see AuditTrail._retract)
                        batch = [q.popleft() for _ in range(min(n, self.batch_max))]
                        stats.taken += len(batch)
                    try:
                        self._consume(batch)
                        self._flush()
                        self._account(batch[0][0])
                    except OSError as exc:
                        self._fail(exc)
                        continue
                    if time.monotonic() - self.last_maint >= self.flush_interval:
                        self._maintain()
                    continue
                if self.closing or time.monotonic() - self.last_maint >= self.flush_interval:
                    self._maintain()
                if self.error is not None:
                    continue
                if self.closing:
                    # close() sets ``closing`` only after refusing new events
                    # under the trail's lock, so an event appended after our
                    # len(q) above is visible now: drain it before leaving.
                    if q:
                        continue
                    break
                self.wake.clear()
                if len(q) < self.wake_at:
                    # Collect a batch: events reach the disk within BATCH_DELAY_S.
                    self.wake.wait(min(self.flush_interval, BATCH_DELAY_S))
        except BaseException as exc:  # a bug must not silently stop the trail
            self.error = f"writer crashed: {exc!r}"
            log.exception("audit_writer_crashed")
        finally:
            self.on_state("writer stopped")  # nothing is accepted once the thread is gone
            self._shutdown()

    def _account(self, oldest_ts: float) -> None:
        s = self.stats
        # Emit -> on disk for the oldest event of the batch, on the trail's clock.
        lat = max(0.0, self.clock() - oldest_ts)
        s.batches += 1
        s.latency_last = lat
        s.latency_seconds_total += lat
        if lat > s.latency_seconds_max:
            s.latency_seconds_max = lat

    def _record_failed(self, item: Item, exc: Exception) -> None:
        # The builder writes a placeholder instead: the fact that something
        # happened is never lost.
        self.stats.errors += 1
        log.error("audit_record_failed", action=item[1] if len(item) > 1 else None, error=repr(exc))

    def _records(self, batch: list[Item]) -> Iterator[dict[str, Any]]:
        """queue items -> redacted ECS records (not yet signed), one at a time.

        One at a time so only bytes pile up: dicts alive in bulk make the
        cyclic GC expensive.
        """
        if not self.processors:
            # Nothing looks inside the records before they are serialized.
            return self.builder.records(batch, self._record_failed, serialized=True)
        recs = self.builder.records(batch, self._record_failed)
        return self._processed(batch, recs)

    def _processed(self, batch: list[Item], recs: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        processors = self.processors
        for item, rec in zip(batch, recs):  # one record per item, in order
            try:
                for p in processors:
                    rec = p(None, "emit", rec)
            except Exception as exc:
                self._record_failed(item, exc)
                rec = self.builder.placeholder(item, exc)
            yield rec

    def _consume(self, batch: list[Item]) -> None:
        """Sign a batch into the file buffer; on an I/O error the unsigned remainder goes to ``backlog``."""
        backlog = self.backlog

        def park(rec: dict[str, Any] | None, rest: Iterator[dict[str, Any]]) -> None:
            if rec is not None:
                backlog.append(rec)
            backlog.extend(rest)

        self._sign(self._records(batch), park)

    def _drain_backlog(self) -> None:
        bl = self.backlog

        def popping() -> Iterator[dict[str, Any]]:
            while bl:
                yield bl.popleft()

        def park(rec: dict[str, Any] | None, rest: Iterator[dict[str, Any]]) -> None:
            if rec is not None:
                bl.appendleft(rec)  # the rest is still in the backlog, in order

        self._sign(popping(), park)

    def _sign(
        self,
        recs: Iterator[dict[str, Any]],
        park: Callable[[dict[str, Any] | None, Iterator[dict[str, Any]]], None],
    ) -> None:
        """Give each record its ``seq`` and chain value and append its line to ``buf``.

        The chain head and the file counters live in locals for the loop (this
        is the per-event cost of the trail) and are stored back around every
        rotation and flush, and when the loop ends however it ends.  Rotation
        by day and by size happens before the record that calls for it, as in
        :meth:`Signer.sign`.  On OSError (a rotation or flush failing)
        ``park(record not in buf or None, remaining records)`` keeps the
        unsigned records for the retry, and the error propagates.
        """
        icopy = self.mac._inner.copy
        ocopy = self.mac._outer.copy
        hexlify = binascii.hexlify
        dumps = orjson.dumps
        default = orjson_default
        chain_key = CHAIN_KEY
        end = LINE_END
        suffix = SUFFIX_LEN
        daily = self.rotate_daily
        max_bytes = self.max_bytes
        # (Re)loaded after every rotation and flush: in_file and the number of
        # events added follow from how far seq moved since.
        seq, chain, day, in_file0, used, flush_at, ext = self._loop_state()
        seq0 = seq
        try:
            for rec in recs:
                # A dict record, or (@timestamp, head, tail): one the builder
                # serialized already but for its seq (ToECS.records).
                serial = rec.__class__ is tuple
                d = rec[0][:10] if serial else rec["@timestamp"][:10]
                if d != day and day is not None and daily and (in_file0 or seq != seq0):
                    self._store(seq, chain, used, in_file0 + seq - seq0, day, seq - seq0)
                    try:
                        self._rotate("day")
                    except OSError:
                        park(rec, recs)
                        raise
                    finally:
                        seq, chain, day, in_file0, used, flush_at, ext = self._loop_state()
                        seq0 = seq
                seq += 1
                if serial:
                    prefix = b"%b%d%b" % (rec[1], seq, rec[2])
                    n = len(prefix) + 1 + suffix  # the line: prefix, suffix, newline
                else:
                    rec["seq"] = seq
                    try:
                        body = dumps(rec, default)
                    except TypeError:
                        body = dumps_record(rec)
                    prefix = body[:-1]
                    n = len(body) + suffix  # the line: body minus "}", suffix, newline
                if used + n > max_bytes and (in_file0 or seq - 1 != seq0):
                    self._store(seq - 1, chain, used, in_file0 + seq - 1 - seq0, day, seq - 1 - seq0)
                    try:
                        self._rotate("size")
                    except OSError:
                        park(rec, recs)
                        raise
                    finally:
                        seq, chain, day, in_file0, used, flush_at, ext = self._loop_state()
                        seq0 = seq
                    seq += 1
                    if serial:
                        prefix = b"%b%d%b" % (rec[1], seq, rec[2])
                    else:
                        rec["seq"] = seq
                        prefix = dumps_record(rec)[:-1]
                    n = len(prefix) + 1 + suffix
                h = icopy()
                h.update(chain)
                h.update(prefix)
                o = ocopy()
                o.update(h.digest())
                chain = hexlify(o.digest())
                ext((prefix, chain_key, chain, end))
                used += n
                day = d
                if used >= flush_at:
                    self._store(seq, chain, used, in_file0 + seq - seq0, day, seq - seq0)
                    in_file0 += seq - seq0
                    seq0 = seq
                    try:
                        self._flush()
                    except OSError:
                        park(None, recs)
                        raise
                    finally:
                        used = self.size + self.buf_bytes
                        flush_at = self.size + BUF_FLUSH_BYTES
        finally:
            self._store(seq, chain, used, in_file0 + seq - seq0, day, seq - seq0)

    def _loop_state(self) -> tuple[int, bytes, str | None, int, int, int, Callable[[Iterable[bytes]], None]]:
        """What _sign keeps in locals: seq, chain, day, records in the file, bytes used, flush mark, buffer append."""
        used = self.size + self.buf_bytes
        return (self.signer.seq, self.signer.chain, self.day, self.records_in_file, used,
                self.size + BUF_FLUSH_BYTES, self.buf.extend)  # fmt: skip

    def _store(self, seq: int, chain: bytes, used: int, in_file: int, day: str | None, added: int) -> None:
        """Write _sign's locals back (the chain head, the buffer and file counters)."""
        self.signer.seq = seq
        self.signer.chain = chain
        self.buf_bytes = used - self.size
        self.records_in_file = in_file
        self.day = day
        self.buf_events += added  # only emitted events pass through _sign
        self.buf_records += added

    # ------------------------------------------------------------ file ops

    def _flush(self) -> None:
        if not self.buf:
            return
        data = b"".join(self.buf) if len(self.buf) > 1 else self.buf[0]
        if self.partial:
            os.ftruncate(self.fd, self.size)
            self.partial = False
        t = time.perf_counter()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError:
            self.partial = True
            raise
        s = self.stats
        s.write_seconds_total += time.perf_counter() - t
        s.written += self.buf_events
        s.records_written += self.buf_records
        self.size += len(data)
        self.buf.clear()
        self.buf_bytes = 0
        self.buf_events = 0
        self.buf_records = 0
        self.dirty = True
        for sink in self.sinks:
            try:
                sink.write(data)
            except Exception as exc:
                s.sink_errors += 1
                now = time.monotonic()
                if now - self._last_sink_log >= LOG_EVERY_S:
                    self._last_sink_log = now
                    log.error("audit_sink_failed", sink=sink.name, error=repr(exc), sink_errors_total=s.sink_errors)

    def _rotate(self, reason: str) -> None:
        """Close the current file under a rotated name and open a fresh one.

        Resumable: each step records its progress in ``self.rot`` so a retry
        after a failure picks up where it stopped.
        """
        if self.rot is None:
            self.rot = {"reason": reason, "renamed": None}
        r = self.rot
        if r["renamed"] is None:
            self._flush()
            if self.fd >= 0:
                os.fsync(self.fd)
            target = rotated_name(self.path, self.clock())
            os.rename(self.path, target)
            r["renamed"] = target
        if not r.get("opened"):
            fd = self._open_fd()
            old, self.fd = self.fd, fd
            if old >= 0:
                try:
                    os.fsync(old)
                except OSError:
                    pass  # the old file may be gone; its data is what it is
                os.close(old)
            self.size = os.fstat(fd).st_size
            r["opened"] = True
        self.records_in_file = 0
        self.day = None
        prev_file: Path = r["renamed"]
        ed = {
            "event": ROTATED_ACTION,
            "outcome": "success",
            "timestamp": self.clock(),
            "reason": r["reason"],
            "details": {
                "previous_file": prev_file.name,
                "previous_seq": self.signer.seq,
                "previous_chain": self.signer.chain.decode("ascii"),
            },
        }
        rec: Any = self.builder(None, "emit", ed)
        for p in self.processors:
            rec = p(None, "emit", rec)
        line = self.signer.sign(rec)
        self.rot = None
        self.buf.append(line)
        self.buf_bytes += len(line)
        self.buf_records += 1
        self.stats.rotations += 1
        self._flush()
        # Durability of the rename itself.
        fsync_dir(self.path.parent)

    def _maintain(self) -> None:
        """Periodic: fdatasync, and notice the file being moved or deleted under us."""
        self.last_maint = time.monotonic()
        if self.fd < 0 or self.error is not None:
            return
        try:
            if self.dirty:
                os.fdatasync(self.fd)
                self.dirty = False
            mine = os.fstat(self.fd)
            try:
                st = os.stat(self.path)
                same = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
            except OSError:  # gone, or its directory replaced (ENOTDIR)
                same = False
            if not same:
                # Someone moved or deleted the live file: start a new one at
                # the configured path; its first record links back, so the
                # verifier reports the gap unless the moved file is supplied.
                # Until that works the trail is unhealthy (rot stays pending).
                log.error("audit_file_replaced", path=str(self.path))
                self.rot = {"reason": "file_replaced", "renamed": self.path}
                self._rotate("file_replaced")
        except OSError as exc:
            self._fail(exc)

    def _recover(self) -> None:
        if self.rot is not None:
            self._rotate(self.rot["reason"])
        self._flush()
        self._drain_backlog()
        self._flush()

    def _fail(self, exc: OSError, *, quiet: bool = False) -> None:
        msg = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, exc.errno)})" if isinstance(exc, OSError) else repr(exc)
        first = self.error is None
        self.error = f"cannot write {self.path}: {msg}"
        self.on_state(self.error)
        if first or not quiet:
            log.error("audit_write_failed", path=str(self.path), error=msg, pending=self.pending())
        else:
            log.debug("audit_write_retry_failed", error=msg)

    def _ok(self) -> None:
        log.warning("audit_write_recovered", path=str(self.path))
        self.error = None
        self.on_state(None)

    def pending(self) -> int:
        return len(self.queue) + len(self.backlog) + self.buf_events

    def waiting(self) -> int:
        """Events taken from the queue and held back by a write failure (the trail's queue_depth adds them)."""
        return len(self.backlog)

    # ------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        lost = self.pending() if self.error is not None else 0
        if self.fd >= 0 and self.error is None:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                log.error("audit_fsync_failed", path=str(self.path), error=exc.strerror)
        if lost:
            self.stats.lost += lost
            log.error("audit_events_lost", path=str(self.path), lost=lost, error=self.error)
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                pass

