"""A compiled rule: its conditions as small predicates, in a fixed order.

The same predicate list answers "does it match?" on the hot path and "which
condition failed first?" for explanations, so the two can never disagree.
"""

from __future__ import annotations

import ipaddress
import types
from datetime import datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo

from gateway.tools import tool_by_id

from .model import Decision, IPAddress, Request
from .paths import PathPattern

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MATCH_CODE: dict[tuple[str, tuple[str, ...]], types.CodeType] = {}
_NO_GLOBALS: dict[str, Any] = {"__builtins__": {}}

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Evaluation (and explanation) order: cheap, selective checks first.
CONDITION_ORDER = ("authenticated", "tools", "paths", "methods", "users", "groups", "email_domains", "networks", "time")


class TimeWindow:
    """Days of the week and/or a daily hours range, read in one time zone.

    ``hours = "22:00-06:00"`` wraps past midnight; ``days`` is checked against
    the local date of the instant being decided.  The end minute is exclusive.
    """

    __slots__ = ("days", "start", "end", "tz", "tz_name", "days_text", "hours_text")

    def __init__(self, *, days: frozenset[int] | None, start: int | None, end: int | None, tz_name: str, days_text: str = "", hours_text: str = "") -> None:
        self.days = days
        self.start = start
        self.end = end
        self.tz_name = tz_name
        self.tz = ZoneInfo(tz_name)
        self.days_text = days_text
        self.hours_text = hours_text

    def _local(self, at: datetime) -> datetime:
        return at.astimezone(self.tz)

    def day_ok(self, local: datetime) -> bool:
        return self.days is None or local.weekday() in self.days

    def hours_ok(self, local: datetime) -> bool:
        if self.start is None or self.end is None:
            return True
        m = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= m < self.end
        return m >= self.start or m < self.end

    def contains(self, at: datetime) -> bool:
        local = self._local(at)
        return self.day_ok(local) and self.hours_ok(local)

    def describe(self) -> str:
        parts = [p for p in (self.days_text, self.hours_text) if p]
        return " ".join(parts) + f" ({self.tz_name})"

    def why_not(self, at: datetime) -> str:
        local = self._local(at)
        stamp = f"{DAY_NAMES[local.weekday()]} {local:%Y-%m-%d %H:%M} {self.tz_name}"
        if not self.day_ok(local):
            return f"{stamp} is not on {self.days_text}"
        return f"{stamp} is outside {self.hours_text}"

    def same_as(self, other: "TimeWindow") -> bool:
        return (self.days, self.start, self.end, self.tz_name) == (other.days, other.start, other.end, other.tz_name)


def _fmt(items: object) -> str:
    return ", ".join(str(i) for i in sorted(items, key=str))  # type: ignore[call-overload]


class Rule:
    """One ``[[rule]]`` after validation.  ``None`` for a condition = not constrained."""

    __slots__ = (
        "id", "effect", "deny", "description", "file", "line", "order",
        "authenticated", "tools", "any_tool", "paths", "methods", "users", "groups",
        "email_exact", "email_suffixes", "networks", "time", "checks", "match", "decision", "_residuals",
    )

    def __init__(
        self,
        *,
        id: str,
        effect: str,
        description: str = "",
        file: str = "",
        line: int | None = None,
        order: int = 0,
        authenticated: bool = True,
        tools: frozenset[str] | None = None,
        any_tool: bool = False,
        paths: tuple[PathPattern, ...] | None = None,
        methods: frozenset[str] | None = None,
        users: frozenset[str] | None = None,
        groups: frozenset[str] | None = None,
        email_domains: frozenset[str] | None = None,
        networks: tuple[IPNetwork, ...] | None = None,
        time: TimeWindow | None = None,
    ) -> None:
        self.id = id
        self.effect = effect
        self.deny = effect == "deny"
        self.description = description
        self.file = file
        self.line = line
        self.order = order
        self.authenticated = authenticated
        self.tools = tools
        self.any_tool = any_tool
        self.paths = paths
        self.methods = methods
        self.users = users
        self.groups = groups
        if email_domains is None:
            self.email_exact: frozenset[str] | None = None
            self.email_suffixes: tuple[str, ...] = ()
        else:
            self.email_exact = frozenset(d for d in email_domains if not d.startswith("*."))
            self.email_suffixes = tuple(sorted(d[1:] for d in email_domains if d.startswith("*.")))
        self.networks = networks
        self.time = time
        self.checks = self._build_checks()
        self._residuals: dict[frozenset[str], Callable[[Request], bool] | None] = {}
        self.match: Callable[[Request], bool] = self._fuse() or _always
        self.decision: Decision | None = None  # filled in with the policy version

    # -- conditions

    @property
    def email_domains(self) -> frozenset[str] | None:
        if self.email_exact is None:
            return None
        return self.email_exact | frozenset("*" + s for s in self.email_suffixes)

    @property
    def unconditional(self) -> bool:
        """No condition besides the sign-in requirement."""
        return all(
            getattr(self, a) is None
            for a in ("tools", "paths", "methods", "users", "groups", "email_exact", "networks", "time")
        )

    def _build_checks(self) -> tuple[tuple[str, Callable[[Request], bool]], ...]:
        checks: list[tuple[str, Callable[[Request], bool]]] = []
        if self.authenticated:
            checks.append(("authenticated", lambda r: r.user is not None))
        if self.tools is not None:
            if self.any_tool:
                checks.append(("tools", lambda r: r.tool is not None))
            else:
                tools = self.tools
                checks.append(("tools", lambda r: r.tool in tools))
        if self.paths is not None:
            pats = self.paths
            if len(pats) == 1:
                checks.append(("paths", lambda r, m=pats[0].matches: m(r.path)))
            else:
                checks.append(("paths", lambda r: any(p.matches(r.path) for p in pats)))
        if self.methods is not None:
            methods = self.methods
            checks.append(("methods", lambda r: r.method in methods))
        if self.users is not None:
            users = self.users
            checks.append(("users", lambda r: r.user in users))
        if self.groups is not None:
            groups = self.groups
            checks.append(("groups", lambda r: not groups.isdisjoint(r.groups)))
        if self.email_exact is not None:
            checks.append(("email_domains", self._email_ok))
        if self.networks is not None:
            checks.append(("networks", self._network_ok))
        if self.time is not None:
            window = self.time
            checks.append(("time", lambda r: window.contains(r.at)))
        return tuple(checks)

    def residual(self, implied: frozenset[str]) -> Callable[[Request], bool] | None:
        """The matcher for the conditions the index has *not* already proven.

        ``implied`` names conditions (as in CONDITION_ORDER) that hold for
        every request reaching this rule through one index bucket.  None
        means nothing is left to check.
        """
        fn = self._residuals.get(implied)
        if fn is None and implied not in self._residuals:
            fn = self._fuse(implied)
            self._residuals[implied] = fn
        return fn

    def _fuse(self, skip: frozenset[str] = frozenset()) -> Callable[[Request], bool] | None:
        """One function with the conditions not in ``skip`` inlined (None if none remain).

        Same conditions, same order as ``checks`` (tests compare the two).
        Policy values are bound as default arguments, never pasted into
        the source, so nothing from a policy file is ever code.
        """
        env: dict[str, Any] = {}
        parts: list[str] = []
        if self.authenticated and "authenticated" not in skip:
            parts.append("r.user is not None")
        if self.tools is not None and "tools" not in skip:
            if self.any_tool:
                parts.append("r.tool is not None")
            else:
                env["TOOLS"] = self.tools
                parts.append("r.tool in TOOLS")
        if self.paths is not None and "paths" not in skip:
            alts = []
            for i, p in enumerate(self.paths):
                if p.kind == "exact":
                    env[f"P{i}"] = p.literal
                    alts.append(f"r.path == P{i}")
                elif p.kind == "prefix" and p.literal == "/":
                    alts.append("True")
                elif p.kind == "prefix":
                    env[f"P{i}"] = p.literal
                    env[f"S{i}"] = p.literal + "/"
                    alts.append(f"r.path == P{i} or r.path.startswith(S{i})")
                else:
                    env[f"M{i}"] = p.matches
                    alts.append(f"M{i}(r.path)")
            parts.append("(" + " or ".join(alts) + ")")
        if self.methods is not None and "methods" not in skip:
            env["METHODS"] = self.methods
            parts.append("r.method in METHODS")
        if self.users is not None and "users" not in skip:
            env["USERS"] = self.users
            parts.append("r.user in USERS")
        if self.groups is not None and "groups" not in skip:
            env["GROUPS"] = self.groups
            parts.append("not GROUPS.isdisjoint(r.groups)")
        if self.email_exact is not None and "email_domains" not in skip:
            env["EMAIL"] = self._email_ok
            parts.append("EMAIL(r)")
        if self.networks is not None and "networks" not in skip:
            env["NETWORKS"] = self._network_ok
            parts.append("NETWORKS(r)")
        if self.time is not None and "time" not in skip:
            env["WINDOW"] = self.time.contains
            parts.append("WINDOW(r.at)")
        if not parts:
            return None
        expr = " and ".join(parts)
        names = tuple(env)
        key = (expr, names)
        code = _MATCH_CODE.get(key)
        if code is None:
            # The source depends only on which conditions a rule has, so
            # thousands of rules share a handful of compiled shapes.  Values
            # arrive as default arguments (fast locals; one shared code object
            # with per-rule globals would defeat CPython's global caches).
            params = "".join(f", {n}=None" for n in names)
            module = compile(f"def match(r{params}):\n    return {expr}\n", "<policy rule>", "exec")
            code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
            _MATCH_CODE[key] = code
        return types.FunctionType(code, _NO_GLOBALS, "match", tuple(env.values()))

    def _email_ok(self, r: Request) -> bool:
        domain = _domain(r.email)
        if domain is None:
            return False
        assert self.email_exact is not None
        return domain in self.email_exact or any(domain.endswith(s) for s in self.email_suffixes)

    def _network_ok(self, r: Request) -> bool:
        ip = r.ip
        if ip is None:
            return False
        assert self.networks is not None
        return any(ip in n for n in self.networks)

    def matches(self, r: Request) -> bool:
        return self.match(r)

    def first_failure(self, r: Request) -> str | None:
        for name, check in self.checks:
            if not check(r):
                return name
        return None

    def why_not(self, r: Request) -> str | None:
        """The first failing condition, in words; None when the rule matches."""
        name = self.first_failure(r)
        if name is None:
            return None
        if name == "authenticated":
            return "request is anonymous; the rule applies to signed-in users only"
        if name == "tools":
            want = "any tool page" if self.any_tool else f"tool {_fmt(self.tools)}"
            if r.tool is None:
                return f"path {r.path} is not a tool page; the rule covers {want}"
            return f"tool is {r.tool}; the rule covers {want}"
        if name == "paths":
            return f"path {r.path} matches none of {_fmt(p.text for p in self.paths or ())}"
        if name == "methods":
            return f"method {r.method} is not one of {_fmt(self.methods)}"
        if name == "users":
            return f"user {r.user} is not one of {_fmt(self.users)}"
        if name == "groups":
            have = _fmt(r.groups) if r.groups else "no groups"
            return f"user is in none of the groups {_fmt(self.groups)} (has {have})"
        if name == "email_domains":
            if r.email is None or _domain(r.email) is None:
                return f"request has no email address; the rule needs a domain in {_fmt(self.email_domains)}"
            return f"email domain {_domain(r.email)} is not one of {_fmt(self.email_domains)}"
        if name == "networks":
            if r.ip is None:
                return f"client address is unknown; the rule needs one in {_fmt(self.networks)}"
            return f"client address {r.ip} is in none of {_fmt(self.networks)}"
        assert self.time is not None
        return self.time.why_not(r.at)

    def conditions_text(self) -> str:
        """A one-line summary of the rule's conditions, for listings."""
        out = []
        if not self.authenticated:
            out.append("signed-in or anonymous")
        if self.tools is not None:
            out.append("tools=*" if self.any_tool else f"tools={_fmt(self.tools)}")
        if self.paths is not None:
            out.append(f"paths={_fmt(p.text for p in self.paths)}")
        for label, value in (("methods", self.methods), ("users", self.users), ("groups", self.groups), ("email_domains", self.email_domains), ("networks", self.networks)):
            if value is not None:
                out.append(f"{label}={_fmt(value)}")
        if self.time is not None:
            out.append(f"time={self.time.describe()}")
        return " ".join(out) if out else "(no conditions)"

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __repr__(self) -> str:
        return f"Rule({self.id!r}, {self.effect}, {self.conditions_text()})"


def _always(r: Request) -> bool:
    return True


def _domain(email: str | None) -> str | None:
    if not email or email.count("@") != 1:
        return None
    domain = email.rsplit("@", 1)[1]
    return domain or None


def covers(d: Rule, a: Rule) -> bool:
    """True only when every request ``a`` matches is surely matched by ``d``.

    Conservative: "False" means "could not prove it", which keeps lint
    warnings free of false alarms.
    """
    if d.authenticated and not a.authenticated:
        return False
    if d.tools is not None:
        if a.tools is None:
            return False
        if not d.any_tool and (a.any_tool or not a.tools <= d.tools):
            return False
    if d.paths is not None:
        if a.paths is None:
            return False
        if not all(any(q.covers(p) for q in d.paths) for p in a.paths):
            return False
    for attr in ("methods", "users", "groups"):
        dv, av = getattr(d, attr), getattr(a, attr)
        if dv is not None and (av is None or not av <= dv):
            return False
    if d.email_exact is not None:
        if a.email_exact is None:
            return False
        for dom in a.email_exact:
            if dom not in d.email_exact and not any(dom.endswith(s) for s in d.email_suffixes):
                return False
        if not set(a.email_suffixes) <= set(d.email_suffixes):
            return False
    if d.networks is not None:
        if a.networks is None:
            return False
        for an in a.networks:
            if not any(an.version == dn.version and an.subnet_of(dn) for dn in d.networks):  # type: ignore[arg-type]
                return False
    if d.time is not None:
        if a.time is None or not d.time.same_as(a.time):
            return False
    return True


def tool_title(tool_id: str | None) -> str | None:
    t = tool_by_id(tool_id) if tool_id else None
    return t.title if t else None


__all__ = ["CONDITION_ORDER", "DAY_NAMES", "IPAddress", "Rule", "TimeWindow", "covers", "tool_title"]
