"""Warnings about rules that parse but cannot do what their author meant.

All findings are warnings (the policy still loads): a deny that swallows an
allow, a rule that an earlier rule of the same effect already covers, rules
with no conditions at all.  ``covers`` is conservative, so every warning is
real.  Unknown groups are errors and are reported by the loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from .model import Problem
from .rules import Rule, covers

if TYPE_CHECKING:
    from .engine import Policy


class _Candidates:
    """Prunes the O(n^2) pair search: a rule can only cover ``a`` if, in each
    dimension, it is unconstrained or shares ``a``'s first key there."""

    _DIMS = ("tools", "groups", "users", "methods", "path")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.free: dict[str, list[Rule]] = {d: [] for d in self._DIMS}
        self.keyed: dict[str, dict[Any, list[Rule]]] = {d: {} for d in self._DIMS}
        for r in rules:
            for d in self._DIMS:
                keys = self._keys(r, d)
                if keys is None:
                    self.free[d].append(r)
                else:
                    for k in keys:
                        self.keyed[d].setdefault(k, []).append(r)

    @staticmethod
    def _keys(r: Rule, d: str) -> set[Any] | None:
        if d == "tools":
            return None if r.tools is None or r.any_tool else set(r.tools)
        if d == "path":
            if r.paths is None or any(not p.prefix_segments for p in r.paths):
                return None
            return {p.prefix_segments[0] for p in r.paths}
        v = getattr(r, d)
        return None if v is None else set(v)

    def for_rule(self, a: Rule) -> list[Rule]:
        best: list[Rule] | None = None
        for d in self._DIMS:
            keys = self._keys(a, d)
            if not keys:
                continue
            k = min(keys, key=str)
            cand = self.free[d] + self.keyed[d].get(k, [])
            if best is None or len(cand) < len(best):
                best = cand
        return self._all() if best is None else best

    def _all(self) -> list[Rule]:
        seen: dict[int, Rule] = {}
        for d in self._DIMS:
            for r in self.free[d]:
                seen[id(r)] = r
            for lst in self.keyed[d].values():
                for r in lst:
                    seen[id(r)] = r
        return list(seen.values())


def lint(policy: "Policy") -> list[Problem]:
    out: list[Problem] = []
    rules = policy.rules
    for r in rules:
        if r.unconditional and not r.deny:
            who = "every user, signed in or not," if not r.authenticated else "every signed-in user"
            out.append(Problem("warning", r.file, r.line, f"allow rule {r.id!r} has no conditions: it lets {who} open every path", r.id))
        elif r.unconditional:
            out.append(Problem("warning", r.file, r.line, f"deny rule {r.id!r} has no conditions: it denies every {'signed-in ' if r.authenticated else ''}request, so no allow rule can take effect", r.id))

    denies = _Candidates(r for r in rules if r.deny)
    allows = _Candidates(r for r in rules if not r.deny)
    for a in rules:
        by_order = sorted(denies.for_rule(a), key=lambda r: r.order)
        shadow = next((d for d in by_order if d is not a and (not a.deny or d.order < a.order) and covers(d, a)), None)
        if shadow is not None:
            if a.deny:
                msg = f"deny rule {a.id!r} is unreachable: the earlier deny {shadow.id!r} ({shadow.where()}) matches every request it matches"
            else:
                msg = f"allow rule {a.id!r} never takes effect: deny rule {shadow.id!r} ({shadow.where()}) matches every request it matches"
            out.append(Problem("warning", a.file, a.line, msg, a.id))
            continue
        if a.deny:
            continue
        earlier = sorted((e for e in allows.for_rule(a) if e.order < a.order), key=lambda r: r.order)
        e = next((e for e in earlier if covers(e, a)), None)
        if e is not None:
            out.append(Problem("warning", a.file, a.line, f"allow rule {a.id!r} is redundant: {e.id!r} ({e.where()}) already allows every request it matches", a.id))
    return out
