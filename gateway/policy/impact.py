"""Impact preview: replay recorded decisions against a draft policy before saving it.

The audit trail holds every request the gateway decided (``http.request``)
and every page switch it refused (``page.denied``), with the user, groups,
path, method, client address and time.  Each of those is asked again of the
policy in force now and of the draft; a request whose answer differs is a
flip, grouped by (user, tool) so the editor can say "alice would lose Ops
(37 requests in the last 7 days)" before anyone loses anything.

The baseline is the policy in force now, not the decision recorded at the
time: that isolates what *this* draft changes from what earlier changes did
(how often the two disagree is reported as ``recorded_differs``).

The trail is streamed (``read_events``), files last written before the
window are not opened, and identical questions are answered once.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit import read_events

from .engine import Policy
from .model import Decision, Request

REPLAYED_ACTIONS = frozenset({"http.request", "page.denied"})
ALLOW_TO_DENY = "allow→deny"
DENY_TO_ALLOW = "deny→allow"
ANONYMOUS = "(anonymous)"


@dataclass
class Flip:
    user: str
    target: str  # tool id, or a path family for requests outside the tool pages
    change: str  # ALLOW_TO_DENY | DENY_TO_ALLOW
    count: int = 0
    rule_now: str = ""
    rule_draft: str = ""
    first_seen: str = ""
    last_seen: str = ""
    example_path: str = ""


@dataclass
class ImpactReport:
    since: str
    until: str
    events: int = 0  # decision records in the window
    replayed: int = 0  # of those, asked again (the rest could not be rebuilt)
    skipped: int = 0
    flipped: int = 0  # requests whose answer changes
    recorded_differs: int = 0  # the policy in force now already answers differently than at the time
    flips: list[Flip] = field(default_factory=list)

    @property
    def lose(self) -> list[Flip]:
        return [f for f in self.flips if f.change == ALLOW_TO_DENY]

    @property
    def gain(self) -> list[Flip]:
        return [f for f in self.flips if f.change == DENY_TO_ALLOW]


def _target(rec_tool: Any, path: str) -> str:
    if isinstance(rec_tool, str) and rec_tool:
        return rec_tool
    segments = [s for s in path.split("/") if s]
    if len(segments) <= 1:
        return path
    return "/" + segments[0] + "/…"


def request_from_record(rec: dict[str, Any]) -> Request | None:
    """The policy question a recorded decision answered (None when it cannot be rebuilt)."""
    gw = rec.get("gateway") or {}
    user = rec.get("user") or {}
    http = rec.get("http") or {}
    action = (rec.get("event") or {}).get("action")
    try:
        at = dt.datetime.fromisoformat(str(rec.get("@timestamp", "")).replace("Z", "+00:00"))
        common: dict[str, Any] = {
            "user": user.get("name") or None,
            "groups": [g for g in (user.get("roles") or []) if isinstance(g, str)],
            "email": user.get("email") or None,
            "ip": (rec.get("client") or {}).get("ip") or None,
            "at": at,
        }
        if action == "page.denied":
            tool = gw.get("tool")
            if not isinstance(tool, str) or not tool:
                return None
            return Request(tool=tool, method="GET", **common)
        path = (rec.get("url") or {}).get("path")
        if not isinstance(path, str) or not path:
            return None
        method = ((http.get("request") or {}).get("method")) or "GET"
        return Request(path=path, method=method, **common)
    except (ValueError, TypeError):
        return None  # hostile path, unknown tool, bad address or time: nothing to replay


def _question(rec: dict[str, Any], minute: str) -> tuple[Any, ...]:
    """What a record asked, as recorded (before normalisation), plus the minute when time rules exist."""
    user = rec.get("user") or {}
    roles = user.get("roles")
    parts = (
        (rec.get("event") or {}).get("action"),
        user.get("name"),
        tuple(roles) if isinstance(roles, list) else (),
        user.get("email"),
        (rec.get("url") or {}).get("path"),
        (rec.get("gateway") or {}).get("tool"),
        ((rec.get("http") or {}).get("request") or {}).get("method"),
        (rec.get("client") or {}).get("ip"),
        minute,
    )
    try:
        hash(parts)
    except TypeError:  # a damaged record with a list or table where a name belongs
        return ("unhashable", repr(parts))
    return parts


def _audit_files(paths: Iterable[Path | str], since_ts: float) -> list[Path]:
    """Trail files that may hold records from ``since_ts`` on (a file's mtime is its last write)."""
    out: list[Path] = []
    for p in map(Path, paths):
        items = sorted(c for c in p.glob("*.jsonl") if c.is_file()) if p.is_dir() else ([p] if p.is_file() else [])
        for c in items:
            try:
                if os.stat(c).st_mtime >= since_ts:
                    out.append(c)
            except FileNotFoundError:
                continue
    return out


def replay(
    draft: Policy,
    current: Policy,
    audit_paths: Iterable[Path | str],
    *,
    days: float = 7,
    now: dt.datetime | None = None,
) -> ImpactReport:
    """Ask the last ``days`` of recorded decisions of ``current`` and ``draft``; report the flips."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=days)
    report = ImpactReport(since=since.isoformat(), until=now.isoformat())
    files = _audit_files(audit_paths, since.timestamp())
    if not files:
        return report
    time_rules = current.has_time_rules or draft.has_time_rules
    # Most records repeat the same question (the same person reloading the
    # same page): answer each distinct one once, before even building a Request.
    answers: dict[Any, tuple[Request, Decision, Decision] | None] = {}
    flips: dict[tuple[str, str, str], Flip] = {}
    for rec in read_events(files, actions=REPLAYED_ACTIONS, since=since, until=now):
        gw = rec.get("gateway") or {}
        recorded = gw.get("decision")
        if recorded not in ("allow", "deny"):
            continue  # public routes (decision "none") never reach policy
        report.events += 1
        ts = str(rec.get("@timestamp", ""))
        key = _question(rec, ts[:16] if time_rules else "")
        if key in answers:
            known = answers[key]
        else:
            req = request_from_record(rec)
            known = answers[key] = None if req is None else (req, current.decide_uncached(req), draft.decide_uncached(req))
        if known is None:
            report.skipped += 1
            continue
        report.replayed += 1
        req, now_d, draft_d = known
        if now_d.effect != recorded:
            report.recorded_differs += 1
        if now_d.allowed == draft_d.allowed:
            continue
        report.flipped += 1
        change = ALLOW_TO_DENY if now_d.allowed else DENY_TO_ALLOW
        target = _target(gw.get("tool") or req.tool, req.path)
        user = req.user or ANONYMOUS
        f = flips.get((user, target, change))
        if f is None:
            f = flips[(user, target, change)] = Flip(user=user, target=target, change=change, first_seen=ts, example_path=req.path)
        f.count += 1
        f.last_seen = ts
        f.rule_now, f.rule_draft = now_d.rule_id, draft_d.rule_id
    report.flips = sorted(flips.values(), key=lambda f: (f.change != ALLOW_TO_DENY, -f.count, f.user, f.target))
    return report
