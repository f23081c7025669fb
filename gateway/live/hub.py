"""Fan-out of security-relevant audit events to live feed connections.

The audit trail calls :meth:`FeedHub.listener` on whatever thread emitted the
event (often the event loop, sometimes a Streamlit script thread).  The
listener only decides whether the event belongs in the feed and hands it to
the loop with ``call_soon_threadsafe``; everything else (numbering, the
backlog, the per-connection queues) happens on the loop thread, so none of
it needs a lock.  Each connection has a bounded queue: a slow client loses
its oldest events (and is told how many), never slows the gateway down.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import structlog

from gateway.audit.event_view import picker

log = structlog.get_logger(__name__)

POLICY_ACTIONS = frozenset({"policy.changed", "policy.reloaded", "policy.reload_rejected"})
MAX_TEXT = 300
_FIELDS = (
    "user", "client_ip", "method", "path", "tool", "status", "decision", "rule_id", "reason",
    "request_id", "policy_version", "auth_method",
)  # fmt: skip
# ``details`` keys worth showing for a policy change (never the whole diff).
_DETAIL_KEYS = ("file", "files", "message", "version", "author", "error", "rolled_back_to", "errors")


_pick = picker("action", "decision", "outcome")


def category(event: Mapping[str, Any]) -> str | None:
    """``denial``, ``signin_failure``, ``policy`` or None (not a feed event).  Must be cheap: runs for every event."""
    action, decision, outcome = _pick(event)
    if action == "http.request" or action == "websocket.session":
        return "denial" if decision == "deny" else None
    if action == "page.denied":
        return "denial"
    if action == "auth.login":
        return "signin_failure" if outcome == "failure" else None
    if action in POLICY_ACTIONS:
        return "policy"
    return None


def _clip(v: Any) -> Any:
    if isinstance(v, str) and len(v) > MAX_TEXT:
        return v[:MAX_TEXT] + "…"
    return v


def _iso(ts: Any) -> str | None:
    if not isinstance(ts, (int, float)):
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def feed_item(event: dict[str, Any], kind: str) -> dict[str, Any]:
    """What a browser gets: the fields a security person reads, strings clipped, no diffs."""
    item: dict[str, Any] = {"kind": kind, "action": event.get("action"), "outcome": event.get("outcome"), "ts": _iso(event.get("ts"))}
    for k in _FIELDS:
        v = event.get(k)
        if v is not None and v != "":
            item[k] = _clip(v) if isinstance(v, str) else v if isinstance(v, (int, float)) else _clip(str(v))
    details = event.get("details")
    if kind == "policy" and isinstance(details, dict):
        picked = {k: _clip(str(details[k])) for k in _DETAIL_KEYS if k in details}
        if picked:
            item["details"] = picked
    if kind == "denial" and not event.get("user"):
        item["anonymous"] = True
    return item


def from_record(rec: dict[str, Any]) -> dict[str, Any]:
    """An ECS record from the trail file -> the flat event shape listeners get."""
    ev = rec.get("event") if isinstance(rec.get("event"), dict) else {}
    g = rec.get("gateway") if isinstance(rec.get("gateway"), dict) else {}
    http = rec.get("http") if isinstance(rec.get("http"), dict) else {}
    req = http.get("request") if isinstance(http.get("request"), dict) else {}
    resp = http.get("response") if isinstance(http.get("response"), dict) else {}
    out: dict[str, Any] = {
        "action": ev.get("action"),
        "outcome": ev.get("outcome"),
        "reason": ev.get("reason"),
        "user": (rec.get("user") or {}).get("name") if isinstance(rec.get("user"), dict) else None,
        "client_ip": (rec.get("client") or {}).get("ip") if isinstance(rec.get("client"), dict) else None,
        "path": (rec.get("url") or {}).get("path") if isinstance(rec.get("url"), dict) else None,
        "method": req.get("method"),
        "request_id": req.get("id"),
        "status": resp.get("status_code"),
    }
    for k in ("decision", "rule_id", "tool", "policy_version", "auth_method", "details"):
        out[k] = g.get(k)
    ts = rec.get("@timestamp")
    if isinstance(ts, str):
        try:
            out["ts"] = dt.datetime.fromisoformat(ts).timestamp()
        except ValueError:
            pass
    return {k: v for k, v in out.items() if v is not None}


@dataclass(eq=False)
class Subscriber:
    """One open feed connection: a bounded queue filled on the loop thread."""

    user: str
    queue: asyncio.Queue[dict[str, Any]]
    dropped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class FeedHub:
    def __init__(
        self,
        subscribe: Callable[[Callable[[dict[str, Any]], None]], Callable[[], None]],
        *,
        backlog: int = 100,
        queue_size: int = 256,
        max_connections: int = 200,
        max_per_user: int = 8,
    ) -> None:
        self._subscribe = subscribe
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        # Event ids restart with the process; a client resuming with an id
        # from another epoch gets the whole backlog instead of nothing.
        self.epoch = secrets.token_hex(6)
        self.backlog: collections.deque[dict[str, Any]] = collections.deque(maxlen=backlog)
        self.queue_size = queue_size
        self.max_connections = max_connections
        self.max_per_user = max_per_user
        self._subs: tuple[Subscriber, ...] = ()
        self.published = 0

    # ------------------------------------------------------------ lifecycle (loop thread)

    def start(self, loop: asyncio.AbstractEventLoop | None = None, seed: Iterable[dict[str, Any]] = ()) -> None:
        self._loop = loop or asyncio.get_running_loop()
        for event in seed:
            kind = category(event)
            if kind is not None:
                self._publish(feed_item(event, kind))
        self._unsubscribe = self._subscribe(self.listener)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._loop = None

    @property
    def connections(self) -> int:
        return len(self._subs)

    # ------------------------------------------------------------ any thread

    def listener(self, event: dict[str, Any]) -> None:
        """The audit trail's callback: filter, then hand over to the loop."""
        kind = category(event)
        if kind is None:
            return
        loop = self._loop
        if loop is None:
            return
        item = feed_item(event, kind)
        try:
            loop.call_soon_threadsafe(self._publish, item)
        except RuntimeError:  # the loop is closing
            pass

    # ------------------------------------------------------------ loop thread

    def _publish(self, item: dict[str, Any]) -> None:
        item["id"] = next(self._ids)
        self.published += 1
        self.backlog.append(item)
        for sub in self._subs:
            self._offer(sub, item)

    @staticmethod
    def _offer(sub: Subscriber, item: dict[str, Any]) -> None:
        q = sub.queue
        if q.full():
            try:
                q.get_nowait()  # drop the oldest: the newest is what matters live
            except asyncio.QueueEmpty:
                pass
            sub.dropped += 1
        q.put_nowait(item)

    def can_connect(self, user: str) -> bool:
        if len(self._subs) >= self.max_connections:
            return False
        return sum(1 for s in self._subs if s.user == user) < self.max_per_user

    def connect(self, user: str, since: int | None = None, epoch: str | None = None) -> Subscriber:
        """A new subscriber, primed with the backlog after event id ``since`` of ``epoch`` (all of it otherwise)."""
        sub = Subscriber(user=user, queue=asyncio.Queue(self.queue_size))
        if epoch != self.epoch:
            since = None
        for item in self.backlog:
            if since is None or item["id"] > since:
                self._offer(sub, item)
        self._subs = (*self._subs, sub)
        return sub

    def disconnect(self, sub: Subscriber) -> None:
        self._subs = tuple(s for s in self._subs if s is not sub)
