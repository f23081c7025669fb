"""The audit writer process: the child side of ``audit.writer = "process"``.

The gateway starts it as a fresh interpreter (never a fork: the gateway runs
many threads) and talks to it over two private pipes (gateway/audit/wire.py).
It runs the ordinary :class:`~gateway.audit.writer.Writer` - the same ECS
mapping, redaction, chain, rotation, recovery and sinks as the in-process
writer thread - on the other CPU core, so the gateway's request path pays
only for queueing events and shipping them in batches.

One thread: ``Writer.run`` unchanged, whose wait for more events reads the
gateway's batches from the pipe (:class:`Inbox`).  After every batch (at
most every REPORT_EVERY_S while more are queued) and on every change of
state the writer reports its counters and chain head.  The process ends when
the gateway says ``CLOSE`` (after draining and fsyncing) or when the
gateway's end of the pipe closes (the gateway died: it drains what it has
and exits).  It ignores SIGINT/SIGTERM/SIGHUP: a Ctrl-C or a service
manager signalling the whole group must not kill it before the gateway has
shipped its last events; the gateway's exit ends it.

The key arrives in the ``INIT`` frame, never in argv or the environment.
"""

from __future__ import annotations

import collections
import gc
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import structlog

from . import wire
from .sinks import build_sinks, close_sinks
from .writer import RETRY_INTERVAL_S, Item, Stats, Writer

# How long the child keeps draining after the gateway vanished without CLOSE.
ORPHAN_DRAIN_S = 10.0

# Events per writer batch here.  Smaller than the writer thread's: the
# process runs alone on its core and is the pipeline's bottleneck, and a batch
# whose lines and records stay in the CPU's L2 cache costs ~10% less per
# event than a 4096-event one (measured; the thread writer's batches also
# bound how long it holds the gateway's GIL, so they stay as they are).
CHILD_BATCH_MAX = 256

# While more events wait, a batch's report may be skipped if the last one is
# this recent (the batch that empties the queue always reports, so sync()
# and close() never wait on a skipped report).
REPORT_EVERY_S = 0.005

GC_THRESHOLD = 10_000

PREBUILT_LEN = 3  # (timestamp, @timestamp, parts); events are 23-tuples

# Counters copied into every report (the gateway adds them up across restarts).
REPORTED = (
    "taken", "written", "records_written", "errors", "lost", "sink_errors", "batches", "rotations",
    "write_seconds_total", "latency_seconds_total", "latency_seconds_max", "latency_last",
)  # fmt: skip


class Reporter:
    """Sends frames to the gateway (one lock keeps frames whole should a log line come from another thread)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False

    def send(self, tag: bytes, payload: bytes) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                wire.send_frame(self.fd, tag, payload)
            except OSError:  # the gateway is gone; keep writing what we have regardless
                self.broken = True


class ChildWriter(Writer):
    """The in-process Writer plus reports, and records the gateway built itself.

    A queued entry is either an event tuple or ``(timestamp, @timestamp,
    ((key, JSON), ...))`` for a record the gateway built because the event
    held values marshal cannot carry (see wire.encode_batch); its values go
    back in as ``orjson.Fragment``, so its line is exactly the one the
    writer would have made of the event.  ``prebuilt`` counts those still
    queued, so batches without any take the builder's fast path untouched.
    """

    def __init__(self, *args: Any, reporter: Reporter, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.reporter = reporter
        self.batch_max = CHILD_BATCH_MAX
        # The gateway has batched already: write whatever has arrived at once
        # (a wake-up that came during fdatasync must not wait BATCH_DELAY_S).
        self.wake_at = 1
        self.prebuilt = 0
        self.received = 0
        self.last_report = 0.0

    def report(self, tag: bytes = wire.REPORT) -> None:
        self.last_report = time.monotonic()
        s = self.stats
        body: dict[str, Any] = {k: getattr(s, k) for k in REPORTED}
        body["seq"] = self.signer.seq
        body["chain"] = self.signer.chain.decode("ascii")
        body["error"] = self.error
        body["received"] = self.received
        self.reporter.send(tag, orjson.dumps(body))

    def _account(self, oldest_ts: float) -> None:
        super()._account(oldest_ts)
        if not self.queue or time.monotonic() - self.last_report >= REPORT_EVERY_S:
            self.report()

    def _records(self, batch: list[Item]) -> Iterator[dict[str, Any]]:
        if self.prebuilt:
            return self._mixed_records(batch)
        return super()._records(batch)

    def _mixed_records(self, batch: list[Any]) -> Iterator[dict[str, Any]]:
        """Like Writer._records for a batch holding prebuilt records among the events, in order."""
        run: list[Item] = []
        for entry in batch:
            if len(entry) != PREBUILT_LEN:
                run.append(entry)
                continue
            if run:
                yield from super()._records(run)
                run = []
            with self.lock:
                self.prebuilt -= 1
            rec = {"@timestamp": entry[1], "seq": 0}
            for k, raw in entry[2]:
                rec[k] = orjson.Fragment(raw)
            for p in self.processors:
                rec = p(None, "emit", rec)
            yield rec
        if run:
            yield from super()._records(run)


def _configure_logging(reporter: Reporter) -> None:
    """Send every structlog event to the gateway, which logs it its own way."""

    def forward(logger: Any, method: str, ed: dict[str, Any]) -> Any:
        ed["writer_pid"] = os.getpid()
        reporter.send(wire.LOG, orjson.dumps({"method": method, "event": ed}, default=str))
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.processors.format_exc_info, forward],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )


def _clock(init: dict[str, Any]) -> tuple[Callable[[], float], Callable[[float], None]]:
    """The writer's clock (rotation names, the audit.rotated timestamp, latency).

    The gateway's default clock is time.time, which reads the same here.  A
    custom clock (tests freeze time) lives in the gateway: the child uses the
    value the gateway sampled when it shipped the latest batch.
    """
    if init["real_clock"]:
        return time.time, lambda t: None
    now = [float(init["clock"])]

    def clock() -> float:
        return now[0]

    def update(t: float) -> None:
        now[0] = t

    return clock, update


class Inbox:
    """The writer's ``wake`` event in this process: waiting for events is reading the pipe.

    ``Writer.run`` waits on its wake event whenever its queue is empty (and
    between retries after an I/O error).  Here that wait reads the gateway's
    frames into the queue, on the writer's own thread: no second thread, no
    GIL hand-offs, and while the writer is busy the frames wait in the pipe
    (which is what bounds the gateway's shipping).  ``CLOSE``, or the end of
    the pipe (the gateway died), sets the writer's ``closing``, and
    ``Writer.run`` then drains, fsyncs and returns, as it does in the gateway.
    """

    def __init__(self, reader: wire.FrameReader, parent: int, set_clock: Callable[[float], None]) -> None:
        self.reader = reader
        self.parent = parent
        self.set_clock = set_clock
        self.w: ChildWriter | None = None

    def set(self) -> None:
        pass  # nothing here wakes the writer but the pipe

    def clear(self) -> None:
        pass

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        w = self.w
        assert w is not None
        if w.closing:
            # Drained already or failing until the deadline: nothing more comes.
            time.sleep(min(timeout or 0.0, max(0.0, w.close_deadline - time.monotonic())))
            return False
        frames = self.reader.poll(RETRY_INTERVAL_S if timeout is None else timeout)
        if frames is None or os.getppid() != self.parent:
            # The gateway is gone (a leaked copy of the pipe's write end must
            # not keep an orphan alive either): write what we have and exit.
            self._close(ORPHAN_DRAIN_S)
            return True
        for tag, payload in frames:
            if tag == wire.BATCH:
                t, prebuilt, items = wire.decode_batch(payload)
                self.set_clock(t)
                if prebuilt:
                    with w.lock:
                        w.prebuilt += prebuilt
                w.queue.extend(items)
                w.received += len(items)
            elif tag == wire.CLOSE:
                self._close(float(orjson.loads(payload)["timeout"]))
        return bool(frames)

    def _close(self, timeout: float) -> None:
        w = self.w
        assert w is not None
        w.close_deadline = time.monotonic() + timeout
        w.closing = True


def serve(cmd_fd: int, rep_fd: int) -> int:
    reporter = Reporter(rep_fd)
    _configure_logging(reporter)
    parent = os.getppid()

    def orphaned() -> None:
        if os.getppid() != parent:
            raise EOFError

    reader = wire.FrameReader(cmd_fd, idle=orphaned)
    try:
        frame = reader.read()
    except EOFError:
        return 3
    if frame is None or frame[0] != wire.INIT:
        return 3
    init = pickle.loads(frame[1])  # noqa: S301 - from the gateway, over a pipe only the two processes hold
    clock, set_clock = _clock(init)
    inbox = Inbox(reader, parent, set_clock)
    sinks: list[Any] = []
    w: ChildWriter | None = None
    try:
        settings = init["settings"]
        sinks = build_sinks(settings)
        w = ChildWriter(
            settings,
            init["key"],
            replica_id=init["replica_id"],
            clock=clock,
            queue=collections.deque(),
            wake=inbox,  # type: ignore[arg-type]
            stats=Stats(),
            sinks=sinks,
            on_state=lambda error: w.report() if w is not None else None,
            reporter=reporter,
            lock_wait_s=float(init.get("lock_wait_s", 0.0)),
        )
        del init
        w.open()
    except BaseException as exc:  # noqa: BLE001 - every start-up failure goes back to start()
        close_sinks(sinks)
        reporter.send(wire.FAILED, wire.encode_error(exc))
        return 2
    inbox.w = w
    # Everything from here on is short-lived and acyclic (event tuples, record
    # dicts): collect the young generation less often (~3% of the per-event
    # cost at the default threshold) and leave the start-up objects out of it.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    w.report(wire.READY)
    w.run()  # until CLOSE or the end of the pipe; drains, fsyncs, closes the file
    w.report(wire.FINAL)
    return 0 if w.stats.lost == 0 and w.error is None else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return serve(int(args[0]), int(args[1]))


if __name__ == "__main__":
    sys.exit(main())
