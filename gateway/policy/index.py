"""Find the few rules that could match a request without looking at the rest.

Level 1 files each rule under the one condition that narrows it most: its
users, its groups, its tools, or the literal prefix of its path patterns (a
segment trie).  Rules with none of those go to an "always" bucket.  Level 2
splits any bucket bigger than a handful of rules again by another condition
(user, group, tool or method).  A decision reads only the buckets its user,
groups, tool, path and method select, so its cost follows the number of rules
that *could* apply, not the size of the policy.

Each bucket entry carries the rule's *residual* matcher: the conditions the
bucket lookup has not already proven (reaching ``by_group["g"]`` proves the
groups condition; reaching trie node ``/api`` proves a ``/api/**`` pattern;
an index built for signed-in requests proves ``authenticated``).  The full
scan in ``Policy.decide_linear`` is the reference, and tests hold the two
equal on randomised policies.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .model import Request
from .rules import Rule

Residual = Callable[[Request], bool] | None
Entry = tuple[Rule, Residual]

# Preference on ties: a user list is the narrowest, groups the widest.
_DIM_RANK = {"user": 0, "tool": 1, "path": 2, "group": 3}
_DIM_CONDITION = {"user": "users", "group": "groups", "tool": "tools", "method": "methods"}
_LEAF = 4  # buckets this small are scanned, not split


class Bucket:
    __slots__ = ("flat", "dim", "keyed")

    def __init__(self, flat: tuple[Entry, ...] = (), dim: str | None = None, keyed: dict[Any, tuple[Entry, ...]] | None = None) -> None:
        self.flat = flat
        self.dim = dim
        self.keyed = keyed or {}


def _secondary_keys(r: Rule, dim: str) -> Iterable[Any] | None:
    if dim == "user":
        return r.users
    if dim == "group":
        return r.groups
    if dim == "tool":
        return None if r.tools is None or r.any_tool else r.tools
    return r.methods


def _fill(target: Bucket, items: Iterable[tuple[Rule, frozenset[str]]], primary: str | None) -> None:
    """Fill ``target`` from (rule, conditions proven by reaching it) pairs."""
    seen: dict[int, tuple[Rule, frozenset[str]]] = {}
    for r, implied in items:
        prev = seen.get(id(r))
        # The same rule twice in one bucket (two patterns, one node): keep one,
        # proving only what both ways of getting here prove.
        seen[id(r)] = (r, implied if prev is None else prev[1] & implied)
    pairs = sorted(seen.values(), key=lambda p: p[0].order)
    best: tuple[int, str, list[tuple[Rule, frozenset[str]]], dict[Any, list[tuple[Rule, frozenset[str]]]]] | None = None
    if len(pairs) > _LEAF:
        for dim in ("user", "group", "tool", "method"):
            if dim == primary:
                continue
            flat: list[tuple[Rule, frozenset[str]]] = []
            keyed: dict[Any, list[tuple[Rule, frozenset[str]]]] = {}
            for r, implied in pairs:
                keys = _secondary_keys(r, dim)
                if keys is None:
                    flat.append((r, implied))
                else:
                    for k in keys:
                        keyed.setdefault(k, []).append((r, implied | {_DIM_CONDITION[dim]}))
            if not keyed:
                continue
            cost = len(flat) + max(len(v) for v in keyed.values())
            if best is None or cost < best[0]:
                best = (cost, dim, flat, keyed)
    if best is None or best[0] >= len(pairs):
        target.flat = tuple((r, r.residual(i)) for r, i in pairs)
        return
    _, dim, flat, keyed = best
    target.flat = tuple((r, r.residual(i)) for r, i in flat)
    target.dim = dim
    target.keyed = {k: tuple((r, r.residual(i)) for r, i in v) for k, v in keyed.items()}


class _TrieNode(Bucket):
    """A trie node is its own bucket (one object less to touch per lookup)."""

    __slots__ = ("children", "pending", "has_rules")

    def __init__(self) -> None:
        super().__init__()
        self.children: dict[str, _TrieNode] = {}
        self.pending: list[tuple[Rule, frozenset[str]]] = []
        self.has_rules = False


def _primary_keys(r: Rule) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    if r.users is not None:
        out["user"] = sorted(r.users)
    if r.groups is not None:
        out["group"] = sorted(r.groups)
    if r.tools is not None:
        out["tool"] = ["*"] if r.any_tool else sorted(r.tools)
    if r.paths is not None and all(p.prefix_segments for p in r.paths):
        # A pattern with no literal first segment would sit at the trie
        # root, which every request visits: no better than "always".
        out["path"] = list(dict.fromkeys(p.prefix_segments for p in r.paths))
    return out


class RuleIndex:
    """An index over ``rules``; ``signed_in=True`` indexes for requests with a user.

    A signed-in index holds every rule and proves ``authenticated``; an
    anonymous index holds only ``authenticated = false`` rules.
    """

    def __init__(self, rules: Iterable[Rule], *, signed_in: bool) -> None:
        rules = [r for r in rules if signed_in or not r.authenticated]
        base = frozenset({"authenticated"}) if signed_in else frozenset()
        counts: dict[str, dict[Any, int]] = {d: {} for d in _DIM_RANK}
        rule_keys = [(r, _primary_keys(r)) for r in rules]
        for _, ks in rule_keys:
            for dim, keys in ks.items():
                c = counts[dim]
                for k in keys:
                    c[k] = c.get(k, 0) + 1
        by: dict[str, dict[Any, list[Rule]]] = {d: {} for d in _DIM_RANK}
        always: list[Rule] = []
        n = len(rules) + 1
        for r, ks in rule_keys:
            best: tuple[int, int, str] | None = None
            for dim, keys in ks.items():
                # Rules sharing a key are read together; a rule goes where
                # the keys it is filed under are least shared.
                cost = sum(counts[dim][k] for k in keys)
                if dim == "tool" and "*" in keys:
                    cost += n  # every tool request reads this bucket
                cand = (cost, _DIM_RANK[dim], dim)
                if best is None or cand < best:
                    best = cand
            if best is None:
                always.append(r)
                continue
            for k in ks[best[2]]:
                by[best[2]].setdefault(k, []).append(r)

        def bucket(lst: list[Rule], dim: str | None) -> Bucket:
            b = Bucket()
            proven = base | ({_DIM_CONDITION[dim]} if dim else set())
            _fill(b, ((r, proven) for r in lst), dim)
            return b

        self.by_user = {k: bucket(v, "user") for k, v in by["user"].items()}
        self.by_group = {k: bucket(v, "group") for k, v in by["group"].items()}
        tool_lists = by["tool"]
        any_tool = tool_lists.pop("*", [])
        self.by_tool = {k: bucket(v, "tool") for k, v in tool_lists.items()}
        self.any_tool = bucket(any_tool, "tool") if any_tool else None
        self.always = bucket(always, None) if always else None
        self.trie = _TrieNode()
        for segs, lst in by["path"].items():
            node = self.trie
            for seg in segs:
                node = node.children.setdefault(seg, _TrieNode())
            for r in lst:
                # Reaching this node proves the path condition only if one of
                # the rule's patterns here is "<this prefix>/**".
                proves = any(p.prefix_segments == segs and p.kind == "prefix" for p in r.paths or ())
                node.pending.append((r, base | {"paths"} if proves else base))
        stack = [self.trie]
        while stack:
            node = stack.pop()
            if node.pending:
                _fill(node, node.pending, "path")
                node.has_rules = True
                node.pending = []
            stack.extend(node.children.values())
        self.stats = {
            "rules": len(rules),
            "by_user": sum(len(v) for v in by["user"].values()),
            "by_group": sum(len(v) for v in by["group"].values()),
            "by_tool": sum(len(v) for v in tool_lists.values()) + len(any_tool),
            "by_path": sum(len(v) for v in by["path"].values()),
            "always": len(always),
        }

    def entries(self, req: Request) -> list[Entry]:
        """(rule, residual) for every rule that could match: a superset, may repeat."""
        out: list[Entry] = []
        if self.always is not None:
            _collect(self.always, req, out)
        if req.user is not None and self.by_user:
            b = self.by_user.get(req.user)
            if b is not None:
                _collect(b, req, out)
        by_group = self.by_group
        if by_group:
            for g in req.groups:
                b = by_group.get(g)
                if b is not None:
                    _collect(b, req, out)
        if req.tool is not None:
            b = self.by_tool.get(req.tool)
            if b is not None:
                _collect(b, req, out)
            if self.any_tool is not None:
                _collect(self.any_tool, req, out)
        node = self.trie
        if node.children:
            for seg in req.segments:
                node = node.children.get(seg)  # type: ignore[assignment]
                if node is None:
                    break
                if node.has_rules:
                    # _collect() inlined: this is the hottest bucket kind.
                    if node.flat:
                        out.extend(node.flat)
                    dim = node.dim
                    if dim is not None:
                        keyed = node.keyed
                        if dim == "group":
                            for g in req.groups:
                                x = keyed.get(g)
                                if x:
                                    out.extend(x)
                        else:
                            x = keyed.get(req.user if dim == "user" else req.tool if dim == "tool" else req.method)
                            if x:
                                out.extend(x)
        return out


def _collect(b: Bucket, req: Request, out: list[Entry]) -> None:
    if b.flat:
        out.extend(b.flat)
    dim = b.dim
    if dim is None:
        return
    keyed = b.keyed
    if dim == "group":
        for g in req.groups:
            x = keyed.get(g)
            if x:
                out.extend(x)
        return
    x = keyed.get(req.user if dim == "user" else req.tool if dim == "tool" else req.method)
    if x:
        out.extend(x)
