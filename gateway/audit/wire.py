"""The pipe protocol between the gateway and its audit writer process.

Frames are ``tag (1 byte) + length (4 bytes, big endian) + payload``.  The
gateway writes commands on one pipe and reads reports from another; both
pipes are private to the two processes (created with ``os.pipe``, passed to
the child by descriptor number, never through a path someone else could
open), so the payloads are trusted data from the other side, not input.

Parent -> child: ``INIT`` (settings, key, clock: pickled once, because the key
must not travel in argv or the environment), ``BATCH`` (queued events),
``CLOSE`` (drain, fsync, report, exit).  Child -> parent: ``READY`` or
``FAILED`` (start-up), ``REPORT`` (counters and chain head after every
batch and on every state change), ``LOG`` (the child's structlog events,
re-logged by the parent so they land wherever the gateway's logs go),
``FINAL`` (the last report, after the drain).

Events travel as ``marshal`` dumps of the queued tuples: it is the fastest
serializer in the standard library for tuples of str/int/float/None and,
unlike JSON, gives the child exactly the same values (tuples stay tuples,
sets stay sets, bytes stay bytes, floats round-trip), so the record builder
makes the same record from them as it would in the gateway.  marshal accepts
exact built-in types only; an event holding anything else (a dataclass, an
enum, a path, an exception ...) is built into its record in the gateway,
by the same builder and redactor, and shipped as the JSON of that record's
parts (:func:`encode_batch`, ``shipper.record_parts``), which the child puts
back byte for byte.  Both sides run the same interpreter binary, so the
marshal format always matches.
"""

from __future__ import annotations

import marshal
import os
import select
import struct
import time
from typing import Any, Callable

import orjson

from gateway.settings import ConfigError

INIT = b"I"
BATCH = b"B"
CLOSE = b"C"
READY = b"K"
FAILED = b"E"
REPORT = b"R"
LOG = b"L"
FINAL = b"F"

_HEADER = struct.Struct("!cI")
# poll() reads at most this much per call: the writer then works through
# about one batch's events while they are still in the CPU cache, instead of
# unpacking a whole pipe's worth at once.
POLL_READ = 128 * 1024


def send_frame(fd: int, tag: bytes, payload: bytes = b"") -> None:
    """Write one whole frame (blocking; partial writes are continued)."""
    data = memoryview(_HEADER.pack(tag, len(payload)) + payload)
    while data:
        n = os.write(fd, data)
        data = data[n:]


class FrameReader:
    """Reads frames from a pipe through one buffer (few syscalls for many small frames).

    ``idle`` (optional) is called about every ``idle_s`` seconds while no data
    arrives; the child uses it to notice that the gateway has gone away even
    if someone else still holds the write end of the pipe.
    """

    def __init__(self, fd: int, *, idle: Callable[[], None] | None = None, idle_s: float = 1.0) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.idle = idle
        self.idle_s = idle_s

    def _fill(self, need: int) -> bool:
        while len(self.buf) < need:
            if self.idle is not None:
                ready, _, _ = select.select([self.fd], [], [], self.idle_s)
                if not ready:
                    self.idle()
                    continue
            chunk = os.read(self.fd, max(1 << 20, need - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def _complete(self) -> list[tuple[bytes, bytes]]:
        """The whole frames already in the buffer, taken out of it."""
        out = []
        buf = self.buf
        pos = 0
        hs = _HEADER.size
        while len(buf) - pos >= hs:
            tag, n = _HEADER.unpack_from(buf, pos)
            if len(buf) - pos - hs < n:
                break
            out.append((tag, bytes(buf[pos + hs : pos + hs + n])))
            pos += hs + n
        if pos:
            del buf[:pos]
        return out

    def poll(self, timeout: float) -> list[tuple[bytes, bytes]] | None:
        """The frames that are complete within ``timeout`` seconds ([] if none), or None at end of file."""
        frames = self._complete()
        if frames:
            return frames
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return []
            chunk = os.read(self.fd, POLL_READ)
            if not chunk:
                return None
            self.buf += chunk
            frames = self._complete()
            if frames or time.monotonic() >= deadline:
                return frames

    def read(self) -> tuple[bytes, bytes] | None:
        """(tag, payload) of the next frame, or None at end of file (a torn frame counts as the end)."""
        if not self._fill(_HEADER.size):
            return None
        tag, n = _HEADER.unpack_from(self.buf)
        if not self._fill(_HEADER.size + n):
            return None
        payload = bytes(self.buf[_HEADER.size : _HEADER.size + n])
        del self.buf[: _HEADER.size + n]
        return tag, payload


# ------------------------------------------------------------------ events


def encode_batch(batch: list[tuple[Any, ...]], now: float, prebuild: Callable[[tuple[Any, ...]], tuple[Any, ...]]) -> bytes:
    """The BATCH payload: ``(now, number of prebuilt records, entries)``, marshalled.

    ``now`` is the gateway's clock when it shipped (the child's clock when the
    gateway's is not time.time).  The fast path is one ``marshal.dumps`` of
    the events as they are.  If any event holds a value marshal refuses,
    each such event is replaced by ``(timestamp, *prebuild(event))``: its
    finished record as ``@timestamp`` and the JSON of each further top-level
    value (shipper.record_parts), in a 3-tuple the child tells apart from
    the event tuples by its length (the timestamp first, like an event's,
    for the writer's latency figures).
    """
    try:
        return marshal.dumps((now, 0, batch))
    except ValueError:  # an unmarshallable value (or nesting too deep)
        pass
    out: list[Any] = []
    built = 0
    for item in batch:
        try:
            marshal.dumps(item)
        except ValueError:
            out.append((_timestamp(item), *prebuild(item)))
            built += 1
        else:
            out.append(item)
    return marshal.dumps((now, built, out))


def _timestamp(item: tuple[Any, ...]) -> float:
    try:
        return float(item[0])
    except (TypeError, ValueError, IndexError):
        return 0.0


def decode_batch(payload: bytes) -> tuple[float, int, list[Any]]:
    # Frames come from the gateway's own process, over a pipe only the two hold.
    return marshal.loads(payload)  # type: ignore[no-any-return]  # noqa: S302


# ------------------------------------------------------------------ start-up errors


def encode_error(exc: BaseException) -> bytes:
    """A start-up failure, as data the gateway turns back into the same exception type."""
    if isinstance(exc, ConfigError):
        return orjson.dumps({"type": "ConfigError", "key": exc.key, "message": exc.message})
    if isinstance(exc, OSError):
        return orjson.dumps({"type": "OSError", "errno": exc.errno, "strerror": exc.strerror, "filename": str(exc.filename) if exc.filename is not None else None})
    return orjson.dumps({"type": "other", "message": f"{type(exc).__name__}: {exc}"})


def decode_error(payload: bytes) -> BaseException:
    d = orjson.loads(payload)
    if d["type"] == "ConfigError":
        return ConfigError(d["key"], d["message"])
    if d["type"] == "OSError":
        if d["filename"] is not None:
            return OSError(d["errno"], d["strerror"], d["filename"])
        return OSError(d["errno"], d["strerror"])
    return ConfigError("audit.writer", f"the audit writer process failed to start: {d['message']}")
