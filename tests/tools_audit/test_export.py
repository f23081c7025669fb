"""Exports of a filtered view: the rows match the filter, JSONL is byte-exact, every export is audited."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import verify_paths
from gateway.audit.export import CSV_COLUMNS, ExportJobs, export_bytes
from gateway.audit.index import AuditIndex, Filters, select
from tests.tools_audit.tools_audit_support import sample_events


class Recorder:
    """A real ``emit`` target that keeps what it got (the audit contract's callable)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, action: str, *, outcome: str | None = None, **fields: Any) -> None:
        self.events.append((action, {"outcome": outcome, **fields}))


@pytest.fixture
def index(trail, audit_dir: Path, tmp_path: Path) -> AuditIndex:
    trail(sample_events(600, seed=11), max_bytes=80_000)
    ix = AuditIndex(audit_dir, tmp_path / "cache")
    ix.refresh()
    return ix


FILTER = Filters(actions=("http.request", "page.denied"), decisions=("deny",))


def test_csv_rows_are_the_filtered_view(index: AuditIndex):
    view = select(index, FILTER)
    data, n = export_bytes(view, "csv")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert n == len(rows) == view.rows > 0
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["seq"]) for r in rows] == view.table.column("seq").to_pylist()
    assert all(r["decision"] == "deny" and r["action"] in FILTER.actions for r in rows)
    assert {r["file"] for r in rows} <= {p.name for p in index.files}


def test_csv_defuses_spreadsheet_formulas(index: AuditIndex):
    # A failed sign-in chooses its own user name: "=cmd|' /C calc'!A0" is in the sample.
    view = select(index, Filters(actions=("auth.login",)))
    rows = list(csv.DictReader(io.StringIO(export_bytes(view, "csv")[0].decode())))
    evil = [r["user"] for r in rows if "cmd|" in r["user"]]
    assert evil and all(u.startswith("'=") for u in evil)
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values())


def test_jsonl_is_the_original_lines_byte_for_byte(index: AuditIndex, audit_dir: Path, key_file: Path):
    view = select(index, FILTER)
    data, n = export_bytes(view, "jsonl")
    lines = data.splitlines()
    assert n == len(lines) == view.rows
    originals = {}
    for p in index.files:
        for line in p.read_bytes().splitlines():
            originals[line] = True
    assert all(line in originals for line in lines)
    # The exported file is not a chain of its own (records are missing), but a
    # single exported line can still be checked against the trail.
    assert verify_paths([audit_dir], bytes.fromhex(key_file.read_text().strip())).ok


def test_background_export_is_owned_audited_and_cleaned_up(index: AuditIndex, tmp_path: Path):
    emit = Recorder()
    jobs = ExportJobs(tmp_path / "exports", emit, ttl_s=0.0)
    view = select(index, FILTER)
    job = jobs.start(view, "jsonl", owner="aud", filters=FILTER.describe(), audit_fields={"client_ip": "10.0.0.9"})
    deadline = time.monotonic() + 10
    while job.state == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "done" and job.rows == view.rows and job.fraction == 1.0
    assert job.path.suffix == ".export"  # never *.jsonl: nothing may mistake it for a trail file
    assert (os.stat(job.path).st_mode & 0o077) == 0
    assert len(job.path.read_bytes().splitlines()) == view.rows
    assert jobs.get(job.id, "aud") is job
    assert jobs.get(job.id, "sam") is None  # only the user who asked for it
    assert emit.events == [
        (
            "audit.exported",
            {
                "outcome": "success",
                "user": "aud",
                "reason": None,
                "details": {"filters": FILTER.describe(), "rows": view.rows, "format": "jsonl", "background": True},
                "client_ip": "10.0.0.9",
            },
        )
    ]
    jobs.cleanup()
    assert jobs.get(job.id, "aud") is None and not job.path.exists()


def test_running_exports_per_user_are_limited(index: AuditIndex, tmp_path: Path):
    jobs = ExportJobs(tmp_path / "exports", Recorder(), max_running_per_user=0)
    with pytest.raises(RuntimeError):
        jobs.start(select(index, FILTER), "csv", owner="aud", filters={})
    with pytest.raises(ValueError):
        ExportJobs(tmp_path / "exports", Recorder()).start(select(index, FILTER), "xml", owner="aud", filters={})


def test_jsonl_export_skips_lines_that_moved(index: AuditIndex, audit_dir: Path):
    view = select(index, Filters(actions=("auth.login",)))
    victim = view.files[view.table.column("src")[0].as_py()]
    data = victim.read_bytes()
    # Someone rewrites the file in place after it was indexed: shift every line.
    victim.write_bytes(b"\n" + data[:-1])
    out, n = export_bytes(view, "jsonl")
    assert n < view.rows
    assert all(line.startswith(b"{") for line in out.splitlines())
