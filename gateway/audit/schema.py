"""The audit record schema: flat ``emit`` fields -> an Elastic Common Schema record.

Callers speak the flat vocabulary of the team conventions (``request_id``,
``client_ip``, ``status`` ...); auditors and SIEMs read ECS.  The mapping lives
here, in one table, so docs/audit-events.md and the code cannot drift apart
(tests/audit/test_schema.py checks the documented examples against it).

The functions below are structlog processors (``(logger, method, event_dict)
-> event_dict``) so they compose like any structlog pipeline; the writer
thread runs them directly because a bound logger's context copying would cost
more than the processors themselves.
"""

from __future__ import annotations

import re
import time
from pathlib import PurePath
from typing import Any

import orjson

ECS_VERSION = "8.11.0"

# action -> (event.category, event.type); ECS allowed values for each category.
ACTIONS: dict[str, tuple[list[str], list[str]]] = {
    "http.request": (["web"], ["access"]),
    "websocket.session": (["web", "session"], ["access", "end"]),
    "auth.login": (["authentication"], ["start"]),
    "auth.logout": (["authentication"], ["end"]),
    "session.revoked": (["session"], ["end"]),
    "policy.reloaded": (["configuration"], ["change"]),
    "policy.reload_rejected": (["configuration"], ["change"]),
    "policy.changed": (["configuration"], ["change"]),
    "page.denied": (["web"], ["access"]),
    "keys.rotated": (["configuration"], ["change"]),
    "gateway.start": (["process"], ["start"]),
    "gateway.stop": (["process"], ["end"]),
    "audit.rotated": (["file"], ["creation"]),
}

OUTCOMES = frozenset({"success", "failure", "unknown"})

_ACTION_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")

# flat field -> (ECS container, key).  Containers are nested at assembly time.
FIELD_MAP: dict[str, tuple[str, str]] = {
    "request_id": ("http.request", "id"),
    "method": ("http.request", "method"),
    "status": ("http.response", "status_code"),
    "bytes": ("http.response.body", "bytes"),
    "client_ip": ("client", "ip"),
    "user": ("user", "name"),
    "email": ("user", "email"),
    "groups": ("user", "roles"),
    "path": ("url", "path"),
    "user_agent": ("user_agent", "original"),
    "duration_ms": ("event", "duration"),
    "reason": ("event", "reason"),
    "decision": ("gateway", "decision"),
    "rule_id": ("gateway", "rule_id"),
    "policy_version": ("gateway", "policy_version"),
    "tool": ("gateway", "tool"),
    "auth_method": ("gateway", "auth_method"),
    "session_id": ("gateway", "session_id"),
    "details": ("gateway", "details"),
}

# Bounds for attacker-controlled strings so one request cannot bloat the trail.
MAX_LEN = {"path": 2048, "user_agent": 1024, "user": 256, "email": 320}
_MAX_PATH, _MAX_UA, _MAX_USER, _MAX_EMAIL = MAX_LEN["path"], MAX_LEN["user_agent"], MAX_LEN["user"], MAX_LEN["email"]

_ECS = {"version": ECS_VERSION}


def check_action(action: str) -> None:
    """Raise ValueError unless ``action`` is a dotted lower-case name."""
    if not isinstance(action, str) or not _ACTION_RE.match(action):
        raise ValueError(f"audit action must be dotted lower_snake names like 'auth.login', got {action!r}")


def check_outcome(outcome: str | None) -> None:
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {sorted(OUTCOMES)} or None, got {outcome!r}")


class TimestampFormatter:
    """``@timestamp`` as RFC 3339 UTC with microseconds: ``2025-11-25T11:17:00.123456Z``.

    strftime is the slow part, so the seconds prefix is cached; only the
    writer thread calls this, so the cache needs no lock.
    """

    __slots__ = ("_sec", "_prefix")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, ts: float) -> str:
        us_total = int(ts * 1_000_000)
        sec, us = divmod(us_total, 1_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{us:06d}Z"


def _roles(v: Any) -> Any:
    if v.__class__ is str:
        return [v]
    try:
        return sorted(v)
    except TypeError:
        return sorted(str(g) for g in v)


def _clip(name: str, v: Any) -> Any:
    if v.__class__ is str and len(v) > MAX_LEN[name]:
        return v[: MAX_LEN[name]] + "...[truncated]"
    return v


# The order of the flat fields in a queued event (after timestamp, action, outcome).
FLAT_FIELDS = (
    "request_id",
    "client_ip",
    "user",
    "email",
    "groups",
    "auth_method",
    "method",
    "path",
    "tool",
    "status",
    "bytes",
    "duration_ms",
    "decision",
    "rule_id",
    "policy_version",
    "user_agent",
    "reason",
    "session_id",
    "details",
)


class ToECS:
    """Add ``@timestamp`` and map flat fields to an ECS record (keys in a fixed order).

    Two entry points producing identical records:

    * as a structlog processor, ``(logger, method, event_dict)`` with keys
      ``event`` (the action), ``outcome``, ``timestamp`` (unix seconds) and
      the flat fields;
    * :meth:`build` with the fields positionally, which the writer thread
      uses: it skips building and popping a dict for every event.

    ``None`` and empty values are omitted.  Fields outside the vocabulary are
    kept under ``gateway.details`` rather than lost.  Written out field by
    field because it runs for every request (a table-driven version cost
    three times as much).
    """

    def __init__(self, replica_id: str | None = None) -> None:
        self.replica_id = replica_id or None
        self.fmt = TimestampFormatter()

    def __call__(self, logger: Any, method: str, ed: dict[str, Any]) -> dict[str, Any]:
        ed = dict(ed)
        pop = ed.pop
        ts = pop("timestamp")
        action = pop("event")
        outcome = pop("outcome", None)
        values = [pop(k, None) for k in FLAT_FIELDS]
        return self.build(ts, action, outcome, *values, ed)

    def build(
        self,
        ts: float,
        action: str,
        outcome: str | None,
        request_id: Any,
        client_ip: Any,
        user: Any,
        email: Any,
        groups: Any,
        auth_method: Any,
        http_method: Any,
        path: Any,
        tool: Any,
        status: Any,
        nbytes: Any,
        duration: Any,
        decision: Any,
        rule_id: Any,
        policy_version: Any,
        ua: Any,
        reason: Any,
        session_id: Any,
        details: Any,
        extra: dict[str, Any] | None,
    ) -> dict[str, Any]:
        ev: dict[str, Any] = {"action": action, "kind": "event"}
        cats = ACTIONS.get(action)
        if cats is not None:
            ev["category"] = cats[0]
            ev["type"] = cats[1]
        if duration is not None:
            ev["duration"] = int(duration * 1_000_000)
        if reason:
            ev["reason"] = reason
        if outcome is None:
            outcome = "unknown" if status.__class__ is not int else ("success" if status < 400 else "failure")
        ev["outcome"] = outcome
        rec: dict[str, Any] = {"@timestamp": self.fmt(ts), "seq": 0, "ecs": _ECS, "event": ev}

        if request_id or http_method or status is not None or nbytes is not None:
            http: dict[str, Any] = {}
            if request_id and http_method:
                http["request"] = {"id": request_id, "method": http_method}
            elif request_id:
                http["request"] = {"id": request_id}
            elif http_method:
                http["request"] = {"method": http_method}
            if status is not None and nbytes is not None:
                http["response"] = {"status_code": status, "body": {"bytes": nbytes}}
            elif status is not None:
                http["response"] = {"status_code": status}
            elif nbytes is not None:
                http["response"] = {"body": {"bytes": nbytes}}
            rec["http"] = http
        if client_ip:
            rec["client"] = {"ip": client_ip}
        if user or email or groups:
            u = rec["user"] = {}
            if user:
                u["name"] = user if user.__class__ is not str or len(user) <= _MAX_USER else _clip("user", user)
            if email:
                u["email"] = email if email.__class__ is not str or len(email) <= _MAX_EMAIL else _clip("email", email)
            if groups:
                u["roles"] = _roles(groups)
        if path:
            rec["url"] = {"path": path if path.__class__ is not str or len(path) <= _MAX_PATH else _clip("path", path)}
        if ua:
            rec["user_agent"] = {"original": ua if ua.__class__ is not str or len(ua) <= _MAX_UA else _clip("user_agent", ua)}

        g: dict[str, Any] = {}
        if decision:
            g["decision"] = decision
        if rule_id:
            g["rule_id"] = rule_id
        if policy_version:
            g["policy_version"] = policy_version
        if tool:
            g["tool"] = tool
        if auth_method:
            g["auth_method"] = auth_method
        if session_id:
            g["session_id"] = session_id
        if extra:  # fields outside the vocabulary: keep them, under details
            more = {k: v for k, v in extra.items() if v is not None}
            if isinstance(details, dict):
                details = {**details, **more}
            elif details is None or details == "":
                details = more or None
            else:
                more["details"] = details
                details = more
        if details is not None and details != "":
            g["details"] = details
        if self.replica_id:
            g["replica"] = self.replica_id
        if g:
            rec["gateway"] = g
        return rec


# --------------------------------------------------------------- serialization


def _default(obj: Any) -> Any:
    """orjson fallback for types it does not know (sets, paths, exceptions...)."""
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return [str(o) for o in obj]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        # Raw bytes in an audit record are more likely a key than prose.
        return f"[{len(obj)} bytes omitted]"
    if isinstance(obj, PurePath):
        return str(obj)
    return str(obj)


_OPTS = orjson.OPT_NON_STR_KEYS


def _scrub(obj: Any) -> Any:
    """Make every string valid UTF-8 (lone surrogates from undecodable input)."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, dict):
        return {_scrub(k) if isinstance(k, str) else k: _scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v) for v in obj]
    return obj


def dumps_record(rec: dict[str, Any]) -> bytes:
    """Serialize a record; never raises, so one odd value cannot stop the writer.

    The fast path leaves out OPT_NON_STR_KEYS (it doubles orjson's cost);
    non-string keys in ``details`` take the second try.
    """
    try:
        return orjson.dumps(rec, _default)
    except TypeError:
        pass
    try:
        return orjson.dumps(rec, _default, _OPTS)
    except TypeError:
        pass
    try:
        return orjson.dumps(_scrub(rec), _default, _OPTS)
    except TypeError as exc:
        ev = rec.get("event", {})
        minimal = {
            "@timestamp": rec.get("@timestamp"),
            "seq": rec.get("seq"),
            "ecs": _ECS,
            "event": {"action": str(ev.get("action")), "kind": "event", "outcome": str(ev.get("outcome"))},
            "gateway": {"details": {"audit_error": f"record could not be serialized: {type(exc).__name__}"}},
        }
        return orjson.dumps(minimal)
