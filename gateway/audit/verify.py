"""Verify an audit trail (one file, a rotated series, or a directory) and read it back.

Fast path: for each line, recompute HMAC(key, previous line's chain || bytes
before ``,"chain":"``) from the raw bytes and compare with the stored value;
no JSON parsing except the first and last line of each file.  Only when a
line fails does the slow path parse the neighbourhood to say *what* is wrong
(edited, missing, reordered ...).  Files are put in chain order by the
sequence numbers and rotation links inside them, not by their names.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .chain import CHAIN_END, CHAIN_KEY, GENESIS, SUFFIX_LEN, Mac, split_line
from .files import parse, read_head, rotation_link

CHUNK = 1 << 23

# Problem kinds.  Everything except TORN_TAIL is evidence of tampering (or of
# files from different trails/keys being mixed); a torn tail is what a crash
# mid-write leaves behind.
EDITED = "edited"
MISSING = "missing"
REORDERED = "reordered"
MALFORMED = "malformed"
TORN_TAIL = "torn_tail"
TRUNCATED = "truncated"
MISSING_FILE = "missing_file"
LINK_MISMATCH = "link_mismatch"
WRONG_KEY = "wrong_key"
# Warning kind: a writer started without a current file and continued from the
# newest rotated one (a crash between rename and first record, or someone
# deleted the current file - the chain alone cannot tell which).
RESUMED = "resumed"
# Warning kind: the writer found its live file moved or deleted and started a
# new one (recorded by an audit.rotated record with reason file_replaced).
FILE_REPLACED = "file_replaced"


@dataclass(frozen=True)
class Problem:
    kind: str
    file: Path
    line: int  # 1-based line number; 0 when the problem is about the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.message}"


@dataclass
class VerifyResult:
    records: int = 0
    files: list[Path] = field(default_factory=list)  # in chain order
    problem: Problem | None = None  # the first thing wrong, in chain order
    warnings: list[Problem] = field(default_factory=list)  # explained, not failures
    first_seq: int | None = None
    last_seq: int | None = None
    last_chain: str | None = None
    starts_after: tuple[str, int] | None = None  # (file, seq) preceding the first given file

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def tampered(self) -> bool:
        """A problem other than a torn last line (which a crash can cause)."""
        return self.problem is not None and self.problem.kind != TORN_TAIL

    def summary(self) -> str:
        if self.problem is None:
            return f"OK: {self.records} records in {len(self.files)} files"
        return f"FAIL: {self.problem}"


# ------------------------------------------------------------------ inputs


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files as given; a directory contributes its ``*.jsonl`` files.  Missing paths raise."""
    return _collect(paths, recursive=False)


def _collect(paths: Iterable[Path | str], *, recursive: bool) -> list[Path]:
    """Files as given, each once; a directory contributes its ``*.jsonl`` files (at any depth if ``recursive``)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir() and recursive:
            # Folders starting with "." (the viewer's cache) hold no trails.
            items = sorted(
                c for c in p.rglob("*.jsonl")
                if c.is_file() and not any(part.startswith(".") for part in c.relative_to(p).parts[:-1])
            )  # fmt: skip
        elif p.is_dir():
            items = sorted(c for c in p.glob("*.jsonl") if c.is_file())
        elif p.is_file():
            items = [p]
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
        for c in items:
            r = c.resolve()
            if r not in seen:
                seen.add(r)
                out.append(c)
    return out


def chain_groups(paths: Iterable[Path | str]) -> list[tuple[str, list[Path]]]:
    """Files grouped into the separate chains they belong to: ``[(label, files)]``.

    Several replicas (or workers) each write their own chain, every record
    naming its writer (``gateway.replica``).  A directory contributes its
    ``*.jsonl`` files at any depth (hidden folders skipped); files are grouped by the replica their
    first record names and by folder; files without a readable first record
    (empty, torn) join the one chain of their folder.  The label is the
    replica id, or the folder for trails written without one.
    """
    files = _collect(paths, recursive=True)
    groups: dict[tuple[str | None, Path], list[Path]] = {}
    headless: list[Path] = []
    for f in files:
        head = read_head(f) if f.stat().st_size else None
        rec = parse(head) if head is not None else None
        if rec is None:
            headless.append(f)
            continue
        g = rec.get("gateway")
        replica = g.get("replica") if isinstance(g, dict) and isinstance(g.get("replica"), str) else None
        groups.setdefault((replica, f.parent), []).append(f)
    for f in headless:
        mine = [k for k in groups if k[1] == f.parent]
        groups.setdefault(mine[0] if len(mine) == 1 else (None, f.parent), []).append(f)
    return [(replica or str(folder), fs) for (replica, folder), fs in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", str(kv[0][1])))]


@dataclass
class _File:
    path: Path
    size: int
    head: bytes | None
    head_rec: dict[str, Any] | None
    first_seq: int | None
    link: tuple[str, int, bytes, str] | None  # audit.rotated: (previous_file, seq, chain, reason)


def _describe(path: Path) -> _File:
    size = path.stat().st_size
    head = read_head(path) if size else None
    rec = parse(head) if head is not None and split_line(head) else None
    seq = rec.get("seq") if rec else None
    return _File(path, size, head, rec, seq if isinstance(seq, int) else None, rotation_link(rec) if rec else None)


def _pick_mac(f: _File, macs: list[Mac]) -> Mac:
    """The key this file was written with: the one its first lines verify under."""
    if len(macs) == 1 or f.head is None:
        return macs[0]
    with open(f.path, "rb") as fh:
        pieces = fh.read(1 << 20).split(b"\n")[:4]
    pairs: list[tuple[bytes, tuple[bytes, bytes]]] = []
    prev = f.link[2] if f.link else GENESIS
    for line in pieces[:-1]:  # the last piece may be partial
        parts = split_line(line)
        if parts is None:
            break
        pairs.append((prev, parts))
        prev = parts[1]
    for mac in macs:
        if any(mac.hexdigest(pv, parts[0]) == parts[1] for pv, parts in pairs):
            return mac
    return macs[0]


# ------------------------------------------------------------------ fast path


def _scan(path: Path, mac: Mac, prev: bytes) -> tuple[int, bytes | None, bytes, int]:
    """Check every complete line.  -> (lines ok, last ok line, torn tail, failing line number or 0)."""
    icopy = mac._inner.copy
    ocopy = mac._outer.copy
    hexlify = binascii.hexlify
    ck = CHAIN_KEY
    end = CHAIN_END
    n = 0
    last: bytes | None = None
    carry = b""
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            if carry:
                chunk = carry + chunk
            lines = chunk.split(b"\n")
            carry = lines.pop()
            for line in lines:
                h = icopy()
                h.update(prev)
                h.update(line[:-SUFFIX_LEN])
                o = ocopy()
                o.update(h.digest())
                c = line[-66:-2]
                if hexlify(o.digest()) != c or line[-76:-66] != ck or line[-2:] != end:
                    return n, last, b"", n + 1
                prev = c
                n += 1
            if lines:
                last = lines[-1]
    return n, last, carry, 0


# ------------------------------------------------------------------ diagnosis


def _lines_from(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for complete lines from ``start`` (1-based)."""
    n = 0
    carry = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            for line in lines:
                n += 1
                if n >= start:
                    yield n, line


def _seq(line: bytes) -> int | None:
    rec = parse(line) if split_line(line) else None
    s = rec.get("seq") if rec else None
    return s if isinstance(s, int) else None


def _none_verify(path: Path, mac: Mac, first_prev: bytes, limit: int = 1000) -> bool:
    """True when not a single line (checked against its stored predecessor) verifies."""
    prev = first_prev
    for n, line in _lines_from(path, 1):
        parts = split_line(line)
        if parts is not None:
            if mac.hexdigest(prev, parts[0]) == parts[1]:
                return False
            prev = parts[1]
        if n >= limit:
            break
    return True


def _diagnose(f: _File, mac: Mac, first_prev: bytes, first_prev_seq: int | None, bad: int) -> Problem:
    prev_line: bytes | None = None
    line = b""
    for n, ln in _lines_from(f.path, max(1, bad - 1)):
        if n == bad - 1:
            prev_line = ln
        elif n == bad:
            line = ln
            break
    where = (f.path, bad)
    if not line:
        return Problem(MALFORMED, *where, "empty line inserted")
    if split_line(line) is None or parse(line) is None:
        return Problem(MALFORMED, *where, "not a chained audit record (inserted or corrupted line)")
    if _none_verify(f.path, mac, first_prev):
        return Problem(WRONG_KEY, f.path, bad, "no record in this file verifies with the given key: wrong key (or every record was rewritten)")
    seq = _seq(line)
    prev_seq = _seq(prev_line) if prev_line is not None else first_prev_seq
    if seq is None or prev_seq is None:
        return Problem(EDITED, *where, "record does not match its chain value")
    want = prev_seq + 1
    if seq == want:
        return Problem(EDITED, *where, f"record seq {seq} was altered (its HMAC does not match)")
    if seq > want:
        for n, ln in _lines_from(f.path, bad + 1):
            if _seq(ln) == want:
                return Problem(REORDERED, *where, f"record seq {seq} is out of order (seq {want} is at line {n})")
        gap = f"seq {want}" if seq == want + 1 else f"seq {want}..{seq - 1}"
        return Problem(MISSING, *where, f"{gap} missing before this line (records deleted)")
    return Problem(REORDERED, *where, f"record seq {seq} follows seq {prev_seq} (records reordered or duplicated)")


# ------------------------------------------------------------------ verify


def verify_paths(paths: Sequence[Path | str], key: bytes | Sequence[bytes]) -> VerifyResult:
    """Verify files and/or directories as one chained series; see the module doc.

    ``key`` may be a list of keys when the audit key was changed during the
    series (each file is checked with the key its first records verify under).
    Raises FileNotFoundError for a path that does not exist.
    """
    keys = [key] if isinstance(key, (bytes, bytearray)) else list(key)
    if not keys:
        raise ValueError("verify_paths needs at least one key")
    macs = [Mac(bytes(k)) for k in keys]
    res = VerifyResult()
    described = [_describe(p) for p in expand_paths(paths)]
    files = [f for f in described if f.size]
    torn_only = [f for f in files if f.head is None]
    heads_bad = [f for f in files if f.head is not None and f.first_seq is None]
    chained = sorted((f for f in files if f.first_seq is not None), key=lambda f: (f.first_seq, f.path.name))
    res.files = [f.path for f in described if not f.size] + [f.path for f in chained]

    if heads_bad:
        f = heads_bad[0]
        res.problem = Problem(MALFORMED, f.path, 1, "first line is not a chained audit record")
        return res
    acknowledged_torn = {c.link[0] for c in chained if c.link and c.link[3] == TORN_TAIL}
    for f in torn_only:
        p = Problem(TORN_TAIL, f.path, 1, "file holds only an incomplete line (crash or truncation, not an edit)")
        if f.path.name in acknowledged_torn:
            res.warnings.append(p)
        else:
            res.problem = p
            return res
        res.files.append(f.path)

    prev_f: _File | None = None
    prev_last_seq = 0
    prev_last_chain = GENESIS
    prev_torn = b""
    for i, f in enumerate(chained):
        assert f.first_seq is not None
        # Where this file's chain starts.
        if f.link is not None:
            first_prev, first_prev_seq = f.link[2], f.link[1]
        elif f.first_seq == 1:
            first_prev, first_prev_seq = GENESIS, 0
        else:
            res.problem = Problem(MISSING, f.path, 1, f"file starts at seq {f.first_seq} without a rotation record: earlier records were removed")
            return res
        if prev_f is None:
            res.first_seq = f.first_seq
            if f.link is not None:
                res.starts_after = (f.link[0], f.link[1])
                if f.link[3] == FILE_REPLACED:
                    res.warnings.append(Problem(FILE_REPLACED, f.path, 1, f"the writer found its file moved or deleted after seq {f.link[1]} and started this one; that file was not given"))
        else:
            prob = _check_link(prev_f, prev_last_seq, prev_last_chain, prev_torn, f, res)
            if prob is not None:
                res.problem = prob
                return res

        mac = _pick_mac(f, macs)
        n, last, torn, bad = _scan(f.path, mac, first_prev)
        res.records += n
        if bad:
            res.problem = _diagnose(f, mac, first_prev, first_prev_seq, bad)
            return res
        if last is not None:
            parts = split_line(last)
            assert parts is not None
            prev_last_chain = parts[1]
            prev_last_seq = _seq(last) or 0
        prev_torn = torn
        prev_f = f
        if i == len(chained) - 1 and torn:
            res.problem = Problem(TORN_TAIL, f.path, n + 1, f"last line is incomplete ({len(torn)} bytes, no newline): the writer crashed or the file was cut; this is not an edit of any complete record")
    if prev_f is not None:
        res.last_seq = prev_last_seq
        res.last_chain = prev_last_chain.decode("ascii")
    return res


def _check_link(a: _File, a_seq: int, a_chain: bytes, a_torn: bytes, b: _File, res: VerifyResult) -> Problem | None:
    """Does file ``b`` continue exactly where file ``a`` ended?"""
    if b.link is None:
        return Problem(LINK_MISMATCH, b.path, 1, f"a new chain (seq 1) starts here after {a.path.name} (seq {a_seq}): files from different trails, or the trail was restarted from scratch")
    p_file, p_seq, p_chain, reason = b.link
    if p_seq == a_seq and p_chain == a_chain:
        if reason == FILE_REPLACED:
            res.warnings.append(Problem(FILE_REPLACED, b.path, 1, f"the writer found its file moved or deleted after seq {a_seq} and started this one; {a.path.name} is that file"))
        if reason == "resume":
            res.warnings.append(Problem(RESUMED, b.path, 1, f"the writer restarted without a current file and continued from {a.path.name} (seq {a_seq}); records written after that in a lost file could not be detected"))
        if a_torn:
            torn = Problem(TORN_TAIL, a.path, 0, f"incomplete last line ({len(a_torn)} bytes) after seq {a_seq}")
            if reason == TORN_TAIL:
                res.warnings.append(Problem(TORN_TAIL, a.path, 0, f"incomplete last line after seq {a_seq}, recorded by the writer on restart ({b.path.name}:1)"))
            else:
                return torn
        return None
    if p_seq > a_seq:
        if p_file == a.path.name:
            return Problem(TRUNCATED, a.path, 0, f"file ends at seq {a_seq} but {b.path.name}:1 records that it ended at seq {p_seq}: records {a_seq + 1}..{p_seq} were cut off its end")
        return Problem(MISSING_FILE, b.path, 1, f"rotation link names {p_file} ending at seq {p_seq}, but the previous file given ends at seq {a_seq}: a file of the series is missing (seq {a_seq + 1}..{p_seq})")
    return Problem(LINK_MISMATCH, b.path, 1, f"rotation link (previous {p_file}, seq {p_seq}) does not match the end of {a.path.name} (seq {a_seq})")


# ------------------------------------------------------------------ reading


def _ts(v: str | _dt.datetime | None) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if v.tzinfo is None:
        raise ValueError("since/until must be timezone-aware datetimes or RFC 3339 UTC strings")
    return v.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_events(
    paths: Sequence[Path | str],
    *,
    actions: Iterable[str] | None = None,
    since: str | _dt.datetime | None = None,
    until: str | _dt.datetime | None = None,
    user: str | None = None,
    outcome: str | None = None,
    request_id: str | None = None,
    client_ip: str | None = None,
    predicate: Callable[[dict[str, Any]], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream records in chain order, filtered.  Does not verify (use verify_paths).

    ``actions`` entries ending in ``.`` match a prefix (``"auth."``).  ``since``
    is inclusive, ``until`` exclusive.  Torn or malformed lines are skipped.
    """
    want = set(actions) if actions is not None else None
    prefixes = tuple(a for a in want if a.endswith(".")) if want else ()
    lo, hi = _ts(since), _ts(until)
    files = [_describe(p) for p in expand_paths(paths)]
    ordered = sorted((f for f in files if f.first_seq is not None), key=lambda f: (f.first_seq, f.path.name))
    for f in ordered:
        for _, line in _lines_from(f.path, 1):
            rec = parse(line)
            if rec is None:
                continue
            ev = rec.get("event") or {}
            if want is not None:
                a = ev.get("action", "")
                if a not in want and not (prefixes and a.startswith(prefixes)):
                    continue
            ts = rec.get("@timestamp", "")
            if (lo is not None and ts < lo) or (hi is not None and ts >= hi):
                continue
            if outcome is not None and ev.get("outcome") != outcome:
                continue
            if user is not None and (rec.get("user") or {}).get("name") != user:
                continue
            if client_ip is not None and (rec.get("client") or {}).get("ip") != client_ip:
                continue
            if request_id is not None and ((rec.get("http") or {}).get("request") or {}).get("id") != request_id:
                continue
            if predicate is not None and not predicate(rec):
                continue
            yield rec


def read_events_merged(paths: Sequence[Path | str], **filters: Any) -> Iterator[dict[str, Any]]:
    """Records of several chains (replicas, workers) merged by time; filters as :func:`read_events`.

    Each chain is read in its own order and the streams are merged on
    ``@timestamp`` (RFC 3339 UTC strings sort as text).
    """
    streams = [read_events(files, **filters) for _, files in chain_groups(paths)]
    return heapq.merge(*streams, key=lambda rec: rec.get("@timestamp", ""))
