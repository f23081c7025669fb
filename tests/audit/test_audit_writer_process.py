"""audit.writer = "process": the writer in its own process - death, restart, secrets, orphaning, fidelity."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import http
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.audit import AuditTrail, AuditUnavailable, verify_paths
from gateway.settings import AuditSettings, ConfigError, load_settings
from tests.helpers import make_config_dir

from .audit_helpers import T0, Clock, emit_requests, user_records, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def writer_mode() -> str:
    return "process"


def _child_pid(t: AuditTrail) -> int:
    child = t._writer.child  # type: ignore[union-attr]
    assert child is not None
    return child.proc.pid


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _series(audit_dir: Path) -> list[Path]:
    return sorted(audit_dir.glob("audit-*.jsonl")) + [audit_dir / "audit.jsonl"]


def test_writer_runs_in_another_process(make_trail) -> None:
    t = make_trail()
    pid = _child_pid(t)
    assert pid != os.getpid() and _alive(pid)
    assert "gateway.audit.writer_process" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert t.close()
    assert wait_for(lambda: not _alive(pid), timeout=5)


def test_killed_writer_fails_closed_then_restarts_with_the_chain_intact(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(flush_interval_s=0.01)
    emit_requests(t, 40)
    assert t.sync()
    seq_before = t.head[0]
    pid = _child_pid(t)
    with capture_logs() as logs:
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not t.healthy, timeout=5)
        assert "writer process" in (t.unhealthy_reason or "") and "signal 9" in (t.unhealthy_reason or "")
        with pytest.raises(AuditUnavailable):
            t.emit("auth.login", outcome="failure", user="mallory")  # nothing goes unrecorded
        assert wait_for(lambda: t.healthy, timeout=10)  # restarted after the retry interval
    assert _child_pid(t) != pid
    assert t.head[0] == seq_before  # the new writer continued from the file
    events = [e["event"] for e in logs]
    assert "audit_writer_process_died" in events and "audit_writer_process_restarted" in events
    died = next(e for e in logs if e["event"] == "audit_writer_process_died")
    assert died["log_level"] == "error" and died["lost"] == 0
    emit_requests(t, 10, start=40)
    assert t.close()
    assert t.stats().lost == 0 and t.stats().rejected == 1
    recs = user_records(_series(audit_dir))
    assert [r["http"]["request"]["id"] for r in recs] == [f"req-{i:05d}" for i in range(50)]
    res = verify_paths([audit_dir], key)
    assert res.ok, res.problem
    assert res.last_seq == t.head[0] == 50


def test_events_in_flight_when_the_writer_dies_are_counted_lost(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(flush_interval_s=0.01)
    emit_requests(t, 5)
    assert t.sync()
    pid = _child_pid(t)
    os.kill(pid, signal.SIGSTOP)  # shipped events reach the pipe but are never written
    try:
        emit_requests(t, 20, start=5)
        assert wait_for(lambda: len(t._queue) == 0)  # all shipped
        assert t.queue_depth == 20  # in flight: accepted, not yet on disk
    finally:
        os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: t.stats().lost == 20, timeout=5)
    assert wait_for(lambda: t.healthy, timeout=10)
    emit_requests(t, 3, start=25)
    assert not t.close()  # not every accepted event reached the file, and close() says so
    assert t.written == 8 and t.accepted == 28
    assert len(user_records(_series(audit_dir))) == 8
    assert verify_paths([audit_dir], key).ok


def test_queued_events_wait_for_the_restarted_writer(make_trail, audit_dir: Path, key: bytes) -> None:
    """Events accepted but not yet shipped when the writer dies are not lost: the next writer gets them."""
    t = make_trail(flush_interval_s=0.01)
    pid = _child_pid(t)
    with t._lock:  # the shipper takes batches under this lock: the events stay queued here
        emit_requests(t, 30)
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not _alive(pid))
        time.sleep(0.1)  # the report reader sees the pipe close
    w = t._writer
    assert wait_for(lambda: w.child is not None and w.child.proc.pid != pid and t.healthy, timeout=10)  # type: ignore[union-attr]
    assert t.close(timeout=10)
    assert t.written == 30
    assert len(user_records(_series(audit_dir))) == 30
    assert verify_paths([audit_dir], key).ok


def test_writer_that_cannot_come_back_keeps_the_trail_closed_until_it_can(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(flush_interval_s=0.01)
    emit_requests(t, 3)
    assert t.sync()
    moved = audit_dir.with_name("audit.moved")
    os.rename(audit_dir, moved)
    audit_dir.write_text("not a directory\n")  # a new writer cannot open the trail here
    os.kill(_child_pid(t), signal.SIGKILL)
    assert wait_for(lambda: "cannot restart" in (t.unhealthy_reason or ""), timeout=10)
    assert "audit.path" in (t.unhealthy_reason or "")
    with pytest.raises(AuditUnavailable):
        t.emit("auth.login", outcome="failure", user="mallory")
    audit_dir.unlink()
    os.rename(moved, audit_dir)
    assert wait_for(lambda: t.healthy, timeout=15)  # retried with back-off, then continued the chain
    emit_requests(t, 2, start=3)
    assert t.close()
    assert len(user_records([audit_dir / "audit.jsonl"])) == 5
    assert verify_paths([audit_dir], key).ok


def test_key_is_not_in_the_writer_process_command_line_or_environment(make_trail, key: bytes) -> None:
    t = make_trail()
    pid = _child_pid(t)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    for form in (key, key.hex().encode(), key.hex().upper().encode()):
        assert form not in cmdline and form not in environ
    assert t.close()


def test_writer_ignores_interrupts_until_the_gateway_closes(make_trail, audit_dir: Path) -> None:
    """Ctrl-C or a group-wide SIGTERM must not end the writer before the gateway has shipped everything."""
    t = make_trail()
    pid = _child_pid(t)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(pid, sig)
    time.sleep(0.2)
    assert _alive(pid) and t.healthy
    emit_requests(t, 5)
    assert t.close()
    assert len(user_records([audit_dir / "audit.jsonl"])) == 5


_GATEWAY_SCRIPT = """
import os, sys, time
from pathlib import Path
from gateway.settings import AuditSettings
from gateway.audit import AuditTrail
t = AuditTrail(AuditSettings(path=Path(sys.argv[1]), key_file=Path(sys.argv[2]), writer="process"))
t.start()
for i in range(100):
    t.emit("http.request", status=200, request_id=str(i))
assert t.sync(timeout=10)
print("WRITER", t._writer.child.proc.pid, flush=True)
time.sleep(60)
"""


def test_writer_exits_when_the_gateway_dies(tmp_path: Path, key_file: Path, key: bytes) -> None:
    audit = tmp_path / "orphan" / "audit.jsonl"
    gw = subprocess.Popen([sys.executable, "-c", _GATEWAY_SCRIPT, str(audit), str(key_file)], cwd=ROOT, stdout=subprocess.PIPE,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        for line in gw.stdout:  # type: ignore[union-attr]
            if line.startswith(b"WRITER "):
                break
        else:
            pytest.fail("the gateway script did not start its writer")
        child = int(line.split()[1])
        assert _alive(child)
        gw.kill()  # no close(), no atexit: the pipe's end is all the writer sees
        gw.wait()
        assert wait_for(lambda: not _alive(child), timeout=10)
    finally:
        if gw.poll() is None:
            gw.kill()
            gw.wait()
    assert verify_paths([audit], key).ok
    assert len(user_records([audit])) == 100


@dataclasses.dataclass
class _Point:
    x: int
    password: str


class _Colour(enum.Enum):
    RED = "red"


class _Tag(str):
    pass


def _odd_events(t: AuditTrail) -> None:
    """Events with values marshal cannot carry (built in the gateway) next to ordinary ones (built in the writer)."""
    emit_requests(t, 3)
    deep: dict = {}
    node = deep
    for _ in range(20):
        node["d"] = {}
        node = node["d"]
    t.emit("http.request", status=http.HTTPStatus.NOT_FOUND, path=Path("/a?token=abcdefgh1234"), user=_Tag("bob"),
           details={"p": _Point(1, "hunter2"), "c": _Colour.RED, "when": datetime.datetime(2025, 1, 2, 3, 4, 5),
                    "id": uuid.UUID(int=7), "raw": b"\x00\x01", "buf": bytearray(3), "set": {3, 1, 2}, "err": ValueError("password=x"),
                    1: "int key", "1": "str key", "deep": deep})  # fmt: skip
    t.emit("http.request", status=200, details={"big": 1 << 70})  # no JSON for it: the minimal record
    t.emit("auth.login", outcome="failure", user="carol", groups=["b", "a"], reason=("token=s3cr3t-value",), attempts={"n": 2})
    t.emit("policy.changed", details={"diff": "x\ud800y", "files": ("a", "b"), "frozen": frozenset({"z"})})
    emit_requests(t, 2, start=3)


def test_process_writer_writes_the_same_bytes_as_the_thread_writer(tmp_path: Path, key_file: Path) -> None:
    files = {}
    for mode in ("thread", "process"):
        settings = AuditSettings(path=tmp_path / mode / "audit.jsonl", key_file=key_file, writer=mode)
        t = AuditTrail(settings, replica_id="gw-1", clock=Clock(T0))
        t.start()
        _odd_events(t)
        assert t.close()
        files[mode] = settings.path.read_bytes()
    assert files["process"] == files["thread"]
    assert b"hunter2" not in files["process"] and b"s3cr3t-value" not in files["process"]


def test_start_up_errors_name_the_key_as_in_thread_mode(make_trail, tmp_path: Path) -> None:
    t1 = make_trail()
    with pytest.raises(ConfigError) as e:
        make_trail()  # the lock is held by the first trail's writer process
    assert e.value.key == "audit.path" and "another gateway process" in e.value.message
    bad_key = tmp_path / "short.key"
    bad_key.write_text("abc")
    bad_key.chmod(0o600)
    with pytest.raises(ConfigError) as e:
        make_trail(key_file=bad_key)
    assert e.value.key == "audit.key_file"
    assert t1.close()


def test_writer_process_starts_quickly(make_trail) -> None:
    t0 = time.monotonic()
    t = make_trail()
    started = time.monotonic() - t0
    t0 = time.monotonic()
    assert t.close()
    closed = time.monotonic() - t0
    # Typically ~0.15 s and ~0.02 s on a 2-core machine; generous for a loaded one.
    assert started < 3.0 and closed < 2.0, (started, closed)


def test_writer_setting_defaults_to_process_and_is_validated(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path)
    assert load_settings(cfg, environ={}).audit.writer == "process"
    assert load_settings(cfg, environ={"GATEWAY_AUDIT_WRITER": "thread"}).audit.writer == "thread"
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={"GATEWAY_AUDIT_WRITER": "fork"})
    assert e.value.key == "audit.writer"


def test_writer_setting_in_the_file(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path, audit_extra='writer = "threads"')
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={})
    assert e.value.key == "audit.writer" and "process" in e.value.message


def test_a_steady_stream_is_shipped_in_batches_not_event_by_event(make_trail, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each frame shipped costs the request path a GIL hand-off: a shipper that
    # shipped again whenever anything was queued sent small frames back to back.
    from gateway.audit import shipper

    frames: list[tuple[float, int]] = []
    send = shipper.wire.send_frame

    def counting(fd: int, tag: bytes, payload: bytes) -> None:
        if tag == shipper.wire.BATCH:
            frames.append((time.monotonic(), len(shipper.wire.decode_batch(payload)[2])))
        send(fd, tag, payload)

    monkeypatch.setattr(shipper.wire, "send_frame", counting)
    t = make_trail()
    deadline = time.perf_counter() + 0.4
    n = 0
    # ~0.4 s of requests, one every 20 us, from a thread that lets go of the
    # GIL between them as a busy event loop does (uvloop polls without it).
    while (now := time.perf_counter()) < deadline:
        t.emit("http.request", path=f"/p{n}", status=200)
        n += 1
        while time.perf_counter() < now + 0.00002:
            time.sleep(0)
    assert t.close()
    assert t.written == n and n > 1000
    # Every frame but the one close() sends at once: a full batch, or the
    # events of one collection interval.
    for (t0, _), (t1, size) in zip(frames[:-2], frames[1:-1]):
        assert size >= shipper.WAKE_AT or t1 - t0 >= 0.9 * shipper.BATCH_DELAY_S, (size, t1 - t0, len(frames))
