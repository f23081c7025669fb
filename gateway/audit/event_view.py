"""A read-only, dict-like view of one queued audit item, for listeners.

Listeners (metrics, alerts, the live feed) run on the emitting thread, i.e.
on the request path, and most of them read two or three fields and return.
Building a dict of all ~20 fields per event cost more than every listener
together; this view wraps the queued tuple instead and looks fields up on
demand.  It behaves like the flat dict listeners were given before: only
fields that were set are present, ``groups`` is what the caller passed, and
extra keyword fields appear as top-level keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from operator import itemgetter
from typing import Any

# The order of the tuple that AuditTrail.emit() queues.
ITEM_FIELDS = (
    "ts", "action", "outcome", "request_id", "client_ip", "user", "email", "groups", "auth_method", "method",
    "path", "tool", "status", "bytes", "duration_ms", "decision", "rule_id", "policy_version", "user_agent",
    "reason", "session_id", "details", "extra",
)  # fmt: skip
_INDEX = {k: i for i, k in enumerate(ITEM_FIELDS) if k != "extra"}
_EXTRA = len(ITEM_FIELDS) - 1
_GROUPS = _INDEX["groups"]


class AuditEvent(Mapping[str, Any]):
    """``event.get("action")``, ``event["status"]``, ``dict(event)``: the emit fields that were set."""

    __slots__ = ("_item", "_groups")

    def __init__(self, item: tuple[Any, ...], groups: Any = None) -> None:
        self._item = item
        self._groups = groups  # as the caller gave them (the item holds a sorted copy)

    def get(self, key: str, default: Any = None) -> Any:
        i = _INDEX.get(key)
        if i is not None:
            v = self._groups if i == _GROUPS and self._groups is not None else self._item[i]
            if v is not None:
                return v
            # Extra fields cannot shadow named ones (emit binds those first).
            return default
        extra = self._item[_EXTRA]
        if extra:
            v = extra.get(key)
            if v is not None:
                return v
        return default

    def __getitem__(self, key: str) -> Any:
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING

    def __iter__(self) -> Iterator[str]:
        item = self._item
        for k, i in _INDEX.items():
            if item[i] is not None or (i == _GROUPS and self._groups is not None):
                yield k
        extra = item[_EXTRA]
        if extra:
            yield from (k for k, v in extra.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"AuditEvent({dict(self)!r})"


_MISSING: Any = object()


def picker(*names: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function returning the named fields of an event as a tuple (None where unset).

    One C-level call on an :class:`AuditEvent` (an ``itemgetter`` over the
    queued tuple); plain dicts (tests, replays) work too.  Named emit fields
    only, ``groups`` excluded (the view may substitute the caller's value).
    """
    for n in names:
        if n not in _INDEX or n == "groups":
            raise ValueError(f"picker: {n!r} is not a named emit field")
    getter = itemgetter(*(_INDEX[n] for n in names))
    single = len(names) == 1

    def pick(event: Mapping[str, Any]) -> tuple[Any, ...]:
        if event.__class__ is AuditEvent:
            got = getter(event._item)  # type: ignore[attr-defined]
            return (got,) if single else got
        return tuple(event.get(n) for n in names)

    return pick
