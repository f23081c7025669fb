"""Everything the gateway runs, built once from settings and started in order.

The app factory asks this container for its middleware, routes and readiness
checks; the lifespan starts and stops the parts in one place: the audit
trail first (everything else reports to it) and last to stop (so the stop
events and the final requests are on disk before the process ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Scope

from gateway.audit import AuditTrail, AuditUnavailable
from gateway.auth import IdentityLayer, build_identity
from gateway.auth.keyring import KeyRingError
from gateway.auth.users import UserError
from gateway.context import get_context
from gateway.errors import error_response
from gateway.features import Feature, ReadinessCheck, build_features
from gateway.middleware.audit import AuditMiddleware
from gateway.middleware.authorization import AccessQuery, AuthorizationMiddleware
from gateway.middleware.security_headers import SecurityHeadersMiddleware
from gateway.policy import Decision, PolicyLoadError, PolicyStore, Request, normalize_path
from gateway.settings import ConfigError, Settings
from gateway.state import StateFeature, build_state
from gateway.tools import Tool

log = structlog.get_logger(__name__)

DECISION_CACHE_SIZE = 8192


def _ip_or_none(address: str | None) -> str | None:
    """An unknown client address matches no ``networks`` condition (rather than erroring)."""
    if not address:
        return None
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


def _unavailable(scope: Scope) -> ASGIApp:
    # The audit layer sits outside the headers layer, so its own refusal is
    # hardened here rather than left bare.
    ctx = get_context(scope)
    response = error_response(scope, 503, detail="The audit trail cannot record requests right now; try again shortly.")
    return SecurityHeadersMiddleware(response, https=bool(ctx and ctx.scheme == "https"))


@dataclass
class Services:
    settings: Settings
    audit: AuditTrail
    policy: PolicyStore
    identity: IdentityLayer
    upstream: Any = None
    state: Any = None  # gateway.state backend (memory or redis)
    features: list[Feature] = field(default_factory=list)
    _decisions: dict[tuple[Any, ...], Decision] = field(default_factory=dict)
    started: bool = False
    _stop: asyncio.Event | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    # ------------------------------------------------------------ audit

    def emit(self, action: str, *, outcome: str | None = None, **fields: Any) -> None:
        """Audit an event from anywhere; a refused event is logged, never lost silently."""
        try:
            self.audit.emit(action, outcome=outcome, **fields)
        except AuditUnavailable as exc:
            # Requests are refused at the door while the trail is down; an
            # event raised off the request path can only be logged loudly.
            log.error("audit_event_lost", action=action, reason=str(exc))

    @property
    def streamlit_secret(self) -> bytes:
        return self.identity.session_keys.signing[1]

    # ------------------------------------------------------------ policy

    def policy_request(self, q: AccessQuery) -> Request:
        ident = q.identity
        return Request(
            user=ident.user,
            groups=ident.groups,
            email=ident.email or None,
            path=q.path,
            method=q.method,
            ip=_ip_or_none(q.client_ip),
            at=dt.datetime.now(dt.UTC),
        )

    def authorize(self, q: AccessQuery) -> Decision:
        # Building a policy Request (normalising every field) costs more than
        # the indexed decision itself; the same signed-in user asking for the
        # same path again is the common case, so remember the answer for this
        # policy version (and this minute, when time windows exist).
        policy = self.policy.current
        minute = int(time.time()) // 60 if policy.has_time_rules else 0
        key = (q.identity, q.path, q.method, q.client_ip, policy.version, minute)
        cache = self._decisions
        decision = cache.get(key)
        if decision is None:
            decision = policy.decide(self.policy_request(q))
            if len(cache) >= DECISION_CACHE_SIZE:
                cache.clear()
            cache[key] = decision
        return decision

    def deny_text(self, q: AccessQuery, decision: Decision) -> str:
        return self.policy.current.denial_message(
            self.policy_request(q), default_contact=self.settings.server.access_contact
        )

    def page_request(self, user: Any, tool: Tool) -> Request:
        return Request(
            user=user.name,
            groups=user.groups,
            email=user.email or None,
            tool=tool.id,
            method="GET",
            ip=_ip_or_none(user.ip),
            at=dt.datetime.now(dt.UTC),
        )

    def page_decision(self, user: Any, tool: Tool) -> Decision:
        return self.policy.decide(self.page_request(user, tool))

    def page_allowed(self, user: Any, tool: Tool) -> bool:
        if not user.name:
            return False
        try:
            return self.page_decision(user, tool).allowed
        except Exception:  # noqa: BLE001 - an engine fault denies
            log.exception("page_policy_error", tool=tool.id)
            return False

    def page_denied(self, user: Any, tool: Tool) -> None:
        try:
            decision = self.page_decision(user, tool)
            rule_id, version = decision.rule_id, decision.policy_version
        except Exception:  # noqa: BLE001
            rule_id, version = "policy-error", self.policy.version
        self.emit(
            "page.denied",
            outcome="failure",
            user=user.name or None,
            email=user.email or None,
            groups=list(user.groups),
            client_ip=user.ip or None,
            tool=tool.id,
            path=tool.path,
            decision="deny",
            rule_id=rule_id,
            policy_version=version,
        )

    def access_contact(self, tool: Tool) -> str:
        return self.policy.current.contact_for(tool.id) or tool.contact or self.settings.server.access_contact

    # ------------------------------------------------------------ wiring

    def audit_middleware(self) -> list[Middleware]:
        return [Middleware(AuditMiddleware, trail=self.audit, unavailable_response=_unavailable)]

    def identity_middleware(self) -> list[Middleware]:
        return [
            *self.identity.middleware(),
            Middleware(
                AuthorizationMiddleware,
                authorize=self.authorize,
                normalize=normalize_path,
                deny_text=self.deny_text,
            ),
        ]

    def routes(self) -> list[BaseRoute]:
        routes = list(self.identity.routes())
        oidc = self.settings.auth.oidc
        if oidc is not None:
            from gateway.auth.oidc_routes import oidc_routes

            routes += oidc_routes(
                settings=oidc,
                public_url=self.settings.server.public_url,
                sessions=self.identity.sessions,
                emit=self.emit,
                signing_keys=self.identity.session_keys,
                brand=self.settings.server.brand,
                https=self.settings.server.https,
                spent=self.state.once,  # shared across replicas with the Redis backend
            )
        for feature in self.features:
            routes += feature.routes()
        return routes

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        def policy() -> tuple[bool, dict[str, object]]:
            st = self.policy.status()
            return True, {"version": st["policy_version"], "rules": st["rules"], "last_error": st["last_error"]}

        def audit() -> tuple[bool, dict[str, object]]:
            return self.audit.healthy, {"queue_depth": self.audit.queue_depth}

        checks: dict[str, ReadinessCheck] = {"policy": policy, "audit": audit}
        for feature in self.features:
            checks.update(feature.readiness())
        return checks

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.started:
            return
        self.audit.start()
        self.started = True
        self._stop = asyncio.Event()
        self._tasks.append(asyncio.create_task(self.policy.run(self._stop), name="policy-reload"))
        for feature in self.features:
            await feature.start()
        self.emit("gateway.start", outcome="success", details={"policy_version": self.policy.version})
        loop = type(asyncio.get_running_loop())
        log.info("gateway.started", policy_version=self.policy.version, event_loop=f"{loop.__module__}.{loop.__qualname__}")

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._stop is not None:
            self._stop.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for feature in reversed(self.features):
            try:
                await feature.stop()
            except Exception:  # noqa: BLE001 - one feature must not keep the rest from stopping
                log.exception("feature_stop_failed", feature=feature.name)
        self.emit("gateway.stop", outcome="success")
        # Drain every queued event to disk before the process goes.
        await asyncio.to_thread(self.audit.close)
        log.info("gateway.stopped")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:500]


def build_services(settings: Settings) -> Services:
    services_ref: list[Services] = []

    def emit(action: str, *, outcome: str | None = None, **fields: Any) -> None:
        services_ref[0].emit(action, outcome=outcome, **fields)

    # Where sessions and counters live, and (with Redis) this process's own
    # audit chain and replica id: several processes never share one trail.
    state = build_state(settings, emit=emit)
    audit = AuditTrail(state.audit_settings, replica_id=state.replica_id)

    upstream = None
    if settings.auth.upstream is not None:
        from gateway.auth.upstream import UpstreamVerifier

        upstream = UpstreamVerifier(settings.auth.upstream)
    try:
        policy = PolicyStore(
            settings.policy.dir,
            emit=emit,
            reload_interval_s=settings.policy.reload_interval_s,
            known_groups=settings.policy.known_groups,
        )
    except PolicyLoadError as exc:
        # Never start open: a policy set that does not load stops start-up.
        raise ConfigError("policy.dir", _one_line(exc)) from None
    try:
        identity = build_identity(settings, emit=emit, upstream=upstream, state=state)
    except KeyRingError as exc:
        key = "auth.token_key_file" if str(settings.auth.token_key_file) in str(exc) else "session.keys_file"
        raise ConfigError(key, _one_line(exc)) from None
    except UserError as exc:
        raise ConfigError("auth.users_file", _one_line(exc)) from None
    services = Services(settings=settings, audit=audit, policy=policy, identity=identity, upstream=upstream, state=state)
    services_ref.append(services)
    services.features = [StateFeature(state, services), *build_features(services)]
    return services

