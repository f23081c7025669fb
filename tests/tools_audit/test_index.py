"""The audit viewer's columnar index: what it holds, how it filters, and how it follows the files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit import verify_paths
from gateway.audit.index import NONE, AuditIndex, Filters, chain_folders, default_cache_dir, denied, read_record, select, timeline, top
from tests.tools_audit.tools_audit_support import T0, Clock, records, sample_events, write_trail


def _get(rec: dict[str, Any], *path: str) -> Any:
    for p in path:
        rec = rec.get(p) if isinstance(rec, dict) else None  # type: ignore[assignment]
    return rec


def _flat(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": rec["seq"],
        "ts": rec["@timestamp"],
        "action": _get(rec, "event", "action"),
        "outcome": _get(rec, "event", "outcome"),
        "user": _get(rec, "user", "name"),
        "client_ip": _get(rec, "client", "ip"),
        "path": _get(rec, "url", "path"),
        "status": _get(rec, "http", "response", "status_code"),
        "decision": _get(rec, "gateway", "decision"),
        "rule_id": _get(rec, "gateway", "rule_id"),
        "tool": _get(rec, "gateway", "tool"),
        "request_id": _get(rec, "http", "request", "id"),
        "reason": _get(rec, "event", "reason"),
    }


def _rows(index: AuditIndex) -> list[dict[str, Any]]:
    t = index.table
    out = t.select(["seq", "action", "outcome", "user", "client_ip", "path", "status", "decision", "rule_id", "tool", "request_id", "reason"]).to_pylist()
    for row, ts in zip(out, t.column("ts").to_pylist()):
        row["ts"] = ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


def _matches(r: dict[str, Any], f: Filters) -> bool:
    def among(v: Any, values: tuple[str, ...]) -> bool:
        return not values or (v in values) or (v is None and NONE in values)

    ts = dt.datetime.strptime(r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    if f.since is not None and ts < f.since:
        return False
    if f.until is not None and ts >= f.until:
        return False
    if not (among(r["user"], f.users) and among(r["action"], f.actions) and among(r["decision"], f.decisions)):
        return False
    if not (among(r["outcome"], f.outcomes) and among(r["tool"], f.tools)):
        return False
    if f.client_ip and (r["client_ip"] is None or ipaddress.ip_address(r["client_ip"]) not in ipaddress.ip_network(f.client_ip, strict=False)):
        return False
    if f.request_id and r["request_id"] != f.request_id:
        return False
    return True


@pytest.fixture
def big(trail) -> Path:
    # Small files so the trail rotates several times: the index spans a series.
    return trail(sample_events(1500), max_bytes=60_000)


def test_index_holds_every_record_of_every_file_in_chain_order(big: Path, tmp_path: Path):
    files = sorted(big.parent.glob("*.jsonl"))
    assert len(files) > 3
    index = AuditIndex(big.parent, tmp_path / "cache")
    index.refresh()
    res = verify_paths([big.parent], bytes.fromhex((tmp_path / "audit.key").read_text().strip()))
    expected = sorted((_flat(r) for r in records(res.files)), key=lambda r: r["seq"])
    assert _rows(index) == expected
    assert index.table.column("seq").to_pylist() == list(range(1, len(expected) + 1))


@pytest.mark.parametrize(
    "f",
    [
        Filters(users=("alice", "bob")),
        Filters(users=(NONE,), decisions=("deny",)),
        Filters(actions=("auth.login",), outcomes=("failure",)),
        Filters(tools=("audit", NONE), actions=("http.request",)),
        Filters(client_ip="10.1.0.0/24"),
        Filters(client_ip="192.168.1.3"),
        Filters(request_id=f"{77:032x}"),
        Filters(since=dt.datetime.fromtimestamp(T0 + 300, dt.timezone.utc), until=dt.datetime.fromtimestamp(T0 + 700, dt.timezone.utc)),
        Filters(users=("carol",), actions=("page.denied", "http.request"), since=dt.datetime.fromtimestamp(T0 + 100, dt.timezone.utc)),
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.describe().items()),
)
def test_filters_select_exactly_the_matching_records(big: Path, tmp_path: Path, f: Filters):
    index = AuditIndex(big.parent, tmp_path / "cache")
    index.refresh()
    everything = _rows(index)
    want = [r["seq"] for r in everything if _matches(r, f)]
    assert want, "the sample must have matches for every filter"
    assert len(want) < len(everything)
    view = select(index, f)
    assert view.table.column("seq").to_pylist() == want
    assert view.total == len(everything)


def test_asset_requests_can_be_hidden_but_denied_ones_stay(big: Path, tmp_path: Path):
    index = AuditIndex(big.parent, tmp_path / "cache")
    index.refresh()
    rows = _rows(index)
    view = select(index, Filters(hide_assets=True))
    kept = set(view.table.column("seq").to_pylist())
    for r in rows:
        asset = r["action"] == "http.request" and (r["path"] or "").startswith("/static/")
        assert (r["seq"] in kept) == (not asset or r["decision"] == "deny")


def test_bad_ip_filter_is_refused():
    with pytest.raises(ValueError):
        Filters(client_ip="10.0.0.300")
    with pytest.raises(ValueError):
        Filters(since=dt.datetime(2025, 1, 1))  # naive


def test_pages_are_newest_first_and_cover_every_row_once(big: Path, tmp_path: Path):
    index = AuditIndex(big.parent, tmp_path / "cache")
    index.refresh()
    view = select(index, Filters(actions=("http.request",)))
    size = 97
    seen: list[int] = []
    for n in range(1, view.pages(size) + 1):
        part = view.page(n, size).column("seq").to_pylist()
        assert part == sorted(part, reverse=True)
        assert len(part) == size or n == view.pages(size)
        seen += part
    assert seen == sorted(view.table.column("seq").to_pylist(), reverse=True)


def test_record_details_come_from_the_original_line(big: Path, tmp_path: Path):
    index = AuditIndex(big.parent, tmp_path / "cache")
    index.refresh()
    view = select(index, Filters(users=("dave",)))
    row = view.page(1, 1).to_pylist()[0]
    rec = read_record(view.files, row)
    assert rec is not None and rec["seq"] == row["seq"] and rec["user"]["name"] == "dave" and "chain" in rec


def test_growth_is_indexed_incrementally_and_the_cache_survives_a_restart(trail, audit_dir: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    trail(sample_events(200, seed=1))
    index = AuditIndex(audit_dir, cache)
    assert index.refresh()
    v1 = index.version
    assert not index.refresh() and index.version == v1  # nothing changed: nothing done
    trail(sample_events(300, seed=2))  # the writer continues the same file
    assert not index.refresh(max_age_s=60)  # a page rerun right after the last refresh skips it
    assert index.refresh()
    seqs = index.table.column("seq").to_pylist()
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) == 500

    # A new process maps the persisted index instead of parsing the trail again.
    fresh = AuditIndex(audit_dir, cache)
    fresh.refresh()
    assert _rows(fresh) == _rows(index)
    assert any(p.suffix == ".arrow" for p in cache.iterdir())


def test_rotation_keeps_the_index_of_the_renamed_file(trail, audit_dir: Path, tmp_path: Path):
    index = AuditIndex(audit_dir, tmp_path / "cache")
    trail(sample_events(100, seed=3), max_bytes=30_000)
    index.refresh()
    before = _rows(index)
    trail(sample_events(100, seed=4), max_bytes=30_000)  # rotates: the current file is renamed
    index.refresh()
    after = _rows(index)
    assert after[: len(before)] == before
    assert [r["seq"] for r in after] == list(range(1, len(after) + 1))
    assert len(index.files) == len(list(audit_dir.glob("*.jsonl")))


def test_a_record_edited_in_place_is_indexed_again(trail, audit_dir: Path, tmp_path: Path):
    path = trail([{"action": "auth.login", "outcome": "failure", "user": f"user{i:03d}"} for i in range(50)])
    index = AuditIndex(audit_dir, tmp_path / "cache")
    index.refresh()
    data = path.read_bytes()
    st = path.stat()
    path.write_bytes(data.replace(b'"user025"', b'"userX25"'))  # same size, new content
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert index.refresh()
    assert "userX25" in index.table.column("user").to_pylist()


def test_torn_tail_waits_and_malformed_lines_keep_line_numbers(trail, audit_dir: Path, tmp_path: Path):
    path = trail([{"action": "auth.login", "outcome": "failure", "user": f"u{i}"} for i in range(10)])
    lines = path.read_bytes().splitlines(keepends=True)
    # An inserted garbage line and a torn (unterminated) last line.
    path.write_bytes(b"".join(lines[:5]) + b"not json at all\n" + b"".join(lines[5:]) + lines[-1][:40])
    index = AuditIndex(audit_dir, tmp_path / "cache")
    index.refresh()
    t = index.table
    assert t.num_rows == len(lines)
    assert t.column("line").to_pylist() == [*range(1, 6), *range(7, len(lines) + 2)]
    with open(path, "ab") as f:
        f.write(lines[-1][40:])  # the tail completes
    index.refresh()
    assert index.table.num_rows == len(lines) + 1


def test_several_chains_show_as_one_timeline(audit_dir: Path, key_file: Path, tmp_path: Path):
    # Replicas (or workers) each write their own chain in a sub-folder.
    for name, start in (("gw-1", T0), ("gw-2", T0 + 0.5)):
        write_trail(audit_dir / name / "audit.jsonl", key_file, sample_events(40, seed=int(start)), clock=Clock(start), replica_id=name)
    assert [n for n, _ in chain_folders(audit_dir)] == ["gw-1", "gw-2"]
    index = AuditIndex(audit_dir, tmp_path / "cache")
    index.refresh()
    ts = index.table.column("ts").to_pylist()
    assert len(ts) == 2 * 40 and ts == sorted(ts)


def test_default_cache_lives_with_the_trail_and_never_looks_like_one(trail, audit_dir: Path, key_file: Path):
    trail(sample_events(50))
    index = AuditIndex(audit_dir)
    index.refresh()
    assert index.cache_dir == default_cache_dir(audit_dir) / "index"
    assert index.cache_dir.is_relative_to(audit_dir) and (index.cache_dir.parent.stat().st_mode & 0o077) == 0
    assert not list(index.cache_dir.rglob("*.jsonl"))
    # The verifier (and anything else reading audit/*.jsonl) is not disturbed.
    assert verify_paths([audit_dir], bytes.fromhex(key_file.read_text().strip())).ok


def test_charts_aggregate_the_view(big: Path, tmp_path: Path):
    index = AuditIndex(big.parent, tmp_path / "cache")
    index.refresh()
    t = index.table
    starts, requests, denials, width = timeline(t, max_buckets=50)
    rows = _rows(index)
    assert len(starts) <= 50 and requests.sum() == sum(r["action"] == "http.request" for r in rows)
    assert denials.sum() == sum(r["decision"] == "deny" for r in rows)
    top_users = top(t, "user", denied(t), k=3)
    counts: dict[Any, int] = {}
    for r in rows:
        if r["decision"] == "deny":
            counts[r["user"] if r["user"] is not None else NONE] = counts.get(r["user"] if r["user"] is not None else NONE, 0) + 1
    assert [c for _, c in top_users] == sorted(counts.values(), reverse=True)[:3]
    assert all(counts[v] == c for v, c in top_users)


def test_index_rows_match_records_written_by_the_writer(trail, audit_dir: Path, tmp_path: Path):
    path = trail([{"action": "http.request", "request_id": "r" * 32, "client_ip": "10.0.0.7", "user": "alice", "method": "POST", "path": "/api/x", "tool": "sales", "status": 403, "decision": "deny", "rule_id": "no", "reason": "policy", "auth_method": "session", "policy_version": "v9"}])
    index = AuditIndex(audit_dir, tmp_path / "cache")
    index.refresh()
    row = next(r for r in index.table.to_pylist() if r["action"] == "http.request")
    rec = orjson.loads(path.read_bytes().splitlines()[row["line"] - 1])
    assert rec["seq"] == row["seq"]
    assert (row["method"], row["status"], row["auth_method"], row["policy_version"]) == ("POST", 403, "session", "v9")
    assert path.read_bytes()[row["offset"] : row["offset"] + row["length"]] == path.read_bytes().splitlines()[row["line"] - 1]
