""""My recent activity" on the home page: the signed-in user's own audit events, newest first.

The trail can be gigabytes, so it is read backwards from the end of the
current file in blocks (then the newest rotated files), stopping at ``limit``
matching events or after ``budget_bytes``; nothing is ever loaded whole.
(``gateway.audit.read_events`` streams forwards from the oldest file, which
would mean reading the whole series to find the last twenty lines.)

Only records whose ``user.name`` is the viewer are returned.  Requests for
the app's own plumbing (Streamlit's websocket and assets) are left out: they
say nothing a person would recognise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.files import parse, rotated_siblings
from gateway.tools import tool_by_id

BLOCK = 65536
PLUMBING = ("/_stcore/", "/static/", "/media/", "/component/", "/favicon.png", "/manifest.json", "/auth/")
SHOWN_ACTIONS = frozenset({"http.request", "auth.login", "auth.logout", "session.revoked", "page.denied", "policy.changed"})


@dataclass(frozen=True)
class Activity:
    when: str  # "2025-11-25 11:17:03" (UTC)
    what: str
    where: str
    result: str
    client_ip: str
    action: str


class _Budget:
    def __init__(self, n: int) -> None:
        self.left = n


def reverse_lines(path: Path, budget: _Budget) -> Iterator[bytes]:
    """Complete lines of ``path`` from the last to the first, reading blocks from the end.

    A torn last line (no newline: a crash mid-write) is skipped.  Stops when
    the byte budget is spent.
    """
    with open(path, "rb") as f:
        pos = f.seek(0, 2)
        carry = b""  # the start of the earliest line read so far (maybe partial)
        tail_dropped = False
        while pos > 0 and budget.left > 0:
            step = min(BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + carry
            budget.left -= step
            pieces = data.split(b"\n")
            if not tail_dropped:
                if len(pieces) == 1:
                    carry = data  # still inside the last (torn) line
                    continue
                pieces.pop()  # after the last newline: empty, or a torn line
                tail_dropped = True
            carry = pieces[0]
            for line in reversed(pieces[1:]):
                if line:
                    yield line
        if pos == 0 and tail_dropped and carry:
            yield carry


def _is_shown(rec: dict[str, Any]) -> bool:
    action = (rec.get("event") or {}).get("action")
    if action not in SHOWN_ACTIONS:
        return False
    if action == "http.request":
        path = (rec.get("url") or {}).get("path") or ""
        # The frontend also asks for its runtime relative to the page (/sales/_stcore/health).
        return not path.startswith(PLUMBING) and "/_stcore/" not in path
    return True


def _when(ts: str) -> str:
    try:
        t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    return t.strftime("%Y-%m-%d %H:%M:%S")


def describe(rec: dict[str, Any]) -> Activity:
    """One line a person can read: what happened, where, with what result."""
    ev = rec.get("event") or {}
    gw = rec.get("gateway") or {}
    http = rec.get("http") or {}
    action = ev.get("action", "")
    outcome = ev.get("outcome", "")
    path = (rec.get("url") or {}).get("path") or ""
    tool = tool_by_id(gw.get("tool")) if isinstance(gw.get("tool"), str) else None
    details = gw.get("details") if isinstance(gw.get("details"), dict) else {}
    if action == "http.request":
        status = ((http.get("response") or {}).get("status_code")) or ""
        method = ((http.get("request") or {}).get("method")) or "GET"
        what = f"Opened {tool.title}" if tool and method == "GET" else f"{method} request"
        result = f"{status} {'allowed' if gw.get('decision') == 'allow' else 'denied' if gw.get('decision') == 'deny' else ''}".strip()
        where = path
    elif action == "auth.login":
        method = gw.get("auth_method") or ""
        what = f"Signed in ({method})" if outcome == "success" else "Sign-in failed"
        result = outcome if outcome == "success" else (ev.get("reason") or outcome)
        where = ""
    elif action == "auth.logout":
        what, result, where = "Signed out", outcome, ""
    elif action == "session.revoked":
        what, result, where = "Session revoked", ev.get("reason") or outcome, ""
    elif action == "page.denied":
        what = f"Refused {tool.title}" if tool else "Page refused"
        result, where = "denied", path
    elif action == "policy.changed":
        file = details.get("file", "")
        what = "Rolled back a policy" if details.get("rollback_of") else "Changed a policy"
        result, where = f"{outcome} {details.get('new_version') or ''}".strip(), str(file)
    else:
        what, result, where = action, outcome, path
    return Activity(
        when=_when(str(rec.get("@timestamp", ""))),
        what=what,
        where=where,
        result=str(result),
        client_ip=str((rec.get("client") or {}).get("ip") or ""),
        action=action,
    )


def recent_activity(audit_path: Path | str, user: str, *, limit: int = 20, budget_bytes: int = 32 << 20) -> list[Activity]:
    """The newest ``limit`` shown events of ``user`` (newest first); [] when there is no trail."""
    if not user:
        return []
    me = user.casefold()
    current = Path(audit_path)
    try:
        files = [current] + list(reversed(rotated_siblings(current)))
    except OSError:
        files = [current]
    budget = _Budget(budget_bytes)
    out: list[Activity] = []
    for f in files:
        try:
            lines = reverse_lines(f, budget)
            for line in lines:
                # Cheap byte test before parsing: most lines are someone else's.
                if b'"user"' not in line:
                    continue
                rec = parse(line)
                if rec is None:
                    continue
                name = (rec.get("user") or {}).get("name")
                if not isinstance(name, str) or name.casefold() != me or not _is_shown(rec):
                    continue
                out.append(describe(rec))
                if len(out) >= limit:
                    return out
        except FileNotFoundError:
            continue
        if budget.left <= 0:
            break
    return out
