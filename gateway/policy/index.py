"""Find the few rules that could match a request without looking at the rest.

Level 1 files each rule under the one condition that narrows it most: its
users, its groups, its tools, or the literal prefix of its path patterns (a
segment trie).  Rules with none of those go to an "always" bucket.  Level 2
splits any bucket bigger than a handful of rules again by another condition
(user, group, tool or method).  A decision reads only the buckets its user,
groups, tool, path and method select, so the number of rules it looks at
follows the rules that *could* apply, not the size of the policy.

Each bucket (and each key of a split bucket) is compiled for deciding into a
:class:`Cell`.  Rules whose conditions the lookup has fully proven (reaching
``by_group["g"]`` proves the groups condition; reaching trie node ``/api``
proves a ``/api/**`` pattern; an index built for signed-in requests proves
``authenticated``) collapse into the one among them that would win; the
others keep a *residual* matcher for the conditions the lookup has not
proven.

Why it is shaped like this: past a few thousand rules the index no longer
sits in the CPU cache, so each object a decision visits is a likely cache
miss, costing more than the Python around it.  (Measured: with requests
ordered so that consecutive ones read the same buckets, a decision among
10,000 rules costs what one among 10 does.)  So the trie node for a path is itself the dict of its group split, and the
commonest shape at scale, "these groups may (not) use this path", becomes a
:class:`_Leaf`: a bare dict from group to the deciding Decision.  A
decision on such a path reads one dict and one Decision: no Cell, no Rule,
no residual call, no intermediate list.

The full scan in ``Policy.decide_linear`` is the reference, and tests hold
the two equal on randomised policies.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterable

from .model import Decision, Request
from .rules import Rule

Residual = Callable[[Request], bool]
# (rank, residual, decision): one rule that still needs checking.
Pending = tuple[int, Residual, Decision]
Proven = tuple[Rule, frozenset[str]]  # a rule and the conditions reaching it proves

# Preference on ties: a user list is the narrowest, groups the widest.
_DIM_RANK = {"user": 0, "tool": 1, "path": 2, "group": 3}
_DIM_CONDITION = {"user": "users", "group": "groups", "tool": "tools", "method": "methods"}
_LEAF = 4  # buckets this small are scanned, not split

# Every leaf of the path trie shares this one (never mutated) mapping: a
# lookup in it stays in cache, where a private empty dict per node would not.
_NO_CHILDREN: dict[str, _TrieNode | _Leaf] = {}


class Cell:
    """Rules read together, compiled: the best sure rule plus those still to check.

    Decisions pick the matching rule of lowest *rank*: a deny ranks by its
    file order, an allow by its file order after every deny, so the lowest
    rank is exactly "first deny, else first allow" (``decide_linear``).
    ``rank``/``decision`` is the best rule needing no further check
    (``no_rank``/None when there is none); ``pending`` the rules with a
    residual, best first, dropping those that could never beat ``rank``.
    ``rules`` is every rule of the group, for :meth:`RuleIndex.candidates`.
    """

    __slots__ = ("rank", "decision", "pending", "rules")

    def __init__(self, rank: int, decision: Decision | None, pending: tuple[Pending, ...], rules: tuple[Rule, ...]) -> None:
        self.rank = rank
        self.decision = decision
        self.pending = pending
        self.rules = rules


class Bucket(dict[Any, Cell]):
    """Rules filed under one key, as the Cells a decision reads.

    ``flat`` applies to every request reaching the bucket; with ``dim``
    set, the bucket is also a dict from that dimension's value (a group,
    user, tool or method) to the Cell for it.  Being that dict itself, not
    holding one, saves a decision one object (one cache miss) per bucket.
    """

    __slots__ = ("flat", "dim")

    def __init__(self) -> None:
        super().__init__()
        self.flat: Cell | None = None
        self.dim: str | None = None

    def dim_value(self, req: Request) -> Any:
        dim = self.dim
        return req.user if dim == "user" else req.tool if dim == "tool" else req.method

    def cells(self, req: Request) -> tuple[Cell, ...]:
        """The Cells of this bucket that apply to ``req``."""
        out: tuple[Cell, ...] = () if self.flat is None else (self.flat,)
        dim = self.dim
        if dim == "group":
            for g in req.groups:
                c = self.get(g)
                if c is not None:
                    out += (c,)
        elif dim is not None:
            c = self.get(self.dim_value(req))
            if c is not None:
                out += (c,)
        return out


class _TrieNode(Bucket):
    """A trie node is its own bucket: one object less to touch per lookup."""

    __slots__ = ("children",)

    def __init__(self) -> None:
        super().__init__()
        self.children: dict[str, _TrieNode | _Leaf] = {}


class _Leaf(dict[str, Decision]):
    """A trie node with no children whose rules are all split by group and
    need no further check: group -> the Decision of its best rule.

    Keys are inserted best rank first, so when several of a request's
    groups are keys, the first of them in iteration order decides.  No
    slots: the smallest object a node can be, one cache line to read.
    """

    __slots__ = ()


def _best_of(leaf: _Leaf, groups: frozenset[str]) -> Decision:
    """Several of ``groups`` have rules in ``leaf``: its keys are in rank order."""
    return next(d for g, d in leaf.items() if g in groups)


def _key(k: str) -> str:
    """One object per key value across all buckets (and policies).

    A decision's dict lookups then compare the request's value against a
    few hot strings, not thousands of equal copies scattered over the heap.
    """
    return sys.intern(k)


def _secondary_keys(r: Rule, dim: str) -> Iterable[Any] | None:
    if dim == "user":
        return r.users
    if dim == "group":
        return r.groups
    if dim == "tool":
        return None if r.tools is None or r.any_tool else r.tools
    return r.methods


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
    anonymous index holds only ``authenticated = false`` rules.  Every rule
    must already carry its ``decision`` (the Policy sets it first).
    """

    def __init__(self, rules: Iterable[Rule], *, signed_in: bool) -> None:
        rules = [r for r in rules if signed_in or not r.authenticated]
        # Ranks stay small ints (fast compares): denies 0..n-1, allows n..2n-1.
        self._allow_offset = max((r.order for r in rules), default=0) + 1
        self.no_rank = 2 * self._allow_offset
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
            self._fill(b, [(r, proven) for r in lst], dim)
            return b

        self.by_user = {_key(k): bucket(v, "user") for k, v in by["user"].items()}
        self.by_group = {_key(k): bucket(v, "group") for k, v in by["group"].items()}
        tool_lists = by["tool"]
        any_tool = tool_lists.pop("*", [])
        self.by_tool = {_key(k): bucket(v, "tool") for k, v in tool_lists.items()}
        self.any_tool = bucket(any_tool, "tool") if any_tool else None
        self.always = bucket(always, None) if always else None
        self.trie = _TrieNode()
        at_node: dict[int, tuple[_TrieNode, list[Proven]]] = {}
        for segs, lst in by["path"].items():
            node = self.trie
            for seg in segs:
                node = node.children.setdefault(_key(seg), _TrieNode())
            for r in lst:
                # Reaching this node proves the path condition only if one of
                # the rule's patterns here is "<this prefix>/**".
                proves = any(p.prefix_segments == segs and p.kind == "prefix" for p in r.paths or ())
                at_node.setdefault(id(node), (node, []))[1].append((r, base | {"paths"} if proves else base))
        for node, pairs in at_node.values():
            self._fill(node, pairs, "path")
        # For _Leaf decisions when a request also reaches other rules; and
        # what each _Leaf replaced, for candidates().
        self._leaf_rank: dict[int, int] = {}
        self._leaf_rules: dict[int, dict[str, tuple[Rule, ...]]] = {}
        stack = [self.trie]
        while stack:
            node = stack.pop()
            for seg, child in node.children.items():
                assert isinstance(child, _TrieNode)  # leaves are only made here
                leaf = self._as_leaf(child)
                if leaf is None:
                    stack.append(child)
                else:
                    node.children[seg] = leaf  # same key: iteration stays valid
            if not node.children:
                node.children = _NO_CHILDREN
        # Whether decide() needs _other_buckets() at all.
        self._has_others = self.always is not None or self.any_tool is not None or bool(self.by_user or self.by_tool)
        self.stats = {
            "rules": len(rules),
            "by_user": sum(len(v) for v in by["user"].values()),
            "by_group": sum(len(v) for v in by["group"].values()),
            "by_tool": sum(len(v) for v in tool_lists.values()) + len(any_tool),
            "by_path": sum(len(v) for v in by["path"].values()),
            "always": len(always),
        }

    # ------------------------------------------------------------ building

    def _rank(self, r: Rule) -> int:
        return r.order if r.deny else self._allow_offset + r.order

    def _cell(self, pairs: list[Proven]) -> Cell:
        """Compile (rule, conditions proven by reaching it) pairs."""
        best_rank, best = self.no_rank, None
        pending: list[Pending] = []
        for r, implied in pairs:
            assert r.decision is not None, "the Policy sets decisions before indexing"
            rank = self._rank(r)
            residual = r.residual(implied)
            if residual is None:
                if rank < best_rank:
                    best_rank, best = rank, r.decision
            else:
                pending.append((rank, residual, r.decision))
        pending.sort(key=lambda p: p[0])
        # A pending rule ranked after the sure winner can never decide.
        return Cell(best_rank, best, tuple(p for p in pending if p[0] < best_rank), tuple(r for r, _ in pairs))

    def _fill(self, target: Bucket, items: list[Proven], primary: str | None) -> None:
        """Fill ``target`` from (rule, conditions proven by reaching it) pairs."""
        seen: dict[int, Proven] = {}
        for r, implied in items:
            prev = seen.get(id(r))
            # The same rule twice in one bucket (two patterns, one node): keep one,
            # proving only what both ways of getting here prove.
            seen[id(r)] = (r, implied if prev is None else prev[1] & implied)
        pairs = sorted(seen.values(), key=lambda p: p[0].order)
        best: tuple[int, str, list[Proven], dict[Any, list[Proven]]] | None = None
        if len(pairs) > _LEAF:
            for dim in ("user", "group", "tool", "method"):
                if dim == primary:
                    continue
                flat: list[Proven] = []
                keyed: dict[Any, list[Proven]] = {}
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
            flat, keyed = pairs, {}
        else:
            _, target.dim, flat, keyed = best
        if flat:
            target.flat = self._cell(flat)
        for k, v in keyed.items():
            target[_key(k)] = self._cell(v)

    def _as_leaf(self, node: _TrieNode) -> _Leaf | None:
        """``node`` as a _Leaf, when it has that shape (see there)."""
        if node.children or node.flat is not None or node.dim != "group" or any(c.pending for c in node.values()):
            return None
        leaf = _Leaf()
        for g, c in sorted(node.items(), key=lambda kc: kc[1].rank):
            assert c.decision is not None  # nothing pending: a sure rule decides
            leaf[g] = c.decision
            self._leaf_rank[id(c.decision)] = c.rank
        self._leaf_rules[id(leaf)] = {g: c.rules for g, c in node.items()}
        return leaf

    # ------------------------------------------------------------ deciding

    def decide(self, req: Request, default: Decision) -> Decision:
        """The decision of the lowest-ranked rule that matches ``req``, or ``default``.

        One function, no helper call on the common paths (the trie and group
        buckets): at a few hundred nanoseconds a decision, each Python call
        is a visible share.  What the buckets hand out is gathered first;
        the usual outcome at scale, one rule with nothing left to check, is
        answered at once.
        """
        cells: tuple[Cell, ...] = ()
        sure: Decision | None = None  # from a _Leaf; a path reaches at most one
        children = self.trie.children
        if children:
            for seg in req.segments:
                node = children.get(seg)
                if node is None:
                    break
                if type(node) is _Leaf:
                    for g in req.groups:
                        d = node.get(g)
                        if d is not None:
                            if sure is not None:
                                sure = _best_of(node, req.groups)
                                break
                            sure = d
                    break
                if node.flat is not None:
                    cells += (node.flat,)
                dim = node.dim
                if dim == "group":
                    for g in req.groups:
                        c = node.get(g)
                        if c is not None:
                            cells += (c,)
                elif dim is not None:
                    c = node.get(node.dim_value(req))
                    if c is not None:
                        cells += (c,)
                children = node.children
                if not children:
                    break
        by_group = self.by_group
        if by_group:
            for g in req.groups:
                b = by_group.get(g)
                if b is not None:
                    if b.flat is not None:
                        cells += (b.flat,)
                    if b.dim is not None:
                        # (a group bucket is never split by group again)
                        c = b.get(b.dim_value(req))
                        if c is not None:
                            cells += (c,)
        if self._has_others:
            for b in self._other_buckets(req):
                cells += b.cells(req)

        if not cells:
            return default if sure is None else sure
        if sure is None:
            if len(cells) == 1 and not cells[0].pending:
                return cells[0].decision  # type: ignore[return-value]
            best_rank = self.no_rank
            best = default
        else:
            best_rank = self._leaf_rank[id(sure)]
            best = sure
        # Lowest rank wins.  Sure ranks first, so a residual runs only if
        # its rule could still win.
        for c in cells:
            if c.rank < best_rank:
                best_rank = c.rank
                best = c.decision  # type: ignore[assignment]
        for c in cells:
            for rank, residual, decision in c.pending:
                if rank >= best_rank:
                    break  # sorted: nothing further in this cell can win
                if residual(req):
                    best_rank = rank
                    best = decision
                    break
        return best

    def _other_buckets(self, req: Request) -> list[Bucket]:
        out: list[Bucket] = []
        if self.always is not None:
            out.append(self.always)
        if req.user is not None and self.by_user:
            b = self.by_user.get(req.user)
            if b is not None:
                out.append(b)
        if req.tool is not None:
            b = self.by_tool.get(req.tool)
            if b is not None:
                out.append(b)
            if self.any_tool is not None:
                out.append(self.any_tool)
        return out

    def candidates(self, req: Request) -> list[Rule]:
        """Every rule the index hands to a decision on ``req`` (a superset of those that match)."""
        found: list[tuple[Rule, ...]] = []
        buckets = self._other_buckets(req) + [b for b in (self.by_group.get(g) for g in req.groups) if b is not None]
        children = self.trie.children
        for seg in req.segments:
            node = children.get(seg)
            if node is None:
                break
            if type(node) is _Leaf:
                replaced = self._leaf_rules[id(node)]
                found += [replaced[g] for g in req.groups if g in replaced]
                break
            buckets.append(node)
            children = node.children
        found += [c.rules for b in buckets for c in b.cells(req)]
        seen: dict[int, Rule] = {}
        for rules in found:
            for r in rules:
                seen.setdefault(id(r), r)
        return list(seen.values())
