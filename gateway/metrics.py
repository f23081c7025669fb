"""Prometheus metrics at ``/metrics``, fed by the audit trail's live events.

Counting costs one dictionary increment per audit event, on the emitting
thread (see :meth:`GatewayMetrics.observe`); everything else (audit queue and
writer statistics, active sessions, policy version) is read when Prometheus
scrapes.  Nothing here sits on the request path.

Who may scrape: ``/metrics`` is a gateway path like any other, so the caller
needs an identity the policy allows (the shipped policy: groups ``metrics``
and ``operators``; a scraper uses an API token from ``gateway token create``)
*and* must come from ``platform.metrics_networks``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Iterator

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.audit.event_view import picker
from gateway.context import get_context
from gateway.errors import error_response
from gateway.features import BaseFeature, ReadinessCheck
from gateway.policy.model import parse_ip

if TYPE_CHECKING:
    from gateway.services import Services

log = structlog.get_logger(__name__)

PREFIX = "toolgate"
_NONE = "none"
_pick = picker("action", "status", "tool", "decision", "rule_id", "outcome", "auth_method", "reason")
_RAW_ACTIONS = frozenset(
    {"http.request", "websocket.session", "page.denied", "auth.login", "policy.reloaded", "policy.reload_rejected"}
)


class GatewayMetrics:
    """Counters keyed by label tuples; a lock because listeners run on any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Per-event counts keyed by the raw fields; folded into the labelled
        # tables when Prometheus scrapes, so an event costs one increment.
        self._raw: dict[tuple[Any, ...], int] = {}
        self.mcp_calls: dict[tuple[str, str], int] = {}  # (mcp tool, outcome)
        self.alerts: dict[tuple[str, str, str], int] = {}  # (kind, channel, outcome)

    def observe(self, event: Mapping[str, Any]) -> None:
        """The audit listener: one increment per counted event, nothing else."""
        key = _pick(event)
        action = key[0]
        if action in _RAW_ACTIONS:
            with self._lock:
                self._raw[key] = self._raw.get(key, 0) + 1
        elif action == "mcp.call":
            details = event.get("details") or {}
            with self._lock:
                self._inc(self.mcp_calls, (str(details.get("mcp_tool", _NONE)), key[5] or "unknown"))
                self._raw[key] = self._raw.get(key, 0) + 1  # its decision
        elif action == "alert.sent":
            details = event.get("details") or {}
            k = (str(details.get("kind", _NONE)), str(details.get("channel", _NONE)), key[5] or "unknown")
            with self._lock:
                self._inc(self.alerts, k)

    @staticmethod
    def _inc(table: dict[Any, int], key: Any) -> None:
        table[key] = table.get(key, 0) + 1

    def snapshot(self) -> dict[str, dict[Any, int]]:
        with self._lock:
            raw = dict(self._raw)
            snap: dict[str, dict[Any, int]] = {
                "requests": {}, "websockets": {}, "decisions": {}, "signins": {},
                "mcp_calls": dict(self.mcp_calls), "alerts": dict(self.alerts), "policy_reloads": {},
            }  # fmt: skip
        requests, websockets, decisions = snap["requests"], snap["websockets"], snap["decisions"]
        signins, reloads = snap["signins"], snap["policy_reloads"]

        def add(table: dict[Any, int], k: Any, n: int) -> None:
            table[k] = table.get(k, 0) + n

        for (action, status, tool, decision, rule_id, outcome, auth_method, reason), n in raw.items():
            if action == "http.request":
                add(requests, (str(status if status is not None else 0), tool or _NONE), n)
                add(decisions, (decision or _NONE, rule_id or _NONE), n)
            elif action == "websocket.session":
                add(websockets, (outcome or "unknown", tool or _NONE), n)
                add(decisions, (decision or _NONE, rule_id or _NONE), n)
            elif action == "mcp.call":
                add(decisions, (decision or _NONE, rule_id or _NONE), n)
            elif action == "page.denied":
                add(decisions, ("deny", rule_id or _NONE), n)
            elif action == "auth.login":
                add(signins, (outcome or "unknown", auth_method or _NONE, reason or _NONE), n)
            elif action in ("policy.reloaded", "policy.reload_rejected"):
                add(reloads, outcome or "unknown", n)
        return snap


def _counter(name: str, doc: str, labels: list[str], table: dict[Any, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
    for key, value in sorted(table.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


class GatewayCollector:
    """Builds the metric families at scrape time from the counters and the services."""

    def __init__(self, metrics: GatewayMetrics, services: "Services") -> None:
        self.metrics = metrics
        self.services = services
        self.active_sessions = 0  # set by the endpoint (the store is async) just before collecting

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics.snapshot()
        yield _counter("http_requests_total", "HTTP requests by response status and tool page.", ["status", "tool"], snap["requests"])
        yield _counter("websocket_sessions_total", "Websocket sessions by outcome and tool page.", ["outcome", "tool"], snap["websockets"])
        yield _counter("policy_decisions_total", "Access decisions by effect and deciding rule.", ["effect", "rule"], snap["decisions"])
        yield _counter("signins_total", "Sign-in attempts by result, method and reason.", ["result", "method", "reason"], snap["signins"])
        yield _counter("mcp_calls_total", "MCP tool calls by tool and outcome.", ["mcp_tool", "outcome"], snap["mcp_calls"])
        yield _counter("alerts_total", "Alerts delivered by kind, channel and outcome.", ["kind", "channel", "outcome"], snap["alerts"])
        yield _counter("policy_reloads_total", "Policy reloads by outcome.", ["outcome"], snap["policy_reloads"])

        stats = self.services.audit.stats()
        yield GaugeMetricFamily(f"{PREFIX}_audit_queue_depth", "Audit events waiting for the writer.", value=stats.queue_depth)
        yield GaugeMetricFamily(f"{PREFIX}_audit_healthy", "1 while the audit trail accepts and writes events.", value=1 if stats.healthy else 0)
        events = CounterMetricFamily(f"{PREFIX}_audit_events_total", "Audit events by fate.", labels=["state"])
        for state in ("accepted", "written", "dropped", "rejected", "lost"):
            events.add_metric([state], getattr(stats, state))
        yield events
        yield SummaryMetricFamily(
            f"{PREFIX}_audit_write_seconds", "Time the writer spent writing batches to disk.",
            count_value=stats.batches, sum_value=stats.write_seconds_total,
        )  # fmt: skip
        yield SummaryMetricFamily(
            f"{PREFIX}_audit_event_latency_seconds", "Time from emit to the event being on disk.",
            count_value=stats.written, sum_value=stats.latency_seconds_total,
        )  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_audit_event_latency_max_seconds", "Largest emit-to-disk time seen.", value=stats.latency_seconds_max)
        yield GaugeMetricFamily(f"{PREFIX}_active_sessions", "Sessions held by the session store.", value=self.active_sessions)

        policy = self.services.policy.current
        info = GaugeMetricFamily(f"{PREFIX}_policy_info", "The policy version in force.", labels=["version"])
        info.add_metric([policy.version], 1)
        yield info
        yield GaugeMetricFamily(f"{PREFIX}_policy_rules", "Rules in the policy in force.", value=len(policy.rules))


class MetricsFeature(BaseFeature):
    """``/metrics`` and the audit listener that feeds it."""

    name = "metrics"

    def __init__(self, services: "Services") -> None:
        self.services = services
        self.metrics = GatewayMetrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = GatewayCollector(self.metrics, services)
        self.registry.register(self.collector)  # type: ignore[arg-type]
        ProcessCollector(namespace=PREFIX, registry=self.registry)
        self.networks = services.settings.platform.metrics_networks
        self._unsubscribe: Callable[[], None] | None = None

    def from_allowed_network(self, address: str) -> bool:
        try:
            ip = parse_ip(address)
        except ValueError:
            return False
        return ip is not None and any(ip.version == n.version and ip in n for n in self.networks)

    async def endpoint(self, request: Request) -> Response:
        ctx = get_context(request.scope)
        if ctx is None or not self.from_allowed_network(ctx.client_ip):
            if ctx is not None:
                ctx.decision, ctx.deny_reason = "deny", "metrics_network"
            return error_response(request.scope, 403, detail="Metrics are not served to this network.")
        try:
            self.collector.active_sessions = await self.services.identity.sessions.store.count()
        except Exception:  # noqa: BLE001 - a store outage must not hide the other metrics
            log.warning("metrics_session_count_failed")
        body = generate_latest(self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"})

    def routes(self) -> list[BaseRoute]:
        return [Route("/metrics", self.endpoint, methods=["GET", "HEAD"])]

    def readiness(self) -> dict[str, ReadinessCheck]:
        return {}

    async def start(self) -> None:
        self._unsubscribe = self.services.audit.subscribe(self.metrics.observe)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
