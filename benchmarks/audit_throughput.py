"""Audit trail throughput and verification speed, with plain-logging references.

    .venv/bin/python benchmarks/audit_throughput.py [--events 200000] [--verify-events 1000000] [--repeat 3]

1. events/s through the full pipeline to disk - AuditTrail.emit() -> queue ->
   ECS mapping -> redaction -> seq + HMAC chain -> batched write(2), timed
   from the first emit to close() returning (everything written and fsynced),
   with the writer in its own process (``audit.writer = "process"``, the
   default: the gateway process queues and ships marshalled batches, the
   writer process maps, redacts, chains and writes on the other core) and,
   for comparison, in a thread of the emitting process (``"thread"``: both
   share one GIL) - side by side, same events, with
   * a plain ``logging`` FileHandler writing ``json.dumps`` of the flat event,
   * structlog's default JSON renderer (``TimeStamper`` + ``JSONRenderer``)
     writing to a file,
   neither of which maps, redacts or chains anything, and
   * the floor: a bare loop that orjson-dumps the flat event, HMAC-chains
     the line and writes in batches (no ECS record, no redaction, no queue,
     no second thread) - what the issue measured at about 290,000/s.
2. ``verify_paths`` over a trail of ``--verify-events`` events (the
   throughput trail, extended by a restarted trail, so it also crosses a
   restart and size rotations).

Targets: >= 250,000 events/s with the chain; 1,000,000 events verified in < 3 s.
The contenders run interleaved, ``--repeat`` rounds.  Reported: the best and
the median round, the CPU time per event (all threads, and the writer
process for the process mode, its ~0.1 s start-up included: CPU time adds up
over both cores, so it can exceed the wall time; far less sensitive than
wall time to other work on the machine), and the trail's speed relative to ``logging`` + ``json.dumps``
per round (the robust figure on a shared machine: 250,000/s is about 2.9x
the issue's 85,000/s for that reference).
"""

from __future__ import annotations

import argparse
import binascii
import json
import logging
import os
import platform
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import structlog  # noqa: E402

from gateway.audit import AuditTrail, load_key, verify_paths  # noqa: E402
from gateway.audit.chain import CHAIN_KEY, GENESIS, LINE_END, Mac  # noqa: E402
from gateway.settings import AuditSettings  # noqa: E402

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
GROUPS = frozenset({"employees", "sales"})


def fields(i: int) -> dict:
    return dict(
        request_id=f"{i:032x}",
        client_ip="10.1.2.3",
        user="alice",
        email="alice@example.com",
        groups=GROUPS,
        auth_method="session",
        session_id="8f3c2a9e41d0",
        method="GET",
        path="/sales",
        tool="sales",
        status=200,
        bytes=12345,
        duration_ms=1.234,
        decision="allow",
        rule_id="sales-employees",
        policy_version="v7",
        user_agent=UA,
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the contenders


def run_trail(n: int, folder: Path, key_file: Path, start: int = 0, writer: str = "process") -> tuple[float, float]:
    """(wall seconds, producer-thread CPU seconds) for n events through AuditTrail, to disk."""
    # The access log (a rendering of the written lines on stderr, not part of
    # the record) is off: at these rates it would print a million lines.
    settings = AuditSettings(path=folder / "audit.jsonl", key_file=key_file, writer=writer, access_log=False)
    trail = AuditTrail(settings, replica_id="bench")
    trail.start()
    emit = trail.emit
    high = settings.queue_size - 512
    t0 = time.perf_counter()
    c0 = time.thread_time()
    for i in range(start, start + n):
        if not i & 255:
            # Back-pressure like a busy server sees it: wait for the writer
            # instead of filling the bounded queue (which would fail closed).
            while trail.queue_depth > high:
                time.sleep(0.0002)
        emit("http.request", **fields(i))
    caller = time.thread_time() - c0
    assert trail.close(timeout=120), "trail lost events"
    elapsed = time.perf_counter() - t0
    assert trail.written == n, (trail.written, n)
    return elapsed, caller


def run_logging(n: int, folder: Path) -> float:
    path = folder / "logging.jsonl"
    logger = logging.getLogger("bench.audit.logging")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    t0 = time.perf_counter()
    for i in range(n):
        ev = fields(i)
        ev["groups"] = sorted(ev["groups"])
        logger.info(json.dumps({"@timestamp": time.time(), "event": "http.request", **ev}))
    handler.flush()
    handler.close()
    logger.removeHandler(handler)
    _fsync(path)
    return time.perf_counter() - t0


def run_structlog(n: int, folder: Path) -> float:
    path = folder / "structlog.jsonl"
    with open(path, "w") as fh:
        log = structlog.wrap_logger(
            structlog.WriteLogger(fh),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
        )
        t0 = time.perf_counter()
        for i in range(n):
            ev = fields(i)
            ev["groups"] = sorted(ev["groups"])
            log.info("http.request", **ev)
        fh.flush()
    _fsync(path)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ main


def run_orjson_chain(n: int, folder: Path, key: bytes) -> float:
    """The floor: orjson + HMAC chain + batched writes, in one thread, nothing else."""
    path = folder / "chain-floor.jsonl"
    mac = Mac(key)
    icopy, ocopy, hexlify = mac._inner.copy, mac._outer.copy, binascii.hexlify
    chain = GENESIS
    buf: list[bytes] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    t0 = time.perf_counter()
    for i in range(n):
        ev = fields(i)
        ev["groups"] = sorted(ev["groups"])
        prefix = orjson.dumps({"@timestamp": time.time(), "seq": i + 1, "event": "http.request", **ev})[:-1]
        h = icopy()
        h.update(chain)
        h.update(prefix)
        o = ocopy()
        o.update(h.digest())
        chain = hexlify(o.digest())
        buf += (prefix, CHAIN_KEY, chain, LINE_END)
        if len(buf) >= 4 * 4096:
            os.write(fd, b"".join(buf))
            buf.clear()
    os.write(fd, b"".join(buf))
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - t0


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its ended children (the writer process)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), CPU seconds it took - all threads, plus a writer process it started and ended)."""
    c0 = _cpu()
    r = fn()
    return r, _cpu() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--verify-events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed afterwards)")
    a = ap.parse_args()
    n = a.events
    work = a.dir or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    key_file = work / "audit.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    os.chmod(key_file, 0o600)
    print(f"Python {platform.python_version()}, orjson {orjson.__version__}, structlog {structlog.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other work on this machine slows every row alike)")  # fmt: skip
    print(f"{n:,} http.request events per run, {a.repeat} interleaved rounds; times include fsync at the end\n")
    key = load_key(key_file)

    names = ("trail", "thread", "logging", "structlog", "floor")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    producer: list[float] = []
    producer_thread: list[float] = []
    for r in range(a.repeat):
        d = work / f"trail-{r}"
        dt = work / f"thread-{r}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(dt, ignore_errors=True)
        runs = {
            "trail": lambda d=d: run_trail(n, d, key_file),
            "thread": lambda dt=dt: run_trail(n, dt, key_file, writer="thread"),
            "logging": lambda: run_logging(n, work),
            "structlog": lambda: run_structlog(n, work),
            "floor": lambda: run_orjson_chain(n, work, key),
        }
        # Interleaved so a noisy neighbour hurts them alike.
        for name in names:
            res, c = timed(runs[name])
            if name in ("trail", "thread"):
                res, caller = res
                (producer if name == "trail" else producer_thread).append(caller)
            wall[name].append(res)
            cpu[name].append(c)
    rows = [
        ("trail", "AuditTrail, writer process (default)"),
        ("thread", "AuditTrail, writer thread (audit.writer=thread)"),
        ("logging", "reference: logging FileHandler + json.dumps"),
        ("structlog", "reference: structlog TimeStamper + JSONRenderer"),
        ("floor", "floor: orjson + HMAC chain + batched writes, flat"),
    ]
    print(f"{'pipeline':<52}{'best/s':>10}{'median/s':>10}{'us/event':>10}{'CPU us/ev':>11}")
    for key_, label in rows:
        tb, tm, cm = min(wall[key_]), statistics.median(wall[key_]), statistics.median(cpu[key_])
        print(f"{label:<52}{n / tb:>10,.0f}{n / tm:>10,.0f}{tb / n * 1e6:>10.2f}{cm / n * 1e6:>11.2f}")

    def ratio(ref: str) -> str:
        per_round = statistics.median(r / t for r, t in zip(wall[ref], wall["trail"]))
        return (f"{min(wall[ref]) / min(wall['trail']):.2f}x best vs best, {per_round:.2f}x median of rounds, "
                f"{statistics.median(cpu[ref]) / statistics.median(cpu['trail']):.2f}x in CPU time")  # fmt: skip

    thread_ratio = statistics.median(t / r for r, t in zip(wall["trail"], wall["thread"]))
    print("\n(both AuditTrail rows: ECS mapping + redaction + seq + HMAC chain + batched writes, to disk; the access-log rendering is off)")
    print(f"AuditTrail vs logging+json.dumps: {ratio('logging')}")
    print(f"AuditTrail vs structlog JSONRenderer: {ratio('structlog')}")
    floor = statistics.median(r / t for r, t in zip(wall["logging"], wall["floor"]))
    print(f"(the floor runs at {floor:.2f}x logging+json.dumps in the same rounds)")
    print(f"writer process vs writer thread: {thread_ratio:.2f}x (median of rounds)")
    print(f"producer thread CPU: {statistics.median(producer) / n * 1e6:.2f} us/event with the writer process, "
          f"{statistics.median(producer_thread) / n * 1e6:.2f} with the writer thread (building the fields dict included; "
          "mapping, redaction, chain and I/O run in the writer)")  # fmt: skip
    rate = n / min(wall["trail"])
    print(f"target >= 250,000 events/s with the chain: {'MET' if rate >= 250_000 else 'NOT MET'} ({rate:,.0f}/s best, {n / statistics.median(wall['trail']):,.0f}/s median)")
    # The issue measured its logging reference at 85,000/s: on a slower
    # machine the same target is the same multiple of that reference.
    scaled = statistics.median(r / t for r, t in zip(wall["logging"], wall["trail"]))
    print(f"same target relative to this machine (250,000 / 85,000 = {250 / 85:.2f}x logging+json.dumps): "
          f"{'MET' if scaled >= 250 / 85 else 'NOT MET'} ({scaled:.2f}x, median of rounds)\n")

    # ---------------------------------------------------------- verify
    vdir = work / f"trail-{wall['trail'].index(min(wall['trail']))}"
    for d in [*work.glob("trail-*"), *work.glob("thread-*")]:
        if d != vdir:
            shutil.rmtree(d, ignore_errors=True)
    have = n
    if a.verify_events > have:
        # Restart on the same folder: the chain continues (and rotates at 100 MiB).
        t0 = time.perf_counter()
        run_trail(a.verify_events - have, vdir, key_file, start=have)
        print(f"(extended the trail to {a.verify_events:,} events in {time.perf_counter() - t0:.1f} s)")
    files = sorted(vdir.glob("*.jsonl"))
    size = sum(f.stat().st_size for f in files)
    # Warm the page cache once so the timing measures verification, not the disk.
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    times = []
    res = None
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        res = verify_paths([vdir], key)
        times.append(time.perf_counter() - t0)
    assert res is not None and res.ok, res.problem if res else None
    tv = min(times)
    events = res.records - (len(res.files) - 1)
    print(f"verify: {res.summary()} ({events:,} events + {len(res.files) - 1} rotation records, {size / 1e6:,.0f} MB)")
    print(f"verify time: {tv:.2f} s, {res.records / tv:,.0f} records/s -> 1,000,000 events in {1e6 / (res.records / tv):.2f} s")
    print(f"target 1,000,000 events verified in < 3 s: {'MET' if 1e6 / (res.records / tv) < 3 else 'NOT MET'}")
    if a.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
