"""The per-request record every middleware reads and fills in.

The request-context middleware puts one :class:`RequestContext` into
``scope["gateway"]`` before anything else runs; later layers add what they
learn (the verified identity, the policy decision) and the audit middleware
writes it out when the request or websocket session ends.  One mutable object
rather than many scope keys keeps the contract between layers in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, MutableMapping

SCOPE_KEY = "gateway"


@dataclass(frozen=True, slots=True)
class Identity:
    """A user the gateway has verified; nothing here comes from a client claim."""

    user: str
    email: str = ""
    groups: frozenset[str] = frozenset()
    auth_method: str = "session"  # session | password | oidc | token | upstream
    session_id: str | None = None
    expires_at: float | None = None  # unix seconds
    display_name: str = ""
    issued_at: float | None = None  # unix seconds; API tokens (revocation re-checks on websockets)
    token_id: str | None = None  # an API token's jti


@dataclass(slots=True)
class RequestContext:
    request_id: str
    client_ip: str
    scheme: str
    host: str
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    path: str = "/"  # normalised path, as policy sees it
    tool: str | None = None
    identity: Identity | None = None
    decision: str | None = None  # allow | deny | none (public route) | error
    rule_id: str | None = None
    policy_version: str | None = None
    deny_reason: str | None = None
    status: int | None = None  # set by the request-context layer as the response passes
    bytes_sent: int = 0
    response_started: bool = False
    user_agent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def get_context(scope: MutableMapping[str, Any]) -> RequestContext | None:
    ctx = scope.get(SCOPE_KEY)
    return ctx if ctx.__class__ is RequestContext else None
