"""Who is asking, what they may open, and why: shared by the JSON API and the MCP server.

A caller may always ask about themselves; the answer is the decision and, for
a denial, the same safe sentence the 403 page shows (no rule, group or
condition, which would tell an attacker what to forge).  Callers the policy
lets explain for anyone (``EXPLAIN_ANYONE_PATH``; the shipped policy: group
``security``) may name another subject and get the rule-by-rule explanation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from gateway.context import Identity, RequestContext, get_context
from gateway.policy import PathError, Request
from gateway.policy.model import parse_ip

if TYPE_CHECKING:
    from starlette.types import Scope

    from gateway.services import Services

# A virtual path the policy decides: may this caller explain access for anyone?
EXPLAIN_ANYONE_PATH = "/api/policy/decision/anyone"
MAX_GROUPS = 64


class AccessError(ValueError):
    """A bad question (400) or one this caller may not ask (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Caller:
    ctx: RequestContext
    identity: Identity

    @property
    def ip(self) -> str | None:
        try:
            return str(parse_ip(self.ctx.client_ip)) if self.ctx.client_ip else None
        except ValueError:
            return None


def caller(scope: "Scope") -> Caller | None:
    """The verified caller of this request; None when the gateway chain did not run or nobody signed in."""
    ctx = get_context(scope)
    if ctx is None or ctx.identity is None:
        return None
    return Caller(ctx, ctx.identity)


def tool_entries(services: "Services", who: Caller) -> list[dict[str, str]]:
    """The tool pages this caller may open, in navigation order."""
    ident = who.identity
    tools = services.policy.current.allowed_tools(
        user=ident.user, groups=ident.groups, email=ident.email or None, ip=who.ip
    )
    base = services.settings.server.public_url
    return [
        {"id": t.id, "title": t.title, "path": t.path, "url": base + t.path, "description": t.description}
        for t in tools
    ]


def may_open(services: "Services", who: Caller, path: str, method: str = "GET") -> bool:
    """Would the policy let this caller request ``path``?"""
    ident = who.identity
    try:
        req = Request(user=ident.user, groups=ident.groups, email=ident.email or None, path=path, method=method, ip=who.ip)
        return services.policy.decide(req).allowed
    except Exception:  # noqa: BLE001 - an engine fault grants nothing
        return False


def may_explain_anyone(services: "Services", who: Caller) -> bool:
    return may_open(services, who, EXPLAIN_ANYONE_PATH)


def _groups(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        items: Iterable[object] = [g for g in value.split(",") if g.strip()]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise AccessError(400, "groups must be a list of names or a comma-separated string")
    out = tuple(str(g).strip() for g in items if isinstance(g, str) and g.strip())
    if len(out) > MAX_GROUPS or any(len(g) > 128 for g in out):
        raise AccessError(400, "too many or too long group names")
    return out


def _text(value: object, name: str, limit: int = 2048) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise AccessError(400, f"{name} must be a short printable string")
    return value


def explain_access(services: "Services", who: Caller, question: dict[str, Any]) -> dict[str, Any]:
    """Answer "may <subject> open <path> with <method>?".

    ``question``: ``path`` (required), ``method``, ``at`` (RFC 3339), and for
    callers allowed to explain for anyone: ``user``, ``groups``, ``email``, ``ip``.
    """
    path = _text(question.get("path"), "path")
    if path is None:
        raise AccessError(400, "path is required")
    method = (_text(question.get("method"), "method", 16) or "GET").upper()
    if not method.isalpha():
        raise AccessError(400, "method must be an HTTP method name")
    at_text = _text(question.get("at"), "at", 64)
    try:
        at = dt.datetime.fromisoformat(at_text) if at_text else dt.datetime.now(dt.UTC)
    except ValueError:
        raise AccessError(400, "at must be an RFC 3339 time with an offset") from None
    if at.tzinfo is None:
        raise AccessError(400, "at must carry a time-zone offset")

    ident = who.identity
    other_user = _text(question.get("user"), "user", 256)
    other_groups = _groups(question.get("groups"))
    other_email = _text(question.get("email"), "email", 320)
    other_ip = _text(question.get("ip"), "ip", 64)
    about_other = any(v is not None for v in (other_user, other_groups, other_email, other_ip))
    full = may_explain_anyone(services, who)
    if about_other and not full:
        raise AccessError(403, "Only callers allowed to explain access for anyone may ask about another user, group, address or e-mail.")

    if about_other:
        subject = {
            "user": other_user,
            "groups": list(other_groups or ()),
            "email": other_email,
            "ip": other_ip,
        }
    else:
        subject = {"user": ident.user, "groups": sorted(ident.groups), "email": ident.email or None, "ip": who.ip}
    try:
        req = Request(
            user=subject["user"], groups=subject["groups"], email=subject["email"],
            path=path, method=method, ip=subject["ip"], at=at,
        )  # fmt: skip
    except PathError as exc:
        raise AccessError(400, f"path is not allowed: {exc}") from None
    except ValueError as exc:
        raise AccessError(400, str(exc)) from None

    policy = services.policy.current
    decision = policy.decide(req)
    answer: dict[str, Any] = {
        "subject": subject,
        "request": {"path": req.path, "method": req.method, "tool": req.tool, "at": req.at.isoformat()},
        "allowed": decision.allowed,
        "effect": decision.effect,
        "policy_version": decision.policy_version,
    }
    if decision.allowed:
        answer["message"] = f"Allowed: {subject['user'] or 'an anonymous user'} may {req.method} {req.path}."
    else:
        answer["message"] = policy.denial_message(req, default_contact=services.settings.server.access_contact)
    if full:
        explanation = policy.explain(req)
        answer["rule_id"] = decision.rule_id
        answer["reason"] = decision.reason
        answer["rules"] = explanation.to_dict()["rules"]
        answer["text"] = explanation.to_text()
    return answer
