"""The integrity badge's verification: intact, edited (naming the record), torn, several chains, cached."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gateway.audit import load_key
from gateway.audit.integrity import IntegrityMonitor
from tests.tools_audit.tools_audit_support import Clock, sample_events, write_trail


def _edit_middle_byte(path: Path) -> int:
    """Rewrite one byte of a middle line in place; returns that line's number."""
    # File times move with the kernel's clock tick (a few ms): an edit in the
    # same tick as the last write would leave them as they were.
    time.sleep(0.03)
    lines = path.read_bytes().splitlines(keepends=True)
    n = len(lines) // 2
    offset = sum(len(x) for x in lines[:n])
    at = offset + lines[n].index(b'"action":"') + len(b'"action":"')
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)
        f.seek(at)
        f.write(b"X" if old != b"X" else b"Y")
    return n + 1


def test_intact_then_edited_names_the_record(trail, audit_dir: Path, key_file: Path):
    path = trail(sample_events(300))
    mon = IntegrityMonitor(audit_dir, key=lambda: load_key(key_file), min_interval_s=0)
    st = mon.status(wait=10)
    assert st.state == "ok" and st.records == 300 and st.current and st.headline.startswith("Chain intact")
    line = _edit_middle_byte(path)
    st = mon.status(wait=10)
    assert st.state == "broken"
    assert st.problem is not None and st.problem.kind == "edited" and st.problem.line == line
    assert f"audit.jsonl:{line}" in st.headline


def test_unchanged_files_are_not_verified_again(trail, audit_dir: Path, key_file: Path):
    trail(sample_events(50))
    mon = IntegrityMonitor(audit_dir, key=lambda: load_key(key_file), min_interval_s=0)
    first = mon.status(wait=10)
    again = mon.status(wait=10)
    assert again.checked_at == first.checked_at and not again.running


def test_changes_within_the_interval_wait_unless_forced(trail, audit_dir: Path, key_file: Path):
    path = trail(sample_events(50))
    mon = IntegrityMonitor(audit_dir, key=lambda: load_key(key_file), min_interval_s=3600)
    assert mon.status(wait=10).state == "ok"
    _edit_middle_byte(path)
    lazy = mon.status(wait=1)
    assert lazy.state == "ok" and not lazy.current  # shown as not covering the newest bytes
    assert mon.status(force=True, wait=10).state == "broken"


def test_torn_tail_is_incomplete_not_tampered(trail, audit_dir: Path, key_file: Path):
    path = trail(sample_events(20))
    with open(path, "ab") as f:
        f.write(b'{"@timestamp":"2025-')
    st = IntegrityMonitor(audit_dir, key=lambda: load_key(key_file), min_interval_s=0).status(wait=10)
    assert st.state == "incomplete" and st.problem is not None and st.problem.kind == "torn_tail"


def test_a_broken_chain_among_several_is_reported(audit_dir: Path, key_file: Path):
    a = write_trail(audit_dir / "gw-1" / "audit.jsonl", key_file, sample_events(30), clock=Clock(), replica_id="gw-1")
    write_trail(audit_dir / "gw-2" / "audit.jsonl", key_file, sample_events(30), clock=Clock(), replica_id="gw-2")
    mon = IntegrityMonitor(audit_dir, key=lambda: load_key(key_file), min_interval_s=0)
    st = mon.status(wait=10)
    assert st.state == "ok" and len(st.chains) == 2 and st.records == 60
    _edit_middle_byte(a)
    st = mon.status(wait=10)
    assert st.state == "broken" and st.problem is not None and st.problem.file == a


def test_a_missing_key_is_shown_not_raised(trail, audit_dir: Path, tmp_path: Path):
    trail(sample_events(5))
    st = IntegrityMonitor(audit_dir, key=lambda: load_key(tmp_path / "nope.key"), min_interval_s=0).status(wait=10)
    assert st.state == "unavailable" and "nope.key" in (st.error or "")


def test_an_edit_is_seen_even_with_size_and_mtime_put_back(trail, audit_dir: Path, key_file: Path):
    path = trail(sample_events(40))
    mon = IntegrityMonitor(audit_dir, key=lambda: load_key(key_file), min_interval_s=0)
    assert mon.status(wait=10).state == "ok"
    before = path.stat()
    _edit_middle_byte(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert mon.status(wait=10).state == "broken"


def test_old_results_are_verified_again(trail, audit_dir: Path, key_file: Path):
    trail(sample_events(10))
    mon = IntegrityMonitor(audit_dir, key=lambda: load_key(key_file), min_interval_s=0, max_age_s=0.05)
    first = mon.status(wait=10)
    time.sleep(0.1)
    assert mon.status(wait=10).checked_at != first.checked_at
