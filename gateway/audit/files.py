"""Reading the ends of trail files and naming rotated ones (shared by writer and verifier)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .chain import GENESIS, Mac, split_line

ROTATED_ACTION = "audit.rotated"


def rotated_name(path: Path, now: float) -> Path:
    """``audit-20251125T111700123456Z.jsonl`` next to ``audit.jsonl``; never an existing name."""
    us_total = int(now * 1_000_000)
    sec, us = divmod(us_total, 1_000_000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(sec)) + f"{us:06d}Z"
    base = f"{path.stem}-{stamp}"
    cand = path.with_name(base + path.suffix)
    n = 1
    while cand.exists():
        cand = path.with_name(f"{base}-{n}{path.suffix}")
        n += 1
    return cand


def rotated_siblings(path: Path) -> list[Path]:
    """Rotated files of the trail at ``path``, oldest name first."""
    return sorted(p for p in path.parent.glob(f"{path.stem}-*{path.suffix}") if p.is_file())


def read_tail(path: Path, want: int = 2) -> tuple[list[bytes], bytes, int]:
    """(last ``want`` complete lines without newline, bytes after the last newline, file size)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        pos = size
        buf = b""
        block = 65536
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            if buf.count(b"\n") > want:
                break
            block *= 2
    nl = buf.rfind(b"\n")
    torn = buf[nl + 1 :]
    lines = buf[: nl + 1].split(b"\n")[:-1] if nl >= 0 else []
    if pos > 0 and lines:
        lines = lines[1:]  # the first piece may start mid-line
    return lines[-want:], torn, size


def read_head(path: Path) -> bytes | None:
    """The first complete line (without newline), or None."""
    with open(path, "rb") as f:
        buf = b""
        while True:
            chunk = f.read(65536)
            if not chunk:
                return None
            buf += chunk
            nl = buf.find(b"\n")
            if nl >= 0:
                return buf[:nl]


def parse(line: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def rotation_link(rec: dict[str, Any]) -> tuple[str, int, bytes, str] | None:
    """(previous_file, previous_seq, previous_chain, reason) of an audit.rotated record."""
    ev = rec.get("event")
    if not isinstance(ev, dict) or ev.get("action") != ROTATED_ACTION:
        return None
    g = rec.get("gateway")
    d = g.get("details") if isinstance(g, dict) else None
    if not isinstance(d, dict):
        return None
    try:
        return (str(d["previous_file"]), int(d["previous_seq"]), str(d["previous_chain"]).encode("ascii"), str(ev.get("reason", "")))
    except (KeyError, TypeError, ValueError, UnicodeEncodeError):
        return None


@dataclass
class TailState:
    """What a writer needs to continue a file: the chain head and whether it can append."""

    size: int
    seq: int = 0
    chain: bytes = GENESIS
    day: str | None = None
    lines: int = 0  # complete lines seen (up to 2)
    torn: bool = False
    recognized: bool = True  # the last complete line is a chained record
    key_ok: bool = True  # the last line's MAC verifies with the current key

    @property
    def empty(self) -> bool:
        return self.size == 0

    @property
    def appendable(self) -> bool:
        return self.size > 0 and not self.torn and self.recognized and self.key_ok and self.lines > 0


def inspect_tail(path: Path, mac: Mac) -> TailState:
    lines, torn, size = read_tail(path, 2)
    st = TailState(size=size, lines=len(lines), torn=bool(torn))
    if not lines:
        return st
    last = lines[-1]
    parts = split_line(last)
    rec = parse(last) if parts else None
    if parts is None or rec is None or not isinstance(rec.get("seq"), int):
        st.recognized = False
        return st
    st.seq = rec["seq"]
    st.chain = parts[1]
    ts = rec.get("@timestamp")
    st.day = ts[:10] if isinstance(ts, str) else None
    if len(lines) == 2:
        prev_parts = split_line(lines[0])
        prev = prev_parts[1] if prev_parts else None
    else:
        link = rotation_link(rec)
        prev = link[2] if link else (GENESIS if st.seq == 1 else None)
    st.key_ok = prev is not None and mac.hexdigest(prev, parts[0]) == parts[1]
    return st
