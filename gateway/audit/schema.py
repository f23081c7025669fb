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
from typing import Any, Callable, Iterable, Iterator

import orjson

ECS_VERSION = "8.11.0"

# action -> (event.category, event.type); ECS allowed values for each category.
ACTIONS: dict[str, tuple[list[str], list[str]]] = {
    "http.request": (["web"], ["access"]),
    "http.connection_refused": (["network"], ["connection", "denied"]),
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
    "audit.exported": (["file"], ["access"]),
    "audit.integrity_failed": (["file"], ["info"]),
    "mcp.call": (["web"], ["access"]),
    "alert.sent": (["process"], ["info"]),
    "state.connected": (["database"], ["info"]),
    "state.unavailable": (["database"], ["error"]),
    "state.recovered": (["database"], ["info"]),
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


# "000".."999", and "000Z".."999Z": the microseconds of a timestamp in two
# lookups instead of a format call (this runs for every record).
_MS3 = tuple(f"{i:03d}" for i in range(1000))
_US3Z = tuple(f"{i:03d}Z" for i in range(1000))


class TimestampFormatter:
    """``@timestamp`` as RFC 3339 UTC with microseconds: ``2025-11-25T11:17:00.123456Z``.

    strftime is the slow part, so the seconds prefix is cached; only the
    writer thread calls this, so the cache needs no lock.
    """

    __slots__ = ("_sec", "_prefix")

    def __init__(self) -> None:
        self._sec: int | None = None
        self._prefix = ""

    def __call__(self, ts: float) -> str:
        us_total = int(ts * 1_000_000)
        sec, us = divmod(us_total, 1_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
        return self._prefix + _MS3[us // 1000] + _US3Z[us % 1000]


def _roles(v: Any) -> Any:
    if v.__class__ is str:
        return [v]
    try:
        return sorted(v)
    except TypeError:
        return sorted(str(g) for g in v)


class _Clipped(dict):  # type: ignore[type-arg]
    """``cache[value]`` -> the value as recorded: clipped, not redacted (ToECS without a Redactor)."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit

    def __missing__(self, v: Any) -> Any:
        if self.limit is not None and v.__class__ is str and len(v) > self.limit:
            return v[: self.limit] + "...[truncated]"
        return v


class Roles(dict):  # type: ignore[type-arg]
    """``cache[groups]`` -> ``user.roles`` (a sorted tuple; orjson writes it as a list).

    Group sets repeat from request to request, so sorting happens once per
    distinct set.  Unhashable groups (a list) raise TypeError: the caller
    falls back to :func:`_roles`.
    """

    def __missing__(self, v: Any) -> Any:
        r = tuple(_roles(v))
        if len(self) >= 1024:
            self.clear()
        self[v] = r
        return r


# Distinct identities (and paths) whose serialized parts the writer keeps.
SERIALIZED_CACHE = 4096
# The serialized fast path's record after ``seq``, without its closing brace.
_TAIL = (
    b'%b%d,"outcome":%b},"http":{"request":{"id":%b,"method":%b},"response":{"status_code":%d,"body":{"bytes":%d}}}'
    b"%b%b%b"
)

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

    Entry points producing identical records:

    * as a structlog processor, ``(logger, method, event_dict)`` with keys
      ``event`` (the action), ``outcome``, ``timestamp`` (unix seconds) and
      the flat fields;
    * :meth:`build` with the fields positionally;
    * :meth:`records`, which the writer thread uses: a generator over queued
      items (tuples), one record at a time, so there is no call and no dict
      per event beyond the record itself.

    ``None`` and empty values are omitted.  Fields outside the vocabulary are
    kept under ``gateway.details`` rather than lost.  With a ``redactor``
    (gateway/audit/redact.py) the values that can carry a secret - path,
    user agent, reason, user name, email and details - go through it while
    the record is assembled (the writer's pipeline); without one, ToECS only
    maps and clips, and a :class:`~gateway.audit.redact.Redactor` processor
    can follow it in an ordinary structlog chain.  Written out field by field
    because it runs for every request (a table-driven version cost three
    times as much).
    """

    def __init__(self, replica_id: str | None = None, redactor: Any = None) -> None:
        self.replica_id = replica_id or None
        self.redactor = redactor
        self.fmt = TimestampFormatter()
        self._roles = Roles()
        # Serialized pieces for the writer's fast path (see records()).
        self._heads: dict[str, bytes] = {}
        self._parts: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        self._urls: dict[Any, bytes] = {}
        if redactor is None:
            self._text = (_Clipped(_MAX_USER), _Clipped(_MAX_EMAIL), _Clipped(_MAX_PATH), _Clipped(_MAX_UA), _Clipped(None))
        else:
            self._text = redactor.field_caches(MAX_LEN)

    def __call__(self, logger: Any, method: str, ed: dict[str, Any]) -> dict[str, Any]:
        ed = dict(ed)
        pop = ed.pop
        ts = pop("timestamp")
        action = pop("event")
        outcome = pop("outcome", None)
        values = [pop(k, None) for k in FLAT_FIELDS]
        return self.build(ts, action, outcome, *values, ed)

    def build(self, *item: Any) -> dict[str, Any]:
        """``(ts, action, outcome, *FLAT_FIELDS values, extra)`` -> record (raises on failure)."""
        return next(self.records((item,)))

    def records(
        self,
        items: Iterable[tuple[Any, ...]],
        on_error: Callable[[tuple[Any, ...], Exception], None] | None = None,
        *,
        serialized: bool = False,
    ) -> Iterator[Any]:
        """Yield one record per item, in order.

        An item that cannot be turned into a record raises, or with
        ``on_error`` is reported there and replaced by a placeholder record
        (timestamp, action, outcome and ``details.audit_error``) so the fact
        that something happened is never lost.

        With ``serialized`` (for the writer, which only serializes records),
        the common http.request shape comes already serialized, as
        ``(@timestamp, head, tail)`` with ``head + b"%d" % seq + tail + b"}"``
        equal to ``orjson.dumps`` of the record with that ``seq``: its
        identity and path parts are serialized once per distinct value,
        the rest formatted into a template.
        """
        acts = ACTIONS
        ms3, us3z = _MS3, _US3Z
        ecs = _ECS
        replica = self.replica_id
        roles_c = self._roles
        user_c, email_c, path_c, ua_c, reason_c = self._text
        red = self.redactor
        other = red.value if red is not None else _same
        fmt = self.fmt
        heads_c, parts_c, urls_c = self._heads, self._parts, self._urls
        dumps = orjson.dumps
        base = fmt._sec * 1_000_000 if fmt._sec is not None else -(1 << 62)  # the prefix's second, in us
        prefix = fmt._prefix
        for item in items:
            try:
                (ts, action, outcome, request_id, client_ip, user, email, groups, auth_method, http_method, path, tool,
                 status, nbytes, duration, decision, rule_id, policy_version, ua, reason, session_id, details, extra) = item  # fmt: skip
                us = int(ts * 1_000_000) - base
                if not 0 <= us < 1_000_000:
                    fmt(ts)
                    prefix = fmt._prefix
                    us += base
                    base = fmt._sec * 1_000_000  # type: ignore[operator]
                    us -= base
                stamp = prefix + ms3[us // 1000] + us3z[us % 1000]

                cats = acts.get(action)
                rec = None
                if (cats is not None and request_id and http_method and status.__class__ is int and nbytes is not None
                        and duration is not None and client_ip and user and email and groups and path and ua and not reason
                        and decision and rule_id and policy_version and tool and auth_method and session_id
                        and details is None and not extra):  # fmt: skip
                    # The shape of nearly every http.request (signed in, on a
                    # tool page): one literal, no per-field branches.
                    try:
                        if serialized and nbytes.__class__ is int:
                            key = (client_ip, user, email, groups, ua, decision, rule_id, policy_version, tool, auth_method, session_id)
                            parts = parts_c.get(key) or self._serialized_parts(key)
                            url = urls_c.get(path) or self._serialized_url(path)
                            head = heads_c.get(action) or self._serialized_head(action, cats)
                            tail = _TAIL % (
                                head, int(duration * 1_000_000),
                                dumps(outcome if outcome is not None else ("success" if status < 400 else "failure")),
                                dumps(request_id), dumps(http_method), status, nbytes, parts[0], url, parts[1],
                            )  # fmt: skip
                            yield (stamp, b'{"@timestamp":"%b","seq":' % stamp.encode(), tail)
                            continue
                        rec = {
                            "@timestamp": stamp,
                            "seq": 0,
                            "ecs": ecs,
                            "event": {"action": action, "kind": "event", "category": cats[0], "type": cats[1], "duration": int(duration * 1_000_000),
                                      "outcome": outcome if outcome is not None else ("success" if status < 400 else "failure")},
                            "http": {"request": {"id": request_id, "method": http_method}, "response": {"status_code": status, "body": {"bytes": nbytes}}},
                            "client": {"ip": client_ip},
                            "user": {"name": user_c[user], "email": email_c[email], "roles": roles_c[groups]},
                            "url": {"path": path_c[path]},
                            "user_agent": {"original": ua_c[ua]},
                            "gateway": {"decision": decision, "rule_id": rule_id, "policy_version": policy_version, "tool": tool,
                                        "auth_method": auth_method, "session_id": session_id},
                        }  # fmt: skip
                        if replica:
                            rec["gateway"]["replica"] = replica
                    except TypeError:  # an unhashable value somewhere: the general path copes
                        rec = None

                if rec is None:
                    if cats is None:
                        ev: dict[str, Any] = {"action": action, "kind": "event"}
                        if duration is not None:
                            ev["duration"] = int(duration * 1_000_000)
                    elif duration is not None:
                        ev = {"action": action, "kind": "event", "category": cats[0], "type": cats[1], "duration": int(duration * 1_000_000)}
                    else:
                        ev = {"action": action, "kind": "event", "category": cats[0], "type": cats[1]}
                    if reason:
                        try:
                            ev["reason"] = reason_c[reason]
                        except TypeError:  # unhashable: not cacheable, same treatment
                            ev["reason"] = other(reason)
                    if outcome is None:
                        outcome = "unknown" if status.__class__ is not int else ("success" if status < 400 else "failure")
                    ev["outcome"] = outcome
                    rec = {"@timestamp": stamp, "seq": 0, "ecs": ecs, "event": ev}

                    if status is not None:
                        resp: dict[str, Any] | None = {"status_code": status, "body": {"bytes": nbytes}} if nbytes is not None else {"status_code": status}
                    elif nbytes is not None:
                        resp = {"body": {"bytes": nbytes}}
                    else:
                        resp = None
                    if request_id:
                        rec["http"] = {"request": {"id": request_id, "method": http_method} if http_method else {"id": request_id}}
                        if resp is not None:
                            rec["http"]["response"] = resp
                    elif http_method:
                        rec["http"] = {"request": {"method": http_method}}
                        if resp is not None:
                            rec["http"]["response"] = resp
                    elif resp is not None:
                        rec["http"] = {"response": resp}
                    if client_ip:
                        rec["client"] = {"ip": client_ip}

                    if user:
                        try:
                            user = user_c[user]
                        except TypeError:
                            user = other(user)
                    if email:
                        try:
                            email = email_c[email]
                        except TypeError:
                            email = other(email)
                    if groups:
                        try:
                            groups = roles_c[groups]
                        except TypeError:
                            groups = _roles(groups)
                    if user and email and groups:
                        rec["user"] = {"name": user, "email": email, "roles": groups}
                    elif user or email or groups:
                        u = rec["user"] = {}
                        if user:
                            u["name"] = user
                        if email:
                            u["email"] = email
                        if groups:
                            u["roles"] = groups
                    if path:
                        try:
                            rec["url"] = {"path": path_c[path]}
                        except TypeError:
                            rec["url"] = {"path": other(path)}
                    if ua:
                        try:
                            rec["user_agent"] = {"original": ua_c[ua]}
                        except TypeError:
                            rec["user_agent"] = {"original": other(ua)}

                    if extra:  # fields outside the vocabulary: keep them, under details
                        more = {k: v for k, v in extra.items() if v is not None}
                        if isinstance(details, dict):
                            details = {**details, **more}
                        elif details is None or details == "":
                            details = more or None
                        else:
                            more["details"] = details
                            details = more
                    if details is None and decision and rule_id and policy_version and tool and auth_method and session_id:
                        # What nearly every http.request carries: one literal.
                        if replica:
                            rec["gateway"] = {"decision": decision, "rule_id": rule_id, "policy_version": policy_version, "tool": tool,
                                              "auth_method": auth_method, "session_id": session_id, "replica": replica}  # fmt: skip
                        else:
                            rec["gateway"] = {"decision": decision, "rule_id": rule_id, "policy_version": policy_version, "tool": tool,
                                              "auth_method": auth_method, "session_id": session_id}  # fmt: skip
                    else:
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
                        if details is not None and details != "":
                            g["details"] = other(details)
                        if replica:
                            g["replica"] = replica
                        if g:
                            rec["gateway"] = g
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(item, exc)
                rec = self.placeholder(item, exc)
            yield rec

    def _serialized_head(self, action: str, cats: tuple[Any, Any]) -> bytes:
        """``,"ecs":{...},"event":{"action":...,"type":[...],"duration":`` for one action."""
        ev = orjson.dumps({"ecs": _ECS, "event": {"action": action, "kind": "event", "category": cats[0], "type": cats[1]}})
        head = self._heads[action] = b"," + ev[1:-2] + b',"duration":'
        return head

    def _serialized_parts(self, key: tuple[Any, ...]) -> tuple[bytes, bytes]:
        """The fast path's ``client``, ``user`` (up to ``"url":``) and ``user_agent``, ``gateway`` (after the url), serialized.

        Raises TypeError for values orjson cannot serialize as they are (the dict path copes).
        """
        client_ip, user, email, groups, ua, decision, rule_id, policy_version, tool, auth_method, session_id = key
        user_c, email_c, _, ua_c, _ = self._text
        g = {"decision": decision, "rule_id": rule_id, "policy_version": policy_version, "tool": tool,
             "auth_method": auth_method, "session_id": session_id}  # fmt: skip
        if self.replica_id:
            g["replica"] = self.replica_id
        dumps = orjson.dumps
        parts = (
            b',"client":%b,"user":%b,"url":' % (dumps({"ip": client_ip}), dumps({"name": user_c[user], "email": email_c[email], "roles": self._roles[groups]})),
            b',"user_agent":%b,"gateway":%b' % (dumps({"original": ua_c[ua]}), dumps(g)),
        )
        if len(self._parts) >= SERIALIZED_CACHE:
            self._parts.clear()
        self._parts[key] = parts
        return parts

    def _serialized_url(self, path: Any) -> bytes:
        url = orjson.dumps({"path": self._text[2][path]})
        if len(self._urls) >= SERIALIZED_CACHE:
            self._urls.clear()
        self._urls[path] = url
        return url

    def placeholder(self, item: tuple[Any, ...], exc: Exception) -> dict[str, Any]:
        """The record written instead of one that could not be built: timestamp, action, outcome, the error's type."""
        details = {"audit_error": f"record could not be built: {type(exc).__name__}"}
        return self.build(item[0], item[1], item[2], *[None] * (len(FLAT_FIELDS) - 1), details, None)


def _same(v: Any) -> Any:
    return v


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


orjson_default = _default

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
