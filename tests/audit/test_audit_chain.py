"""The HMAC chain: the algorithm as documented, and every kind of tampering caught and named."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

import orjson
import pytest

from gateway.audit import GENESIS, load_key, parse_key, verify_paths
from gateway.audit.chain import Mac, Signer
from gateway.audit.verify import (
    EDITED,
    LINK_MISMATCH,
    MALFORMED,
    MISSING,
    MISSING_FILE,
    REORDERED,
    TORN_TAIL,
    TRUNCATED,
    WRONG_KEY,
)
from gateway.settings import ConfigError

from .audit_helpers import BOTH_WRITERS, emit_requests, lines_of, records_of


def _write(make_trail, n: int = 10, **kw) -> None:
    t = make_trail(**kw)
    emit_requests(t, n)
    assert t.close()


def _rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


@BOTH_WRITERS
def test_chain_is_hmac_of_previous_chain_and_line_prefix(make_trail, audit_dir: Path, key: bytes) -> None:
    """The documented algorithm, recomputed with nothing but the stdlib."""
    _write(make_trail, 5)
    prev = b"0" * 64
    for line in lines_of(audit_dir / "audit.jsonl"):
        m = re.fullmatch(rb'(\{.*),"chain":"([0-9a-f]{64})"\}', line)
        assert m, line
        expected = hmac.new(key, prev + m.group(1), hashlib.sha256).hexdigest().encode()
        assert m.group(2) == expected
        prev = m.group(2)
    assert GENESIS == b"0" * 64


def test_fast_mac_equals_stdlib_hmac() -> None:
    for klen in (16, 32, 64, 65, 100):
        key = secrets.token_bytes(klen)
        prev, prefix = secrets.token_hex(32).encode(), os.urandom(700)
        assert Mac(key).hexdigest(prev, prefix) == hmac.new(key, prev + prefix, hashlib.sha256).hexdigest().encode()


def test_signer_undo_restores_the_head() -> None:
    s = Signer(Mac(b"k" * 32))
    s.sign({"@timestamp": "t", "seq": 0})
    head = (s.seq, s.chain)
    s.sign({"@timestamp": "t", "seq": 0})
    s.undo()
    assert (s.seq, s.chain) == head


@BOTH_WRITERS
def test_intact_trail_verifies(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 25)
    res = verify_paths([audit_dir / "audit.jsonl"], key)
    assert res.ok and not res.tampered
    assert res.records == 25 and res.first_seq == 1 and res.last_seq == 25
    assert res.summary() == "OK: 25 records in 1 files"
    assert res.last_chain == records_of(audit_dir / "audit.jsonl")[-1]["chain"]


def test_edited_field_is_caught_at_its_line(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 10)
    p = audit_dir / "audit.jsonl"
    lines = lines_of(p)
    lines[4] = lines[4].replace(b'"name":"alice"', b'"name":"mallory"')
    _rewrite(p, lines)
    res = verify_paths([p], key)
    assert res.problem is not None and res.tampered
    assert (res.problem.kind, res.problem.file, res.problem.line) == (EDITED, p, 5)
    assert res.records == 4
    assert f"{p}:5: edited" in str(res.problem)


def test_edit_with_chain_recomputed_under_another_key_is_caught(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 6)
    p = audit_dir / "audit.jsonl"
    lines = lines_of(p)
    # The attacker re-signs the rest of the file, but does not have the key.
    forger = Signer(Mac(b"attacker-key-0123456789"), 2, lines[1][-66:-2])
    for i in range(2, len(lines)):
        rec = orjson.loads(lines[i])
        rec.pop("chain")
        if i == 2:
            rec["http"]["response"]["status_code"] = 403
        lines[i] = forger.sign(rec).rstrip(b"\n")
    _rewrite(p, lines)
    res = verify_paths([p], key)
    assert res.problem is not None and res.problem.kind == EDITED and res.problem.line == 3


def test_deleted_middle_record_is_reported_missing(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 10)
    p = audit_dir / "audit.jsonl"
    lines = lines_of(p)
    del lines[5]  # seq 6
    _rewrite(p, lines)
    res = verify_paths([p], key)
    assert res.problem is not None
    assert (res.problem.kind, res.problem.line) == (MISSING, 6)
    assert "seq 6 missing" in res.problem.message


def test_deleted_run_of_records_names_the_gap(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 10)
    p = audit_dir / "audit.jsonl"
    lines = lines_of(p)
    del lines[2:5]  # seq 3..5
    _rewrite(p, lines)
    res = verify_paths([p], key)
    assert res.problem is not None and res.problem.kind == MISSING and "seq 3..5" in res.problem.message


def test_swapped_records_are_reported_reordered(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 10)
    p = audit_dir / "audit.jsonl"
    lines = lines_of(p)
    lines[3], lines[4] = lines[4], lines[3]
    _rewrite(p, lines)
    res = verify_paths([p], key)
    assert res.problem is not None
    assert (res.problem.kind, res.problem.line) == (REORDERED, 4)


def test_duplicated_record_is_caught(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 6)
    p = audit_dir / "audit.jsonl"
    lines = lines_of(p)
    lines.insert(3, lines[2])
    _rewrite(p, lines)
    res = verify_paths([p], key)
    assert res.problem is not None and res.problem.kind == REORDERED and res.problem.line == 4


def test_inserted_foreign_line_is_malformed(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 4)
    p = audit_dir / "audit.jsonl"
    lines = lines_of(p)
    lines.insert(2, b'{"@timestamp":"2025-01-01T00:00:00.000000Z","event":{"action":"auth.login"}}')
    _rewrite(p, lines)
    res = verify_paths([p], key)
    assert res.problem is not None and (res.problem.kind, res.problem.line) == (MALFORMED, 3)


def test_deleted_first_records_are_caught(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 5)
    p = audit_dir / "audit.jsonl"
    _rewrite(p, lines_of(p)[2:])
    res = verify_paths([p], key)
    assert res.problem is not None and res.problem.kind == MISSING and res.problem.line == 1


def test_torn_last_line_is_not_called_tampering(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 8)
    p = audit_dir / "audit.jsonl"
    data = p.read_bytes()
    p.write_bytes(data[:-40])  # the crash cut the last line mid-record
    res = verify_paths([p], key)
    assert res.problem is not None
    assert res.problem.kind == TORN_TAIL and res.problem.line == 8
    assert not res.tampered
    assert res.records == 7


def test_wrong_key_is_named_as_such(make_trail, audit_dir: Path) -> None:
    _write(make_trail, 5)
    res = verify_paths([audit_dir], secrets.token_bytes(32))
    assert res.problem is not None and res.problem.kind == WRONG_KEY and res.problem.line == 1


def test_trailing_bytes_outside_the_mac_are_checked_too(make_trail, audit_dir: Path, key: bytes) -> None:
    _write(make_trail, 3)
    p = audit_dir / "audit.jsonl"
    lines = lines_of(p)
    lines[1] = lines[1].replace(b',"chain":"', b',"chaim":"')
    _rewrite(p, lines)
    res = verify_paths([p], key)
    assert res.problem is not None and res.problem.line == 2


# ------------------------------------------------------------------ series of files


def _rotated_series(make_trail, audit_dir: Path, n: int = 60) -> list[Path]:
    t = make_trail(max_bytes=4096)
    emit_requests(t, n)
    assert t.close()
    files = sorted(audit_dir.glob("audit-*.jsonl")) + [audit_dir / "audit.jsonl"]
    assert len(files) >= 4
    return files


@BOTH_WRITERS
def test_rotated_series_verifies_in_chain_order_not_name_order(make_trail, audit_dir: Path, key: bytes) -> None:
    files = _rotated_series(make_trail, audit_dir)
    # Names that sort backwards must not matter: order comes from the chain.
    renamed = []
    for i, f in enumerate(files):
        r = f.with_name(f"z{len(files) - i:02d}.jsonl")
        f.rename(r)
        renamed.append(r)
    res = verify_paths([audit_dir], key)
    assert res.ok, res.problem
    assert res.files == renamed
    assert res.records == 60 + len(files) - 1  # the events plus one audit.rotated per new file


def test_removed_file_from_series_is_caught(make_trail, audit_dir: Path, key: bytes) -> None:
    files = _rotated_series(make_trail, audit_dir)
    files[1].unlink()
    res = verify_paths([audit_dir], key)
    assert res.problem is not None
    assert (res.problem.kind, res.problem.file, res.problem.line) == (MISSING_FILE, files[2], 1)
    assert files[1].name in res.problem.message


def test_series_starting_after_pruned_files_is_ok_but_says_so(make_trail, audit_dir: Path, key: bytes) -> None:
    files = _rotated_series(make_trail, audit_dir)
    files[0].unlink()  # retention removed the oldest file
    res = verify_paths([audit_dir], key)
    assert res.ok
    assert res.starts_after is not None and res.starts_after[0] == files[0].name


def test_rotated_file_cut_at_a_line_boundary_is_truncated(make_trail, audit_dir: Path, key: bytes) -> None:
    files = _rotated_series(make_trail, audit_dir)
    _rewrite(files[1], lines_of(files[1])[:-2])
    res = verify_paths([audit_dir], key)
    assert res.problem is not None and (res.problem.kind, res.problem.file) == (TRUNCATED, files[1])


def test_files_from_two_trails_do_not_pass_as_one(make_trail, audit_dir: Path, key: bytes, tmp_path: Path, settings_for) -> None:
    _write(make_trail, 3)
    other = tmp_path / "other"
    t = make_trail(path=other / "audit.jsonl")
    emit_requests(t, 3)
    t.close()
    res = verify_paths([audit_dir / "audit.jsonl", other / "audit.jsonl"], key)
    assert res.problem is not None and res.problem.kind == LINK_MISMATCH


def test_missing_path_raises(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(FileNotFoundError):
        verify_paths([tmp_path / "nope.jsonl"], key)


# ------------------------------------------------------------------ keys


def test_key_file_hex_or_raw(tmp_path: Path) -> None:
    raw = secrets.token_bytes(32)
    assert parse_key(raw.hex().encode() + b"\n") == raw
    assert parse_key(b"  a long passphrase, not hex at all  \n") == b"a long passphrase, not hex at all"
    with pytest.raises(ConfigError) as e:
        parse_key(b"short")
    assert e.value.key == "audit.key_file"
    with pytest.raises(ConfigError):
        load_key(tmp_path / "missing.key")
