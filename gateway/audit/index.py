"""A columnar index of the audit trail, so the viewer can filter a year of it quickly.

The JSONL files stay the record of truth; this is a cache built from them.
Each file gets one Arrow table of the fields the viewer filters and shows
(plus the line number, byte offset and length of every record, so an export
can copy the exact original lines).  Tables are persisted as Arrow IPC files
in a cache folder and memory-mapped on the next start, so a million events
cost neither a re-parse nor a million Python dicts.

Files are recognised by device, inode and a hash of their first line: a
rotation renames the current file but keeps its inode and first line, so its
index is reused under the new name.  A file that grew is indexed from where
the last pass stopped (after checking the bytes before that point are
unchanged); a file whose size stayed the same while its mtime moved was
rewritten and is indexed again from scratch.  Integrity is not this module's
job: the viewer shows the chain verification next to whatever the index says.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.json as pj
import structlog

log = structlog.get_logger(__name__)

INDEX_VERSION = 1
BLOCK_BYTES = 16 << 20
# The growing current file is re-persisted after this many new rows, so a
# restart re-parses at most this much of it.
PERSIST_EVERY_ROWS = 20_000
TAIL_CHECK_BYTES = 256
NONE = "(none)"  # filter value that matches records without the field
# Paths of the app shell (scripts, styles, fonts, Streamlit's runtime): an
# allowed request for one says little; a denied one still shows.
ASSET_PREFIXES = ("/static/", "/_stcore/", "/media/", "/component/", "/_gateway/static/", "/favicon.png", "/manifest.json")

_S = pa.string()
TS_TYPE = pa.timestamp("us", tz="UTC")

# The columns of the index, in order (``src`` is added when files are combined).
SCHEMA = pa.schema(
    [
        ("ts", TS_TYPE),
        ("seq", pa.int64()),
        ("action", _S),
        ("outcome", _S),
        ("user", _S),
        ("client_ip", _S),
        ("method", _S),
        ("path", _S),
        ("status", pa.int32()),
        ("decision", _S),
        ("rule_id", _S),
        ("tool", _S),
        ("request_id", _S),
        ("reason", _S),
        ("auth_method", _S),
        ("policy_version", _S),
        ("line", pa.int64()),
        ("offset", pa.int64()),
        ("length", pa.int32()),
    ]
)

# What the JSON reader extracts from each ECS record; everything else
# (details, user agent, the chain) is skipped without being materialised.
_JSON_SCHEMA = pa.schema(
    [
        ("@timestamp", TS_TYPE),
        ("seq", pa.int64()),
        ("event", pa.struct([("action", _S), ("outcome", _S), ("reason", _S)])),
        (
            "http",
            pa.struct(
                [
                    ("request", pa.struct([("id", _S), ("method", _S)])),
                    ("response", pa.struct([("status_code", pa.int64())])),
                ]
            ),
        ),
        ("client", pa.struct([("ip", _S)])),
        ("user", pa.struct([("name", _S)])),
        ("url", pa.struct([("path", _S)])),
        (
            "gateway",
            pa.struct(
                [("decision", _S), ("rule_id", _S), ("tool", _S), ("auth_method", _S), ("policy_version", _S)]
            ),
        ),
    ]
)

# index column -> ECS path (the JSON reader's flattened name)
_ECS_COLUMNS = {
    "ts": "@timestamp",
    "seq": "seq",
    "action": "event.action",
    "outcome": "event.outcome",
    "user": "user.name",
    "client_ip": "client.ip",
    "method": "http.request.method",
    "path": "url.path",
    "status": "http.response.status_code",
    "decision": "gateway.decision",
    "rule_id": "gateway.rule_id",
    "tool": "gateway.tool",
    "request_id": "http.request.id",
    "reason": "event.reason",
    "auth_method": "gateway.auth_method",
    "policy_version": "gateway.policy_version",
}


# ------------------------------------------------------------------ parsing


def _flatten(t: pa.Table) -> pa.Table:
    while any(pa.types.is_struct(f.type) for f in t.schema):
        t = t.flatten()
    return t


def _positions(block: bytes, base_offset: int, base_line: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, lengths, line numbers) of the complete lines in ``block`` (which ends with a newline)."""
    arr = np.frombuffer(block, np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.empty(len(nl), np.int64)
    if len(nl):
        starts[0] = 0
        starts[1:] = nl[:-1] + 1
    lengths = nl - starts
    lines = np.arange(base_line, base_line + len(nl), dtype=np.int64)
    return starts + base_offset, lengths, lines


def _fast_columns(block: bytes, n: int) -> dict[str, pa.ChunkedArray] | None:
    """Arrow's multi-threaded JSON reader; None when the block needs the careful path."""
    try:
        t = pj.read_json(
            pa.BufferReader(block),
            read_options=pj.ReadOptions(use_threads=True, block_size=4 << 20),
            parse_options=pj.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if t.num_rows != n:
        return None
    flat = _flatten(t)
    cols: dict[str, pa.ChunkedArray] = {}
    for name, ecs in _ECS_COLUMNS.items():
        col = flat.column(ecs)
        want = SCHEMA.field(name).type
        cols[name] = col if col.type == want else col.cast(want)
    return cols


def _str(d: Any, key: str) -> str | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, str) else None


def _ts_us(v: Any) -> int | None:
    if not isinstance(v, str):
        return None
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _careful_rows(block: bytes, offsets: np.ndarray, lengths: np.ndarray, base_offset: int) -> tuple[dict[str, list[Any]], np.ndarray]:
    """One line at a time: lines that are not JSON objects are left out (the verifier reports them)."""
    names = list(_ECS_COLUMNS)
    out: dict[str, list[Any]] = {k: [] for k in names}
    keep = np.zeros(len(offsets), bool)
    for i, (off, ln) in enumerate(zip(offsets.tolist(), lengths.tolist())):
        start = off - base_offset
        line = block[start : start + ln]
        try:
            rec = orjson.loads(line) if ln else None
        except orjson.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            continue
        keep[i] = True
        ev, http, g = rec.get("event"), rec.get("http"), rec.get("gateway")
        req = http.get("request") if isinstance(http, dict) else None
        resp = http.get("response") if isinstance(http, dict) else None
        status = resp.get("status_code") if isinstance(resp, dict) else None
        seq = rec.get("seq")
        out["ts"].append(_ts_us(rec.get("@timestamp")))
        out["seq"].append(seq if isinstance(seq, int) and not isinstance(seq, bool) else None)
        out["action"].append(_str(ev, "action"))
        out["outcome"].append(_str(ev, "outcome"))
        out["user"].append(_str(rec.get("user"), "name"))
        out["client_ip"].append(_str(rec.get("client"), "ip"))
        out["method"].append(_str(req, "method"))
        out["path"].append(_str(rec.get("url"), "path"))
        out["status"].append(status if isinstance(status, int) and not isinstance(status, bool) and -(2**31) <= status < 2**31 else None)
        out["decision"].append(_str(g, "decision"))
        out["rule_id"].append(_str(g, "rule_id"))
        out["tool"].append(_str(g, "tool"))
        out["request_id"].append(_str(req, "id"))
        out["reason"].append(_str(ev, "reason"))
        out["auth_method"].append(_str(g, "auth_method"))
        out["policy_version"].append(_str(g, "policy_version"))
    return out, keep


def parse_block(block: bytes | memoryview, base_offset: int, base_line: int) -> tuple[pa.Table, int]:
    """Index rows for a run of complete lines (``block`` ends with ``\\n``) -> (rows, lines read)."""
    offsets, lengths, lines = _positions(block, base_offset, base_line)
    n = len(offsets)
    if n == 0:
        return SCHEMA.empty_table(), 0
    cols: dict[str, Any] | None = None
    arr = np.frombuffer(block, np.uint8)
    if lengths.min() > 0 and bool((arr[offsets - base_offset] == 0x7B).all()):  # every line starts with "{"
        cols = _fast_columns(block, n)
    if cols is None:
        rows, keep = _careful_rows(block, offsets, lengths, base_offset)
        cols = {k: pa.array(v, type=SCHEMA.field(k).type) for k, v in rows.items()}
        offsets, lengths, lines = offsets[keep], lengths[keep], lines[keep]
    cols["line"] = pa.array(lines, pa.int64())
    cols["offset"] = pa.array(offsets, pa.int64())
    cols["length"] = pa.array(lengths.astype(np.int32), pa.int32())
    return pa.table([cols[f.name] for f in SCHEMA], schema=SCHEMA), n


def index_range(path: Path, start: int, first_line: int) -> tuple[pa.Table, int, int]:
    """Index the complete lines of ``path`` from byte ``start``.

    Returns (rows, end offset of the last complete line, number of lines read).
    A torn last line is left for the next pass.
    """
    tables: list[pa.Table] = []
    pos = start
    line = first_line
    block_size = BLOCK_BYTES
    with open(path, "rb", buffering=0) as f:
        while True:
            f.seek(pos)
            chunk = f.read(block_size)
            if not chunk:
                break
            cut = chunk.rfind(b"\n")
            if cut < 0:
                if len(chunk) < block_size:
                    break  # a torn last line: not ours yet
                block_size *= 2  # one line longer than a block
                continue
            # The partial line after ``cut`` is read again with the next block
            # rather than copied around.
            t, n = parse_block(memoryview(chunk)[: cut + 1], pos, line)
            tables.append(t)
            pos += cut + 1
            line += n
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return table, pos, line - first_line


def _first_line_hash(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    nl = head.find(b"\n")
    if nl < 0:
        return None
    return hashlib.sha256(head[:nl]).hexdigest()[:20]


def _read_at(path: Path, end: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, end - size))
        return f.read(min(size, end))


# ------------------------------------------------------------------ per-file state


@dataclass
class _FileIndex:
    key: str
    path: Path
    table: pa.Table
    indexed_bytes: int = 0  # through the end of the last complete line indexed
    lines: int = 0
    stat_size: int = 0
    mtime_ns: int = 0
    tail: str = ""  # hex of the bytes just before ``indexed_bytes``
    persisted_rows: int = 0

    @property
    def first_seq(self) -> int | None:
        if self.table.num_rows == 0:
            return None
        v = self.table.column("seq")[0].as_py()
        return v if isinstance(v, int) else None

    def manifest(self) -> dict[str, Any]:
        return {
            "version": INDEX_VERSION,
            "key": self.key,
            "path": str(self.path),
            "rows": self.table.num_rows,
            "indexed_bytes": self.indexed_bytes,
            "lines": self.lines,
            "stat_size": self.stat_size,
            "mtime_ns": self.mtime_ns,
            "tail": self.tail,
        }


def chain_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """The trail's chains: ``root``'s own ``*.jsonl`` files, and each sub-folder's.

    One process writes one chain; with several workers or replicas each has
    its own folder under the audit folder (``<audit dir>/<replica id>/``).
    Folders starting with ``.`` (this viewer's cache among them) are not trails.
    """
    out: list[tuple[str, list[Path]]] = []
    try:
        own = sorted(p for p in root.glob("*.jsonl") if p.is_file())
        subs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return out
    if own:
        out.append(("", own))
    for d in subs:
        try:
            files = sorted(p for p in d.glob("*.jsonl") if p.is_file())
        except OSError:
            continue
        if files:
            out.append((d.name, files))
    return out


def default_cache_dir(audit_dir: Path) -> Path:
    """``<audit dir>/.viewer-cache/index`` when writable (same protection as the trail), else a private temp dir."""
    preferred = audit_dir / ".viewer-cache"
    try:
        preferred.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = preferred / ".probe"
        probe.write_bytes(b"")
        probe.unlink()
        return preferred
    except OSError:
        digest = hashlib.sha256(str(audit_dir.resolve()).encode()).hexdigest()[:16]
        fallback = Path(tempfile.gettempdir()) / f"toolgate-audit-{os.getuid()}-{digest}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        return fallback


# ------------------------------------------------------------------ the index


class AuditIndex:
    """The index of every ``*.jsonl`` file in one audit folder, refreshed on demand.

    ``refresh()`` is cheap when nothing changed (one ``stat`` per file) and
    thread-safe; ``table`` is an immutable snapshot in chain order with a
    ``src`` column (position in ``files``).  ``version`` changes whenever the
    snapshot does, so callers can cache what they derive from it.
    """

    def __init__(self, audit_dir: Path, cache_dir: Path | None = None) -> None:
        self.audit_dir = Path(audit_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.audit_dir) / "index"
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, _FileIndex] = {}
        self._table: pa.Table = self._combine([])
        self.files: list[Path] = []
        self.version = 0
        self._refreshed_at = 0.0

    # ------------------------------------------------------------ public

    @property
    def table(self) -> pa.Table:
        return self._table

    def refresh(self, max_age_s: float = 0.0) -> bool:
        """Bring the index up to date with the files; True when anything changed.

        With ``max_age_s``, an index refreshed less than that long ago is
        left as it is (a page rerunning often need not stat every file each time).
        """
        with self._lock:
            now = time.monotonic()
            if max_age_s and self.version and now - self._refreshed_at < max_age_s:
                return False
            self._refreshed_at = now
            return self._refresh()

    # ------------------------------------------------------------ refresh

    def _listing(self) -> list[Path]:
        return [p for _, files in chain_folders(self.audit_dir) for p in files]

    def _refresh(self) -> bool:
        changed = False
        seen: dict[str, _FileIndex] = {}
        for path in self._listing():
            try:
                st = path.stat()
                if st.st_size == 0:
                    continue
                head = _first_line_hash(path)
            except OSError:
                continue
            if head is None:
                continue
            key = f"{st.st_dev:x}-{st.st_ino:x}-{head}"
            fi = self._files.get(key) or self._load(key, path)
            if fi is None:
                fi = _FileIndex(key=key, path=path, table=SCHEMA.empty_table())
                changed |= self._index(fi, path, st, full=True)
            else:
                if fi.path != path:
                    fi.path = path
                    changed = True
                changed |= self._update(fi, path, st)
            seen[key] = fi
        if set(seen) != set(self._files):
            changed = True
            self._forget(set(self._files) - set(seen))
        self._files = seen
        if changed or self.version == 0:
            order = sorted(
                seen.values(),
                key=lambda f: (str(f.path.parent), f.first_seq if f.first_seq is not None else 1 << 62, f.path.name),
            )
            self.files = [f.path for f in order]
            table = self._combine(order)
            if len({f.path.parent for f in order if f.table.num_rows}) > 1:
                # Several chains (replicas, workers): one timeline, by time.
                table = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("src", "ascending"), ("seq", "ascending")]))
            self._table = table
            self.version += 1
        return changed

    def _update(self, fi: _FileIndex, path: Path, st: os.stat_result) -> bool:
        # Not ctime: a rotation's rename moves it, and the renamed file's index is still good.
        if (st.st_size, st.st_mtime_ns) == (fi.stat_size, fi.mtime_ns):
            return False
        if st.st_size > fi.indexed_bytes and self._tail_intact(fi, path):
            return self._index(fi, path, st, full=False)
        # Same size with new times, or shrunk: rewritten in place.
        return self._index(fi, path, st, full=True)

    def _tail_intact(self, fi: _FileIndex, path: Path) -> bool:
        if fi.indexed_bytes == 0:
            return True
        try:
            return _read_at(path, fi.indexed_bytes, TAIL_CHECK_BYTES).hex() == fi.tail
        except OSError:
            return False

    def _index(self, fi: _FileIndex, path: Path, st: os.stat_result, *, full: bool) -> bool:
        start, first_line = (0, 1) if full else (fi.indexed_bytes, fi.lines + 1)
        try:
            rows, end, nlines = index_range(path, start, first_line)
            tail = _read_at(path, end, TAIL_CHECK_BYTES).hex() if end else ""
        except OSError as exc:
            log.warning("audit_index_read_failed", path=str(path), error=str(exc))
            return False
        before = fi.table.num_rows
        if full:
            fi.table, fi.lines, fi.persisted_rows = rows, nlines, 0
        elif rows.num_rows or nlines:
            fi.table = pa.concat_tables([fi.table, rows])
            fi.lines += nlines
        fi.indexed_bytes = end
        fi.tail = tail
        fi.stat_size, fi.mtime_ns = st.st_size, st.st_mtime_ns
        if fi.table.num_rows - fi.persisted_rows >= PERSIST_EVERY_ROWS or (full and fi.table.num_rows):
            self._persist(fi)
        return full or fi.table.num_rows != before

    # ------------------------------------------------------------ cache files

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.cache_dir / f"{key}.arrow", self.cache_dir / f"{key}.json"

    def _persist(self, fi: _FileIndex) -> None:
        data_path, meta_path = self._paths(fi.key)
        # Several workers may share the cache: each writes its own temp file, then renames.
        unique = f"{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            tmp = data_path.with_name(f".{fi.key}.arrow.{unique}")
            table = fi.table.combine_chunks()
            with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, SCHEMA) as writer:
                writer.write_table(table)
            os.chmod(tmp, 0o600)
            os.replace(tmp, data_path)
            meta_tmp = meta_path.with_name(f".{fi.key}.json.{unique}")
            meta_tmp.write_bytes(orjson.dumps({**fi.manifest(), "rows": table.num_rows}))
            os.chmod(meta_tmp, 0o600)
            os.replace(meta_tmp, meta_path)
            mapped = self._mapped(data_path)
            # (Another worker may have replaced it again meanwhile: only a same-sized table is ours.)
            fi.table = mapped if mapped is not None and mapped.num_rows == table.num_rows else table
            fi.persisted_rows = table.num_rows
        except OSError as exc:
            log.warning("audit_index_persist_failed", path=str(data_path), error=str(exc))

    @staticmethod
    def _mapped(path: Path) -> pa.Table | None:
        try:
            return ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        except (OSError, pa.ArrowInvalid):
            return None

    def _load(self, key: str, path: Path) -> _FileIndex | None:
        data_path, meta_path = self._paths(key)
        try:
            meta = orjson.loads(meta_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(meta, dict) or meta.get("version") != INDEX_VERSION or meta.get("key") != key:
            return None
        table = self._mapped(data_path)
        if table is None or table.schema != SCHEMA or table.num_rows != meta.get("rows"):
            return None
        fi = _FileIndex(
            key=key,
            path=path,
            table=table,
            indexed_bytes=int(meta["indexed_bytes"]),
            lines=int(meta["lines"]),
            stat_size=int(meta["stat_size"]),
            mtime_ns=int(meta["mtime_ns"]),
            tail=str(meta["tail"]),
            persisted_rows=table.num_rows,
        )
        return fi

    def _forget(self, keys: set[str]) -> None:
        """Drop cache files of trail files that are gone (retention, or a rewrite)."""
        for key in keys:
            for p in self._paths(key):
                try:
                    p.unlink()
                except OSError:
                    pass

    # ------------------------------------------------------------ combine

    @staticmethod
    def _combine(order: Sequence[_FileIndex]) -> pa.Table:
        parts = []
        for i, fi in enumerate(order):
            t = fi.table
            parts.append(t.append_column("src", pa.array(np.full(t.num_rows, i, np.int32), pa.int32())))
        if not parts:
            return SCHEMA.append(pa.field("src", pa.int32())).empty_table()
        return pa.concat_tables(parts)


# ------------------------------------------------------------------ filtering


@dataclass(frozen=True)
class Filters:
    """What the auditor asked for.  Empty means "any"; ``NONE`` in a list matches a missing value."""

    since: dt.datetime | None = None  # inclusive
    until: dt.datetime | None = None  # exclusive
    users: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    decisions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    client_ip: str = ""  # one address, or a network in CIDR notation
    request_id: str = ""
    hide_assets: bool = False  # leave out allowed requests for the app's own assets (ASSET_PREFIXES)

    def __post_init__(self) -> None:
        for t in (self.since, self.until):
            if t is not None and t.tzinfo is None:
                raise ValueError("since/until must be timezone-aware")
        if self.client_ip:
            client_network(self.client_ip)  # raises ValueError

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for the audit record of an export)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if v in (None, "", (), False):
                continue
            out[k] = v.astimezone(dt.timezone.utc).isoformat() if isinstance(v, dt.datetime) else (list(v) if isinstance(v, tuple) else v)
        return out


def client_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``10.1.2.3`` or ``10.1.0.0/16`` (IPv6 alike); ValueError otherwise."""
    return ipaddress.ip_network(text.strip(), strict=False)


def _in(col: pa.ChunkedArray, values: Sequence[str]) -> pa.ChunkedArray:
    real = [v for v in values if v != NONE]
    m = pc.is_in(col, value_set=pa.array(real, col.type)) if real else None
    if NONE in values:
        nulls = pc.is_null(col)
        m = nulls if m is None else pc.or_(m, nulls)
    assert m is not None
    return m


def asset_requests(table: pa.Table) -> pa.ChunkedArray:
    """Allowed (or public) ``http.request`` events for the app shell's own assets."""
    path = table.column("path")
    m = None
    for prefix in ASSET_PREFIXES:
        p = pc.starts_with(path, prefix)
        m = p if m is None else pc.or_(m, p)
    assert m is not None
    m = pc.and_(m, pc.equal(table.column("action"), "http.request"))
    m = pc.and_(m, pc.is_in(table.column("decision"), value_set=pa.array(["allow", "public"])))
    return pc.fill_null(m, False)


_IPV4 = r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$"


def _ipv4_in(values: pa.Array, net: ipaddress.IPv4Network) -> pa.Array:
    """Boolean: which dotted-quad strings are in ``net`` (vectorised: a year has many addresses)."""
    if len(values) == 0:
        return pa.array([], pa.bool_())
    octets = pc.split_pattern(values, ".").flatten().cast(pa.int64()).to_numpy().reshape(-1, 4)
    ints = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]
    ok = (octets <= 255).all(axis=1)
    return pa.array(ok & ((ints & int(net.netmask)) == int(net.network_address)))


def _ip_mask(col: pa.ChunkedArray, text: str) -> pa.ChunkedArray:
    net = client_network(text)
    if net.num_addresses == 1:
        return pc.equal(col, pa.scalar(str(net.network_address), col.type))
    values = pc.unique(col).drop_null()
    matching: list[Any] = []
    rest = values
    if isinstance(net, ipaddress.IPv4Network):
        is_v4 = pc.fill_null(pc.match_substring_regex(values, _IPV4), False)
        v4 = values.filter(is_v4)
        matching.append(v4.filter(_ipv4_in(v4, net)))
        rest = values.filter(pc.invert(is_v4))
    # IPv6 (and anything odd) one by one: far fewer of those in practice.
    odd = []
    for v in rest.to_pylist():
        try:
            a = ipaddress.ip_address(v)
        except ValueError:
            continue
        mapped = getattr(a, "ipv4_mapped", None)
        if a in net or (mapped is not None and mapped in net):
            odd.append(v)
    matching.append(pa.array(odd, col.type))
    return pc.is_in(col, value_set=pa.concat_arrays([m.cast(col.type) for m in matching]))


def mask(table: pa.Table, f: Filters) -> pa.ChunkedArray | None:
    """Boolean mask of the rows matching ``f`` (None: every row)."""
    parts: list[Any] = []
    ts = table.column("ts")
    if f.since is not None:
        parts.append(pc.greater_equal(ts, pa.scalar(f.since, TS_TYPE)))
    if f.until is not None:
        parts.append(pc.less(ts, pa.scalar(f.until, TS_TYPE)))
    for name, values in (("user", f.users), ("action", f.actions), ("decision", f.decisions), ("outcome", f.outcomes), ("tool", f.tools)):
        if values:
            parts.append(_in(table.column(name), values))
    if f.client_ip:
        parts.append(_ip_mask(table.column("client_ip"), f.client_ip))
    if f.request_id:
        parts.append(pc.equal(table.column("request_id"), pa.scalar(f.request_id.strip(), _S)))
    if f.hide_assets:
        parts.append(pc.invert(asset_requests(table)))
    if not parts:
        return None
    m = parts[0]
    for p in parts[1:]:
        m = pc.and_kleene(m, p)
    return pc.fill_null(m, False)


@dataclass
class View:
    """The rows matching a filter, in chain order (oldest first).

    Holds the row positions, not a copy of the rows: a session keeps its
    view between reruns, and the default view of a million-event trail is
    half a million rows.  Columns are gathered when something needs them.
    """

    source: pa.Table
    indices: pa.Array | None  # positions in ``source``; None: every row
    total: int
    files: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.source.num_rows if self.indices is None else len(self.indices)

    def project(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The matching rows with ``columns`` (all by default)."""
        t = self.source if columns is None else self.source.select(list(columns))
        return t if self.indices is None else t.take(self.indices)

    @property
    def table(self) -> pa.Table:
        return self.project()

    def slice(self, start: int, length: int) -> pa.Table:
        """Rows ``start`` .. ``start + length`` of the view, in chain order."""
        if self.indices is None:
            return self.source.slice(start, length)
        return self.source.take(self.indices.slice(start, length))

    def pages(self, size: int) -> int:
        return max(1, -(-self.rows // size))

    def page(self, number: int, size: int) -> pa.Table:
        """Page ``number`` (1-based) of ``size`` rows, newest first."""
        n = self.rows
        end = max(0, n - (number - 1) * size)
        start = max(0, end - size)
        part = self.slice(start, end - start)
        return part.take(pa.array(np.arange(part.num_rows - 1, -1, -1, dtype=np.int64)))


def read_record(files: Sequence[Path], row: dict[str, Any]) -> dict[str, Any] | None:
    """The original record behind an index row (``src``, ``offset``, ``length``, ``seq``), or None if it moved."""
    try:
        with open(files[row["src"]], "rb") as fh:
            fh.seek(row["offset"])
            line = fh.read(row["length"])
    except (OSError, IndexError, KeyError, TypeError):
        return None
    seq = row.get("seq")
    if seq is not None and b'"seq":%d,' % seq not in line[:96]:
        return None
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def select(index: AuditIndex, f: Filters) -> View:
    table = index.table
    m = mask(table, f)
    positions = None if m is None else pc.indices_nonzero(m.combine_chunks() if isinstance(m, pa.ChunkedArray) else m)
    return View(source=table, indices=positions, total=table.num_rows, files=list(index.files))


def distinct(table: pa.Table, column: str, limit: int = 5000) -> list[str]:
    """Sorted distinct non-null values of ``column`` (for filter choices)."""
    values = pc.unique(table.column(column)).drop_null()
    if len(values) > limit:  # keep the most frequent ones
        counts = pc.value_counts(table.column(column).drop_null())
        order = np.argsort(-counts.field("counts").to_numpy(), kind="stable")[:limit]
        values = counts.field("values").take(pa.array(order))
    return sorted(v for v in values.to_pylist() if v is not None)


# ------------------------------------------------------------------ aggregates for charts

_BUCKETS_US = [
    10**6, 10 * 10**6, 60 * 10**6, 5 * 60 * 10**6, 15 * 60 * 10**6, 3600 * 10**6,
    6 * 3600 * 10**6, 86_400 * 10**6, 7 * 86_400 * 10**6, 30 * 86_400 * 10**6,
]  # fmt: skip


def denied(table: pa.Table) -> pa.ChunkedArray:
    return pc.fill_null(pc.equal(table.column("decision"), "deny"), False)


def sign_in_failures(table: pa.Table) -> pa.ChunkedArray:
    m = pc.and_(pc.equal(table.column("action"), "auth.login"), pc.equal(table.column("outcome"), "failure"))
    return pc.fill_null(m, False)


def timeline(table: pa.Table, max_buckets: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(bucket starts in µs, requests per bucket, denials per bucket, bucket width in µs).

    Requests are ``http.request`` events; denials are events with decision
    ``deny`` (HTTP requests, websocket handshakes and in-app page switches).
    """
    ts = table.column("ts")
    valid = pc.is_valid(ts)
    if table.num_rows == 0 or not pc.any(valid).as_py():
        return np.array([], np.int64), np.array([], np.int64), np.array([], np.int64), _BUCKETS_US[0]
    us = pc.fill_null(ts.cast(pa.int64()), 0).to_numpy()
    ok = valid.to_numpy(zero_copy_only=False)
    lo, hi = int(us[ok].min()), int(us[ok].max())
    width = next((w for w in _BUCKETS_US if (hi - lo) // w + 1 <= max_buckets), _BUCKETS_US[-1])
    first = lo // width * width
    nb = (hi - first) // width + 1
    b = (us - first) // width
    req = pc.fill_null(pc.equal(table.column("action"), "http.request"), False).to_numpy(zero_copy_only=False) & ok
    den = denied(table).to_numpy(zero_copy_only=False) & ok
    bins = np.clip(b, 0, nb - 1)
    requests = np.bincount(bins[req], minlength=nb)
    denials = np.bincount(bins[den], minlength=nb)
    starts = first + np.arange(nb, dtype=np.int64) * width
    return starts, requests, denials, width


def top(table: pa.Table, column: str, where: pa.ChunkedArray | None = None, k: int = 10) -> list[tuple[str, int]]:
    """The ``k`` most frequent values of ``column`` among rows where ``where`` holds (missing shown as NONE)."""
    col = table.column(column) if where is None else table.filter(where).column(column)
    if len(col) == 0:
        return []
    counts = pc.value_counts(pc.fill_null(col, NONE))
    values = counts.field("values").to_pylist()
    n = counts.field("counts").to_numpy()
    order = np.argsort(-n, kind="stable")[:k]
    return [(values[i], int(n[i])) for i in order]
