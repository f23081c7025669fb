"""When the trail cannot write: fail closed (emit raises), or fail open (drop loudly); never lose accepted events."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from structlog.testing import capture_logs

from gateway.audit import AuditTrail, AuditUnavailable, verify_paths
from gateway.settings import AuditSettings, ConfigError

from .audit_helpers import BOTH_WRITERS, emit_requests, lines_of, user_records, wait_for


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem, so 'disk full' is the kernel's ENOSPC, not a simulation."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@BOTH_WRITERS
def test_disk_full_fails_closed_then_recovers_without_losing_or_tearing(small_tmpfs: Path, key_file: Path, key: bytes, writer_mode: str) -> None:
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * 44 * 1024)
    t = AuditTrail(AuditSettings(path=small_tmpfs / "audit" / "audit.jsonl", key_file=key_file, flush_interval_s=0.01, writer=writer_mode))
    t.start()
    accepted = 0
    try:
        for i in range(2000):
            try:
                emit_requests(t, 1, start=i)
            except AuditUnavailable:
                break
            accepted += 1
            if i % 10 == 9:
                wait_for(lambda: t.queue_depth == 0 or not t.healthy, timeout=2)
        assert wait_for(lambda: not t.healthy, timeout=5), "disk never filled"
        assert "No space left" in (t.unhealthy_reason or "")
        with pytest.raises(AuditUnavailable) as e:
            t.emit("auth.login", outcome="failure", user="bob")
        assert "No space left" in e.value.reason
        assert t.stats().rejected >= 1

        filler.unlink()  # space comes back: the writer retries and recovers by itself
        assert wait_for(lambda: t.healthy, timeout=5)
        t.emit("gateway.stop")
        accepted += 1
    finally:
        assert t.close()
    files = [small_tmpfs / "audit" / "audit.jsonl"]
    assert len(user_records(files)) == accepted == t.written
    assert (small_tmpfs / "audit" / "audit.jsonl").read_bytes().endswith(b"\n")
    assert verify_paths(files, key).ok


def _break_parent(audit_dir: Path) -> Path:
    """Replace the audit folder with a plain file: the writer can no longer reach its path."""
    moved = audit_dir.with_name("audit.moved")
    os.rename(audit_dir, moved)
    audit_dir.write_text("not a directory\n")
    return moved


@BOTH_WRITERS
def test_unwritable_path_fails_closed(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(flush_interval_s=0.01)
    emit_requests(t, 3)
    assert wait_for(lambda: t.written == 3)
    assert t.healthy
    moved = _break_parent(audit_dir)
    # (A check between the rename and the new file sees ENOENT first; the retry then reports ENOTDIR.)
    assert wait_for(lambda: "Not a directory" in (t.unhealthy_reason or ""))
    assert not t.healthy
    with pytest.raises(AuditUnavailable):
        emit_requests(t, 1)
    t.close(timeout=0.2)
    # What was accepted before the failure is on disk and intact.
    assert len(lines_of(moved / "audit.jsonl")) == 3
    assert verify_paths([moved], key).ok


@BOTH_WRITERS
def test_fail_open_drops_with_a_logged_error_and_a_counter(make_trail, audit_dir: Path) -> None:
    t = make_trail(flush_interval_s=0.01, fail_closed=False)
    emit_requests(t, 1)
    assert wait_for(lambda: t.written == 1)
    _break_parent(audit_dir)
    assert wait_for(lambda: "Not a directory" in (t.unhealthy_reason or ""))
    with capture_logs() as logs:
        emit_requests(t, 5)  # does not raise
    assert t.dropped == 5
    dropped = [e for e in logs if e["event"] == "audit_event_dropped"]
    assert dropped and dropped[0]["log_level"] == "error" and "Not a directory" in dropped[0]["reason"]
    t.close(timeout=0.2)


@BOTH_WRITERS
def test_queue_full_fails_closed_and_accepted_events_still_land(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(queue_size=16)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # keep the writer thread off the CPU while we flood
    accepted = 0
    try:
        with pytest.raises(AuditUnavailable) as e:
            for i in range(100_000):
                emit_requests(t, 1, start=i)
                accepted += 1
    finally:
        sys.setswitchinterval(old)
    assert "queue full" in e.value.reason
    assert accepted >= 16
    assert t.close()
    assert len(lines_of(audit_dir / "audit.jsonl")) == accepted
    assert verify_paths([audit_dir], key).ok


@BOTH_WRITERS
def test_not_started_and_closed_trails_refuse(settings_for) -> None:
    t = AuditTrail(settings_for())
    assert not t.healthy and t.unhealthy_reason == "not started"
    with pytest.raises(AuditUnavailable):
        t.emit("gateway.start")
    t.start()
    assert t.healthy
    t.close()
    assert t.unhealthy_reason == "closed"
    with pytest.raises(AuditUnavailable):
        t.emit("gateway.stop")


@BOTH_WRITERS
def test_start_names_the_bad_key(settings_for, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        AuditTrail(settings_for(key_file=tmp_path / "missing.key")).start()
    assert e.value.key == "audit.key_file"


@BOTH_WRITERS
def test_start_names_the_bad_path(settings_for, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ConfigError) as e:
        AuditTrail(settings_for(path=blocker / "audit.jsonl")).start()
    assert e.value.key == "audit.path"


@BOTH_WRITERS
def test_a_second_gateway_on_the_same_trail_is_refused(make_trail, settings_for, audit_dir: Path, key: bytes) -> None:
    # Two writers would interleave two chains in one file: the trail is locked.
    first = make_trail()
    emit_requests(first, 3)
    second = AuditTrail(settings_for(), lock_wait_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        second.start()
    assert e.value.key == "audit.path" and "in use by another gateway process" in e.value.message
    assert time.monotonic() - t0 >= 0.3  # it waited for the holder first
    emit_requests(first, 2, start=3)
    assert first.close()
    assert verify_paths([audit_dir], key).ok and len(user_records([audit_dir / "audit.jsonl"])) == 5


@BOTH_WRITERS
def test_a_restarted_gateway_waits_for_the_previous_writer_to_let_go(make_trail, settings_for, audit_dir: Path, key: bytes) -> None:
    # After a SIGKILL the old writer process drains for a few seconds holding
    # the lock: the new gateway must wait for it rather than fail to start.
    first = make_trail()
    emit_requests(first, 3)
    closer = threading.Timer(0.5, first.close)
    closer.start()
    second = AuditTrail(settings_for(), lock_wait_s=10.0)
    with capture_logs() as logs:
        second.start()
    closer.join()
    try:
        assert any(e["event"] == "audit_trail_locked_waiting" for e in logs), logs
        emit_requests(second, 2, start=3)
    finally:
        assert second.close()
    assert verify_paths([audit_dir], key).ok  # one chain, continued across the hand-over
    assert [r["http"]["request"]["id"] for r in user_records([audit_dir / "audit.jsonl"])] == [f"req-{i:05d}" for i in range(5)]


@BOTH_WRITERS
def test_close_drains_every_event_from_many_threads(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(queue_size=1000, max_bytes=256 * 1024)
    counts = [0] * 4
    go = threading.Event()

    def worker(n: int) -> None:
        go.wait()
        i = 0
        while True:
            try:
                emit_requests(t, 1, start=n * 1_000_000 + i, user=f"user{n}")
            except AuditUnavailable as exc:
                if "closed" in exc.reason:
                    return
                time.sleep(0.001)  # queue full: back off, then try again
                continue
            counts[n] += 1
            i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    go.set()
    assert wait_for(lambda: sum(counts) >= 8_000, timeout=30)
    assert t.close(timeout=10)  # while the threads are still emitting
    for th in threads:
        th.join()
    files = sorted(audit_dir.glob("audit-*.jsonl")) + [audit_dir / "audit.jsonl"]
    on_disk = user_records(files)
    assert len(on_disk) == sum(counts) == t.written == t.accepted
    for n in range(4):  # per thread, in emit order
        ids = [r["http"]["request"]["id"] for r in on_disk if r["user"]["name"] == f"user{n}"]
        assert ids == [f"req-{n * 1_000_000 + i:05d}" for i in range(counts[n])]
    res = verify_paths([audit_dir], key)
    assert res.ok and res.records == len(on_disk) + len(files) - 1


@BOTH_WRITERS
def test_process_exit_without_close_still_drains(tmp_path: Path, key_file: Path, key: bytes, writer_mode: str) -> None:
    audit = tmp_path / "exit-audit"
    code = (
        "from pathlib import Path\n"
        "from gateway.settings import AuditSettings\n"
        "from gateway.audit import AuditTrail\n"
        f"t = AuditTrail(AuditSettings(path=Path({str(audit / 'audit.jsonl')!r}), key_file=Path({str(key_file)!r}), writer={writer_mode!r}))\n"
        "t.start()\n"
        "for i in range(3000):\n"
        "    t.emit('http.request', status=200, request_id=str(i))\n"
        # no close(): the app's shutdown never ran
    )
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(lines_of(audit / "audit.jsonl")) == 3000
    assert verify_paths([audit], key).ok
