"""The values the policy engine takes and returns: requests, decisions, problems."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from gateway.tools import tool_by_id, tool_for_path

from .paths import normalize_path

if TYPE_CHECKING:
    from gateway.context import Identity

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY = "default-deny"


def parse_ip(value: str | IPAddress | None) -> IPAddress | None:
    """An address object (IPv4-mapped IPv6 unwrapped), None for ""/None; ValueError otherwise."""
    if value is None or value == "":
        return None
    ip = value if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ipaddress.ip_address(value.strip())
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # ::ffff:10.0.0.1 must hit the same rules as 10.0.0.1
        return ip.ipv4_mapped
    return ip


class Request:
    """One question for the policy: may this subject do this, here, now?

    The constructor normalises everything (path via :func:`normalize_path`,
    which may raise :class:`~gateway.policy.paths.PathError`; user, groups
    and email are case-folded) so a Request can never carry a spelling that
    evades a rule.  ``tool`` is derived from the path when not given; when
    only ``tool`` is given the path is the tool's page path.  For a page check
    that arrives over Streamlit's websocket, pass ``tool=`` alone.
    ``user=None`` (or "") is an anonymous request.  ``ip=None`` means the
    address is unknown: ``networks`` conditions then never match.
    """

    __slots__ = ("user", "groups", "email", "path", "segments", "tool", "method", "ip", "at", "key")

    def __init__(
        self,
        *,
        user: str | None = None,
        groups: Iterable[str] = (),
        email: str | None = None,
        path: str | bytes | None = None,
        tool: str | None = None,
        method: str = "GET",
        ip: str | IPAddress | None = None,
        at: datetime | None = None,
    ) -> None:
        self.user: str | None = user.strip().casefold() or None if user else None
        if isinstance(groups, str):
            raise TypeError("groups must be an iterable of names, not a string")
        self.groups: frozenset[str] = frozenset(g.strip().casefold() for g in groups if g and g.strip())
        self.email: str | None = email.strip().lower() or None if email else None
        if tool is not None:
            t = tool_by_id(tool.lower())
            if t is None:
                raise ValueError(f"unknown tool {tool!r}")
            tool = t.id
        if path is None:
            if tool is None:
                raise ValueError("a request needs a path or a tool")
            self.path = tool_by_id(tool).path  # type: ignore[union-attr]
        else:
            self.path = normalize_path(path)
            derived = tool_for_path(self.path)
            derived_id = derived.id if derived else None
            if tool is not None and tool != derived_id:
                # Deciding "tool audit" while matching path rules against some
                # other path would let a path rule grant the page.
                raise ValueError(f"tool {tool!r} does not match path {self.path!r}")
            tool = derived_id
        self.tool: str | None = tool
        self.segments: tuple[str, ...] = tuple(self.path[1:].split("/")) if self.path != "/" else ()
        m = (method or "GET").strip().upper()
        if not m.isalpha():
            raise ValueError(f"bad method {method!r}")
        self.method: str = m
        self.ip: IPAddress | None = parse_ip(ip)
        if at is None:
            at = datetime.now(timezone.utc)
        elif at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("request time must be timezone-aware")
        self.at: datetime = at
        self.key = (self.user, self.groups, self.email, self.path, self.tool, self.method, self.ip)

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    @classmethod
    def from_identity(
        cls,
        identity: "Identity | None",
        *,
        path: str | bytes | None = None,
        tool: str | None = None,
        method: str = "GET",
        ip: str | IPAddress | None = None,
        at: datetime | None = None,
    ) -> "Request":
        """Build from the verified identity in the request context (None = anonymous)."""
        if identity is None:
            return cls(path=path, tool=tool, method=method, ip=ip, at=at)
        return cls(
            user=identity.user,
            groups=identity.groups,
            email=identity.email or None,
            path=path,
            tool=tool,
            method=method,
            ip=ip,
            at=at,
        )

    def describe(self) -> str:
        parts = [f"user={self.user or '(anonymous)'}"]
        parts.append(f"groups=[{','.join(sorted(self.groups))}]")
        if self.email:
            parts.append(f"email={self.email}")
        parts.append(f"path={self.path}")
        if self.tool:
            parts.append(f"tool={self.tool}")
        parts.append(f"method={self.method}")
        if self.ip is not None:
            parts.append(f"ip={self.ip}")
        parts.append(f"at={self.at.isoformat()}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Request({self.describe()})"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    effect: str  # "allow" | "deny"
    rule_id: str  # the deciding rule, or "default-deny"
    reason: str
    policy_version: str


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a policy file; errors block loading, warnings do not."""

    severity: str  # "error" | "warning"
    file: str
    line: int | None
    message: str
    rule_id: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"


class PolicyLoadError(Exception):
    """The policy set has errors and was not (or could not be) applied."""

    def __init__(self, problems: list[Problem], *, where: str = "policy") -> None:
        self.problems = [p for p in problems if p.is_error] or list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{where}: {n} error{'s' if n != 1 else ''}:\n{lines}")
