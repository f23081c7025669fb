"""The compiled policy: an index over the rules and the decision function.

Semantics (the reference is :meth:`Policy.decide_linear`, a plain scan):
default deny; a matching ``deny`` beats any matching ``allow``; among rules
of the deciding effect the first in file order is named.

Speed: :mod:`gateway.policy.index` reads only the buckets of rules that
could apply and decides from them (see there why it is laid out as it is);
an optional LRU cache keyed on the whole request (plus the minute, when
time rules exist) sits in front.
A Policy is never mutated after construction; a reload builds a new one, so
the cache dies with its version.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from gateway.tools import TOOLS, Tool, tool_by_id

from .index import RuleIndex
from .loader import FileMeta, ParsedSet, TestCase, parse_sources
from .model import DEFAULT_DENY, Decision, PolicyLoadError, Problem, Request
from .rules import Rule

if TYPE_CHECKING:
    from .explain import Explanation

_DEFAULT_CACHE = 8192


class Policy:
    """An immutable, compiled policy set with a version; safe to share between tasks."""

    def __init__(
        self,
        rules: list[Rule],
        *,
        version: str,
        tests: Iterable[TestCase] = (),
        metas: Iterable[FileMeta] = (),
        sources: Mapping[str, str] | None = None,
        warnings: Iterable[Problem] = (),
        cache_size: int = _DEFAULT_CACHE,
    ) -> None:
        self.version = version
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.tests: tuple[TestCase, ...] = tuple(tests)
        self.metas: tuple[FileMeta, ...] = tuple(metas)
        self.sources: dict[str, str] = dict(sources or {})
        self.warnings: tuple[Problem, ...] = tuple(warnings)
        self.has_time_rules = any(r.time is not None for r in self.rules)
        self._contact: dict[str, str] = {}
        for m in self.metas:
            for k, v in m.contact.items():
                self._contact.setdefault(k, v)
        self.default_decision = Decision(False, "deny", DEFAULT_DENY, "no rule allows this request (default deny)", version)
        for r in self.rules:
            if r.decision is not None and r.decision.policy_version != version:
                raise ValueError(f"rule {r.id!r} already belongs to policy {r.decision.policy_version}")
            verb = "denied" if r.deny else "allowed"
            why = f": {r.description}" if r.description else ""
            r.decision = Decision(not r.deny, r.effect, r.id, f"{verb} by rule {r.id}{why}", version)
        self._signed_in = RuleIndex(self.rules, signed_in=True)
        self._anonymous = RuleIndex(self.rules, signed_in=False)
        self._cache_size = cache_size
        self._cache: OrderedDict[Any, Decision] | None = OrderedDict() if cache_size > 0 else None

    # ------------------------------------------------------------ index

    @property
    def index_stats(self) -> dict[str, int]:
        return dict(self._signed_in.stats)

    def candidates(self, req: Request) -> list[Rule]:
        """Rules the index hands to a decision on ``req`` (a superset of those that match)."""
        return (self._signed_in if req.user is not None else self._anonymous).candidates(req)

    # ------------------------------------------------------------ decisions

    def decide(self, req: Request) -> Decision:
        """Allow or deny ``req``; cached per request tuple for this version."""
        cache = self._cache
        if cache is None:
            # _decide() spelled out: one call less on the uncached hot path.
            return (self._signed_in if req.user is not None else self._anonymous).decide(req, self.default_decision)
        key = (req.key, int(req.at.timestamp()) // 60) if self.has_time_rules else req.key
        hit = cache.get(key)
        if hit is not None:
            try:
                cache.move_to_end(key)
            except KeyError:  # evicted by a concurrent caller; harmless
                pass
            return hit
        decision = self._decide(req)
        cache[key] = decision
        if len(cache) > self._cache_size:
            try:
                cache.popitem(last=False)
            except KeyError:
                pass
        return decision

    def decide_uncached(self, req: Request) -> Decision:
        return self._decide(req)

    def _decide(self, req: Request) -> Decision:
        return (self._signed_in if req.user is not None else self._anonymous).decide(req, self.default_decision)

    def decide_linear(self, req: Request) -> Decision:
        """The reference semantics: scan every rule.  Used by explain and tests."""
        first_allow: Rule | None = None
        for r in self.rules:
            if r.deny and r.matches(req):
                return r.decision  # type: ignore[return-value]
            if first_allow is None and not r.deny and r.matches(req):
                first_allow = r
        if first_allow is not None:
            return first_allow.decision  # type: ignore[return-value]
        return self.default_decision

    # ------------------------------------------------------------ helpers for the UI

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def contact_for(self, tool_id: str | None) -> str | None:
        """Whom to ask for access: policy [meta] contact, else the tool's own contact."""
        if tool_id is not None and tool_id in self._contact:
            return self._contact[tool_id]
        t = tool_by_id(tool_id) if tool_id else None
        if t is not None and t.contact:
            return t.contact
        return self._contact.get("*")

    def allowed_tools(self, *, user: str | None, groups: Iterable[str] = (), email: str | None = None, ip: Any = None, at: Any = None) -> list[Tool]:
        """The tools this subject may open, in registry order (for navigation)."""
        groups = tuple(groups)
        out = []
        for t in TOOLS:
            req = Request(user=user, groups=groups, email=email, tool=t.id, ip=ip, at=at)
            if self.decide(req).allowed:
                out.append(t)
        return out

    def explain(self, req: Request) -> "Explanation":
        from .explain import explain

        return explain(self, req)

    def denial_message(self, req: Request, *, default_contact: str = "your security team") -> str:
        from .explain import denial_message

        return denial_message(self, req, default_contact=default_contact)

    def __repr__(self) -> str:
        return f"<Policy {self.version} rules={len(self.rules)} files={len(self.sources)}>"


def compile_parsed(parsed: ParsedSet, *, cache_size: int = _DEFAULT_CACHE, where: str = "policy", lint: bool = False) -> Policy:
    """Build a Policy, or raise PolicyLoadError listing every error.

    ``lint=True`` adds the lint warnings to ``policy.warnings`` (costs a pair
    search; the CLI and the editor want it, hot reload does not).
    """
    if parsed.errors:
        raise PolicyLoadError(parsed.problems, where=where)
    policy = Policy(
        parsed.rules,
        version=parsed.version,
        tests=parsed.tests,
        metas=parsed.metas,
        sources=parsed.sources,
        warnings=[p for p in parsed.problems if not p.is_error],
        cache_size=cache_size,
    )
    if lint:
        from .lint import lint as run_lint

        policy.warnings = tuple(policy.warnings) + tuple(run_lint(policy))
    return policy


def compile_sources(
    sources: Mapping[str, str | bytes],
    *,
    known_groups: Iterable[str] = (),
    cache_size: int = _DEFAULT_CACHE,
    lint: bool = False,
) -> Policy:
    """Parse, validate and compile a file set (name -> content); raise PolicyLoadError on errors."""
    return compile_parsed(parse_sources(sources, known_groups=known_groups), cache_size=cache_size, lint=lint)

