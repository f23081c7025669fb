"""Exports of a filtered view of the trail: CSV of the indexed fields, or the original JSONL lines.

Small exports are written in memory while the viewer waits; large ones run
as a background job writing to a private file, with progress the page can
poll, served afterwards (to the user who asked for it only) by the viewer's
download route.  Every finished export is itself an audit event
(``audit.exported``, with the filters, the row count and the format).

CSV cells that a spreadsheet would evaluate as a formula (``=``, ``+``,
``-``, ``@``, tab, carriage return at the start; user names and paths are
attacker-chosen) are prefixed with ``'``.  The JSONL export is the exact
original records, chain values included, for anyone who needs fidelity.
"""

from __future__ import annotations

import io
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import structlog

from .index import View

log = structlog.get_logger(__name__)

FORMATS = {"csv": ("text/csv", "csv"), "jsonl": ("application/x-ndjson", "jsonl")}
CSV_COLUMNS = (
    "time", "seq", "action", "outcome", "user", "client_ip", "method", "path", "status", "decision",
    "rule_id", "tool", "request_id", "reason", "auth_method", "policy_version", "file", "line",
)  # fmt: skip
BATCH_ROWS = 20_000
_FORMULA_START = r"^[=+\-@\t\r]"

Progress = Callable[[int, int], None]
Emit = Callable[..., None]


def _defuse(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    risky = pc.fill_null(pc.match_substring_regex(col, _FORMULA_START), False)
    if not pc.any(risky).as_py():
        return col
    return pc.if_else(risky, pc.binary_join_element_wise(pa.scalar("'"), col, ""), col)


def csv_table(rows: pa.Table, files: list[Path]) -> pa.Table:
    """The CSV columns for ``rows`` (a slice of the index table)."""
    names = pa.array([p.name for p in files] or [""], pa.string())
    cols: dict[str, Any] = {
        "time": pc.strftime(rows.column("ts"), format="%Y-%m-%dT%H:%M:%SZ", locale="C") if rows.num_rows else pa.array([], pa.string()),
        "file": pc.take(names, rows.column("src")) if rows.num_rows else pa.array([], pa.string()),
    }
    for name in CSV_COLUMNS:
        if name in cols:
            continue
        col = rows.column(name)
        cols[name] = _defuse(col) if pa.types.is_string(col.type) and rows.num_rows else col
    return pa.table({name: cols[name] for name in CSV_COLUMNS})


def write_csv(view: View, out: IO[bytes], progress: Progress | None = None) -> int:
    n = view.rows
    writer = None
    done = 0
    try:
        for start in range(0, max(n, 1), BATCH_ROWS):
            part = csv_table(view.slice(start, BATCH_ROWS), view.files)
            if writer is None:
                writer = pacsv.CSVWriter(out, part.schema)
            writer.write_table(part)
            done = min(n, start + BATCH_ROWS)
            if progress is not None:
                progress(done, n)
    finally:
        if writer is not None:
            writer.close()
    return n


def open_sources(files: list[Path]) -> dict[int, IO[bytes]]:
    """Open every file of a view now: a rotation renaming one later cannot swap its bytes under the export."""
    handles: dict[int, IO[bytes]] = {}
    for i, p in enumerate(files):
        try:
            handles[i] = open(p, "rb")
        except OSError:
            continue
    return handles


def write_jsonl(view: View, out: IO[bytes], sources: dict[int, IO[bytes]], progress: Progress | None = None) -> int:
    """The original lines, byte for byte.

    Each line is checked against its indexed ``seq`` before it is copied; a
    line that is no longer where the index says (the file was rewritten) is
    skipped and counted in the log rather than exported as something else.
    """
    n = view.rows
    written = 0
    for start in range(0, n, BATCH_ROWS):
        part = view.slice(start, BATCH_ROWS)
        cols = (part.column(c).to_pylist() for c in ("src", "offset", "length", "seq"))
        for src, off, ln, seq in zip(*cols):
            fh = sources.get(src)
            if fh is None:
                continue
            fh.seek(off)
            line = fh.read(ln)
            if line[:1] != b"{" or (seq is not None and b'"seq":%d,' % seq not in line[:96]):
                continue
            out.write(line)
            out.write(b"\n")
            written += 1
        if progress is not None:
            progress(min(n, start + BATCH_ROWS), n)
    if written != n:
        log.warning("audit_export_lines_moved", expected=n, written=written)
    return written


def write_export(view: View, fmt: str, out: IO[bytes], progress: Progress | None = None) -> int:
    if fmt == "csv":
        return write_csv(view, out, progress)
    if fmt == "jsonl":
        sources = open_sources(view.files)
        try:
            return write_jsonl(view, out, sources, progress)
        finally:
            for fh in sources.values():
                fh.close()
    raise ValueError(f"unknown export format {fmt!r}")


def export_bytes(view: View, fmt: str) -> tuple[bytes, int]:
    buf = io.BytesIO()
    rows = write_export(view, fmt, buf)
    return buf.getvalue(), rows


def file_name(fmt: str, at: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at if at is not None else time.time()))
    return f"audit-export-{stamp}.{FORMATS[fmt][1]}"


# ------------------------------------------------------------------ background jobs


@dataclass
class ExportJob:
    id: str
    owner: str
    fmt: str
    filters: dict[str, Any]
    total: int
    path: Path
    filename: str
    created: float = field(default_factory=time.time)
    done: int = 0
    rows: int = 0
    state: str = "running"  # running | done | failed
    error: str | None = None

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else min(1.0, self.done / self.total)

    @property
    def media_type(self) -> str:
        return FORMATS[self.fmt][0]


class ExportJobs:
    """Background exports for one audit folder; each file readable only by its owner, removed after ``ttl_s``."""

    def __init__(self, directory: Path, emit: Emit, *, ttl_s: float = 3600.0, max_running_per_user: int = 2) -> None:
        self.directory = Path(directory)
        self.emit = emit
        self.ttl_s = ttl_s
        self.max_running_per_user = max_running_per_user
        self._lock = threading.Lock()
        self._jobs: dict[str, ExportJob] = {}

    def start(
        self,
        view: View,
        fmt: str,
        *,
        owner: str,
        filters: dict[str, Any],
        audit_fields: dict[str, Any] | None = None,
    ) -> ExportJob:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}")
        self.cleanup()
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.owner == owner and j.state == "running")
            if running >= self.max_running_per_user:
                raise RuntimeError("too many exports running; wait for one to finish")
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            job_id = secrets.token_hex(16)
            job = ExportJob(
                id=job_id,
                owner=owner,
                fmt=fmt,
                filters=filters,
                total=view.rows,
                # Not *.jsonl: tools that scan the audit folder for trail files must not take an export for one.
                path=self.directory / f"{job_id}.{FORMATS[fmt][1]}.export",
                filename=file_name(fmt),
            )
            self._jobs[job_id] = job
        sources = open_sources(view.files) if fmt == "jsonl" else {}
        t = threading.Thread(target=self._run, args=(job, view, sources, audit_fields or {}), name="audit-export", daemon=True)
        t.start()
        return job

    def _run(self, job: ExportJob, view: View, sources: dict[int, IO[bytes]], audit_fields: dict[str, Any]) -> None:
        def progress(done: int, total: int) -> None:
            job.done = done

        try:
            fd = os.open(job.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                if job.fmt == "jsonl":
                    job.rows = write_jsonl(view, out, sources, progress)
                else:
                    job.rows = write_csv(view, out, progress)
            job.done = job.total
            job.state = "done"
            audited_export(self.emit, job.fmt, job.rows, job.filters, owner=job.owner, background=True, **audit_fields)
        except Exception as exc:  # noqa: BLE001 - reported on the page
            job.state, job.error = "failed", str(exc) or type(exc).__name__
            log.error("audit_export_failed", job=job.id, error=job.error)
            audited_export(self.emit, job.fmt, job.rows, job.filters, owner=job.owner, background=True, failed=job.error, **audit_fields)
        finally:
            for fh in sources.values():
                fh.close()

    def get(self, job_id: str, owner: str) -> ExportJob | None:
        """The job, only for the user who started it."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not secrets.compare_digest(job.owner, owner):
            return None
        return job

    def cleanup(self, *, everything: bool = False) -> None:
        now = time.time()
        with self._lock:
            old = [j for j in self._jobs.values() if everything or (j.state != "running" and now - j.created > self.ttl_s)]
            for j in old:
                self._jobs.pop(j.id, None)
        for j in old:
            try:
                j.path.unlink()
            except OSError:
                pass


def audited_export(
    emit: Emit,
    fmt: str,
    rows: int,
    filters: dict[str, Any],
    *,
    owner: str,
    background: bool = False,
    failed: str | None = None,
    **fields: Any,
) -> None:
    """The ``audit.exported`` event: who exported what (the filters), how many rows, in which format."""
    emit(
        "audit.exported",
        outcome="failure" if failed else "success",
        user=owner,
        reason=failed,
        details={"filters": filters, "rows": rows, "format": fmt, "background": background},
        **fields,
    )
