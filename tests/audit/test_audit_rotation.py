"""Rotation (size, UTC day) and restarts keep one unbroken chain across files."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from gateway.audit import AuditTrail, verify_paths
from gateway.audit.verify import TORN_TAIL, WRONG_KEY
from gateway.settings import ConfigError

from .audit_helpers import BOTH_WRITERS, Clock, emit_requests, lines_of, records_of, user_records, wait_for, write_key


def _series(audit_dir: Path) -> list[Path]:
    return sorted(audit_dir.glob("audit-*.jsonl")) + [audit_dir / "audit.jsonl"]


@BOTH_WRITERS
def test_size_rotation_links_each_file_to_the_previous(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(max_bytes=4096)
    emit_requests(t, 80)
    assert t.close()
    files = _series(audit_dir)
    assert len(files) > 5
    for prev, cur in zip(files, files[1:]):
        assert prev.stat().st_size <= 4096
        first = records_of(cur)[0]
        assert first["event"]["action"] == "audit.rotated"
        assert first["event"]["reason"] == "size"
        last = records_of(prev)[-1]
        assert first["gateway"]["details"] == {"previous_file": prev.name, "previous_seq": last["seq"], "previous_chain": last["chain"]}
        assert first["seq"] == last["seq"] + 1
    assert [r["http"]["request"]["id"] for r in user_records(files)] == [f"req-{i:05d}" for i in range(80)]
    assert verify_paths([audit_dir], key).ok
    assert t.stats().rotations == len(files) - 1


@BOTH_WRITERS
def test_rotated_names_are_utc_sortable(make_trail, audit_dir: Path) -> None:
    t = make_trail(max_bytes=4096, clock=Clock())
    emit_requests(t, 30)
    t.close()
    names = [p.name for p in sorted(audit_dir.glob("audit-*.jsonl"))]
    assert names and names[0].startswith("audit-20251125T111700123456Z")
    # the frozen clock gives every rotation the same instant: names stay unique
    assert len(set(names)) == len(names)


@BOTH_WRITERS
def test_daily_rotation_at_utc_midnight(make_trail, audit_dir: Path, key: bytes) -> None:
    clock = Clock(1764115199.5)  # 2025-11-25T23:59:59.5Z
    t = make_trail(clock=clock)
    emit_requests(t, 3)
    assert wait_for(lambda: t.written == 3)
    clock.advance(1.0)  # 2025-11-26T00:00:00.5Z
    emit_requests(t, 2, start=3)
    assert t.close()
    old = sorted(audit_dir.glob("audit-*.jsonl"))
    assert len(old) == 1 and old[0].name.startswith("audit-20251126T000000")
    assert {r["@timestamp"][:10] for r in records_of(old[0])} == {"2025-11-25"}
    new = records_of(audit_dir / "audit.jsonl")
    assert new[0]["event"]["action"] == "audit.rotated" and new[0]["event"]["reason"] == "day"
    assert {r["@timestamp"][:10] for r in new} == {"2025-11-26"}
    assert verify_paths([audit_dir], key).ok


def test_no_daily_rotation_when_switched_off(make_trail, audit_dir: Path) -> None:
    clock = Clock(1764115199.5)
    t = make_trail(clock=clock, rotate_daily=False)
    emit_requests(t, 2)
    clock.advance(86400)
    emit_requests(t, 2)
    t.close()
    assert not list(audit_dir.glob("audit-*.jsonl"))


@BOTH_WRITERS
def test_restart_continues_the_chain_in_the_same_file(make_trail, audit_dir: Path, key: bytes) -> None:
    t1 = make_trail()
    emit_requests(t1, 5)
    assert t1.close()
    t2 = make_trail()
    assert t2.head[0] == 5
    emit_requests(t2, 5, start=5)
    assert t2.close()
    recs = records_of(audit_dir / "audit.jsonl")
    assert [r["seq"] for r in recs] == list(range(1, 11))
    res = verify_paths([audit_dir], key)
    assert res.ok and res.records == 10


@BOTH_WRITERS
def test_restart_after_torn_last_line_starts_a_new_file_and_says_why(make_trail, audit_dir: Path, key: bytes) -> None:
    t1 = make_trail()
    emit_requests(t1, 5)
    assert t1.close()
    p = audit_dir / "audit.jsonl"
    with open(p, "ab") as f:
        f.write(b'{"@timestamp":"2025-11-25T11:17:01.000000Z","seq":6,"ev')  # crash mid-write
    t2 = make_trail()
    emit_requests(t2, 2, start=5)
    assert t2.close()
    (old,) = sorted(audit_dir.glob("audit-*.jsonl"))
    first = records_of(p)[0]
    assert first["event"]["action"] == "audit.rotated" and first["event"]["reason"] == "torn_tail"
    assert first["gateway"]["details"]["previous_file"] == old.name
    assert first["gateway"]["details"]["previous_seq"] == 5
    # The series verifies; the torn line is reported as an explained warning.
    res = verify_paths([audit_dir], key)
    assert res.ok, res.problem
    assert [w.kind for w in res.warnings] == [TORN_TAIL]
    # The damaged file on its own: torn tail, not tampering.
    alone = verify_paths([old], key)
    assert alone.problem is not None and alone.problem.kind == TORN_TAIL and not alone.tampered


@BOTH_WRITERS
def test_restart_after_crash_between_rename_and_first_record(make_trail, audit_dir: Path, key: bytes) -> None:
    t1 = make_trail(max_bytes=4096)
    emit_requests(t1, 30)
    assert t1.close()
    # The process died right after renaming the current file, before the new
    # file got its first record.
    cur = audit_dir / "audit.jsonl"
    cur.rename(audit_dir / "audit-29991231T235959999999Z.jsonl")
    t2 = make_trail(max_bytes=4096)
    emit_requests(t2, 1, start=30)
    assert t2.close()
    first = records_of(cur)[0]
    assert first["event"]["reason"] == "resume"
    assert first["gateway"]["details"]["previous_file"] == "audit-29991231T235959999999Z.jsonl"
    res = verify_paths([audit_dir], key)
    assert res.ok, res.problem
    assert len(user_records(_series(audit_dir))) == 31
    # Auditors are told the writer resumed without a current file.
    assert [w.kind for w in res.warnings] == ["resumed"]


@BOTH_WRITERS
def test_key_change_starts_a_new_file_and_both_keys_verify(make_trail, audit_dir: Path, key: bytes, key_file: Path) -> None:
    t1 = make_trail()
    emit_requests(t1, 3)
    assert t1.close()
    new_key = write_key(key_file, secrets.token_bytes(32))
    t2 = make_trail()
    emit_requests(t2, 3, start=3)
    assert t2.close()
    assert records_of(audit_dir / "audit.jsonl")[0]["event"]["reason"] == "key_changed"
    assert verify_paths([audit_dir], [new_key, key]).ok
    res = verify_paths([audit_dir], new_key)
    assert res.problem is not None and res.problem.kind == WRONG_KEY


@BOTH_WRITERS
def test_second_writer_on_the_same_path_is_refused(make_trail) -> None:
    make_trail()
    with pytest.raises(ConfigError) as e:
        make_trail()
    assert e.value.key == "audit.path" and "another gateway process" in e.value.message


@BOTH_WRITERS
def test_moved_away_file_is_noticed_and_linked(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(flush_interval_s=0.01)
    emit_requests(t, 3)
    assert wait_for(lambda: t.written == 3)
    moved = audit_dir.parent / "stolen.jsonl"
    os.rename(audit_dir / "audit.jsonl", moved)
    assert wait_for(lambda: (audit_dir / "audit.jsonl").exists())
    emit_requests(t, 2, start=3)
    assert t.close()
    first = records_of(audit_dir / "audit.jsonl")[0]
    assert first["event"]["reason"] == "file_replaced"
    # Without the moved file the event is reported; with it the series is whole.
    res = verify_paths([audit_dir], key)
    assert res.ok and res.starts_after == ("audit.jsonl", 3)
    assert [w.kind for w in res.warnings] == ["file_replaced"]
    both = verify_paths([moved, audit_dir / "audit.jsonl"], key)
    assert both.ok and both.records == 6 and [w.kind for w in both.warnings] == ["file_replaced"]


@BOTH_WRITERS
def test_files_are_private(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    emit_requests(t, 1)
    t.close()
    assert (audit_dir / "audit.jsonl").stat().st_mode & 0o077 == 0
    assert audit_dir.stat().st_mode & 0o077 == 0


@BOTH_WRITERS
def test_lines_end_with_newline_and_nothing_is_torn_on_close(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    emit_requests(t, 50)
    t.close()
    data = (audit_dir / "audit.jsonl").read_bytes()
    assert data.endswith(b"\n") and len(lines_of(audit_dir / "audit.jsonl")) == 50


@BOTH_WRITERS
def test_trail_is_a_context_manager(settings_for, audit_dir: Path) -> None:
    with AuditTrail(settings_for()) as t:
        t.emit("gateway.start")
    assert not t.healthy
    assert records_of(audit_dir / "audit.jsonl")[0]["event"]["action"] == "gateway.start"
