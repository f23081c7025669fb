"""Security alerts by e-mail (SMTP) and webhook.

What raises an alert:

* repeated sign-in failures: ``alerts.signin_failures`` failed sign-ins for
  one user name, or from one client address, within ``alerts.window_s``;
* a denied burst: ``alerts.denied_burst`` denied requests from one signed-in
  user within ``alerts.window_s``;
* a policy change (``policy.changed``, ``policy.reloaded``) and a rejected
  policy change (``policy.reload_rejected``), when ``alerts.policy_changes``;
* a broken audit chain, found by the periodic self-check (gateway.background).

The audit trail's live events drive it: the listener runs on whichever
thread emitted the event, so it only filters by action and hands the event
to the event loop (``call_soon_threadsafe``); a lifespan task evaluates the
rules (:class:`AlertRules`, pure and clock-driven) and delivers.  The same
alert is not repeated within ``alerts.cooldown_s``, and at most
``MAX_PER_KIND`` alerts of one kind go out per ``alerts.window_s``.  Every delivery is
audited as ``alert.sent`` (success or failure, per channel), never with a
secret in it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import smtplib
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any, Callable, Protocol

import httpx
import orjson
import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.audit.event_view import picker
from gateway.context import get_context
from gateway.errors import error_response
from gateway.features import BaseFeature, ReadinessCheck
from gateway.settings import AlertSettings

if TYPE_CHECKING:
    from gateway.services import Services

log = structlog.get_logger(__name__)

QUEUE_SIZE = 10_000
WATCHED = frozenset({
    "auth.login", "http.request", "websocket.session", "page.denied", "mcp.call",
    "policy.changed", "policy.reloaded", "policy.reload_rejected",
})  # fmt: skip
DECIDED = frozenset({"http.request", "websocket.session", "mcp.call"})
_pick = picker("action", "decision")
SEVERITIES = ("info", "warning", "critical")
POLICY_GRACE_S = 1.5


MAX_PER_KIND = 10  # alerts of one kind per window; beyond that they are counted, not sent


def _safe(value: Any, limit: int = 128) -> str:
    """Attacker-typed text (a user name from a failed sign-in) made fit for a subject line."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return text[:limit] + ("..." if len(text) > limit else "")


@dataclass(frozen=True)
class Alert:
    kind: str  # signin_failures | denied_burst | policy_change | audit_integrity | test
    severity: str  # info | warning | critical
    summary: str  # one line, no secrets
    details: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # what "the same alert" means for the cooldown
    ts: float = field(default_factory=time.time)
    defer_s: float = 0.0  # hold back this long (see AlertRules.superseded)

    def as_dict(self, source: str) -> dict[str, Any]:
        return {
            "source": "toolgate",
            "gateway": source,
            "kind": self.kind,
            "severity": self.severity,
            "summary": self.summary,
            "text": f"[{self.severity}] {self.summary}",  # what Slack/Teams-style receivers show
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ts)),
            "details": self.details,
        }


class AlertRules:
    """Audit events in, alerts out: sliding windows per user/address, and cooldowns."""

    def __init__(self, settings: AlertSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._windows: dict[tuple[str, str], collections.deque[float]] = {}
        self._last_sent: dict[str, float] = {}
        self._announced: dict[str, float] = {}  # policy versions an editor save reported
        self._sent_by_kind: dict[str, collections.deque[float]] = {}
        self.suppressed: dict[str, int] = {}

    def superseded(self, alert: Alert) -> bool:
        """A held-back reload alert whose version an editor save has announced meanwhile."""
        return alert.kind == "policy_change" and alert.details.get("action") == "policy.reloaded" and (
            alert.details.get("policy_version") in self._announced
        )

    def _hit(self, kind: str, who: str, threshold: int) -> int:
        """Record one event for ``(kind, who)``; the count within the window once it reaches the threshold."""
        now = self.clock()
        window = self._windows.setdefault((kind, who), collections.deque())
        window.append(now)
        edge = now - self.settings.window_s
        while window and window[0] <= edge:
            window.popleft()
        if len(self._windows) > 50_000:  # bounded memory under a spray of names
            self._windows = {k: v for k, v in self._windows.items() if v and v[-1] > edge}
        return len(window) if len(window) >= threshold else 0

    def allow(self, key: str, kind: str = "") -> bool:
        """False while an alert with this key is inside its cooldown, or its kind is flooding.

        The flood cap keeps a spray of user names (each failing a few times)
        from turning into a spray of e-mails; the per-address alert still fires.
        """
        now = self.clock()
        last = self._last_sent.get(key)
        if last is not None and now - last < self.settings.cooldown_s:
            return False
        if kind:
            sent = self._sent_by_kind.setdefault(kind, collections.deque())
            while sent and sent[0] <= now - self.settings.window_s:
                sent.popleft()
            if len(sent) >= MAX_PER_KIND:
                self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
                return False
            sent.append(now)
        self._last_sent[key] = now
        if len(self._last_sent) > 50_000:
            edge = now - self.settings.cooldown_s
            self._last_sent = {k: t for k, t in self._last_sent.items() if t > edge}
        return True

    def feed(self, event: dict[str, Any]) -> list[Alert]:
        s = self.settings
        action = event.get("action")
        out: list[Alert] = []
        if action == "auth.login" and event.get("outcome") == "failure":
            user, ip = event.get("user") or "", event.get("client_ip") or ""
            for scope, who in (("user", user), ("address", ip)):
                if not who:
                    continue
                n = self._hit(f"signin.{scope}", who, s.signin_failures)
                if n:
                    out.append(Alert(
                        "signin_failures", "warning",
                        f"{n} failed sign-ins for {scope} {_safe(who)} within {s.window_s} s",
                        {"scope": scope, scope: who, "failures": n, "window_s": s.window_s, "last_reason": event.get("reason"),
                         "client_ip": ip, "user": user},
                        key=f"signin:{scope}:{who}",
                    ))  # fmt: skip
        elif action in DECIDED or action == "page.denied":
            user = event.get("user")
            if user and (event.get("decision") == "deny" or action == "page.denied"):
                n = self._hit("denied", user, s.denied_burst)
                if n:
                    out.append(Alert(
                        "denied_burst", "warning",
                        f"{n} denied requests from user {_safe(user)} within {s.window_s} s",
                        {"user": user, "denied": n, "window_s": s.window_s, "last_path": event.get("path"),
                         "client_ip": event.get("client_ip")},
                        key=f"denied:{user}",
                    ))  # fmt: skip
        elif action in ("policy.changed", "policy.reloaded", "policy.reload_rejected") and s.policy_changes:
            details = event.get("details") or {}
            version = event.get("policy_version") or ""
            if action == "policy.reload_rejected":
                rejected = details.get("rejected_version") or version
                out.append(Alert(
                    "policy_change", "warning", f"A policy change was rejected (version {rejected}); the previous policy stays in force",
                    {"action": action, "policy_version": version, "rejected_version": rejected, "reason": event.get("reason")},
                    key=f"policy:rejected:{rejected}",
                ))  # fmt: skip
            elif action == "policy.changed":
                if event.get("outcome") == "success":  # a refused edit changed nothing (and is audited)
                    author = event.get("user") or ""
                    self._announced[version] = self.clock()
                    out.append(Alert(
                        "policy_change", "info", f"Access policy changed to version {version}" + (f" by {_safe(author)}" if author else ""),
                        {"action": action, "policy_version": version, "author": author, "file": details.get("file"),
                         "old_version": details.get("old_version"), "new_version": details.get("new_version"),
                         "message": details.get("message"), "rollback_of": details.get("rollback_of")},
                        key=f"policy:changed:{version}",
                    ))  # fmt: skip
            elif version not in self._announced:
                # Files changed on disk.  An editor save reloads first and
                # reports policy.changed (with its author) just after: this
                # alert waits a moment and is dropped if that one came.
                out.append(Alert(
                    "policy_change", "info", f"Access policy changed to version {version} (files changed on disk)",
                    {"action": action, "policy_version": version, "old_version": details.get("old_version"),
                     "files": details.get("files")},
                    key=f"policy:{version}", defer_s=POLICY_GRACE_S,
                ))  # fmt: skip
            if len(self._announced) > 1000:
                self._announced = dict(list(self._announced.items())[-100:])
        return [a for a in out if self.allow(a.key or a.summary, a.kind)]


class Notifier(Protocol):
    channel: str

    async def send(self, alert: Alert, payload: dict[str, Any]) -> None: ...


class SmtpNotifier:
    """Plain SMTP, STARTTLS or implicit TLS, through smtplib in a worker thread."""

    channel = "email"

    def __init__(self, settings: AlertSettings, *, brand: str = "Toolgate") -> None:
        self.s = settings
        self.brand = brand
        self.password = ""
        if settings.smtp_password_file is not None:
            self.password = settings.smtp_password_file.read_text(encoding="utf-8").strip()

    def message(self, alert: Alert, payload: dict[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = _safe(f"[{self.brand}] {alert.severity}: {alert.summary}", 200)
        msg["From"] = self.s.email_from
        msg["To"] = ", ".join(self.s.email_to)
        msg["Date"] = formatdate(alert.ts, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.s.email_from.rpartition("@")[2] or None)
        msg["X-Toolgate-Alert"] = alert.kind
        lines = [alert.summary, "", f"Kind:     {alert.kind}", f"Severity: {alert.severity}", f"Time:     {payload['time']}",
                 f"Gateway:  {payload['gateway']}", ""]  # fmt: skip
        lines += [f"{k}: {v}" for k, v in alert.details.items() if v not in (None, "", [], {})]
        lines += ["", "Look at the audit trail (audit viewer or `gateway audit`) for the events behind this alert."]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def _send_sync(self, msg: EmailMessage) -> None:
        s = self.s
        context = ssl.create_default_context()
        cls = smtplib.SMTP_SSL if s.smtp_security == "tls" else smtplib.SMTP
        kwargs: dict[str, Any] = {"timeout": s.timeout_s}
        if s.smtp_security == "tls":
            kwargs["context"] = context
        with cls(s.smtp_host, s.smtp_port, **kwargs) as smtp:
            if s.smtp_security == "starttls":
                smtp.starttls(context=context)
            if s.smtp_username:
                smtp.login(s.smtp_username, self.password)
            smtp.send_message(msg)

    async def send(self, alert: Alert, payload: dict[str, Any]) -> None:
        await asyncio.to_thread(self._send_sync, self.message(alert, payload))


class WebhookNotifier:
    """JSON POST; with a secret, ``X-Toolgate-Signature: sha256=HMAC(secret, timestamp.body)``."""

    channel = "webhook"

    def __init__(self, settings: AlertSettings) -> None:
        self.url = settings.webhook_url
        self.timeout = settings.timeout_s
        self.secret = b""
        if settings.webhook_secret_file is not None:
            self.secret = settings.webhook_secret_file.read_text(encoding="utf-8").strip().encode()

    def headers(self, body: bytes, ts: int) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": "toolgate-alerts/1", "x-toolgate-timestamp": str(ts)}
        if self.secret:
            mac = hmac.new(self.secret, str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
            headers["x-toolgate-signature"] = f"sha256={mac}"
        return headers

    async def send(self, alert: Alert, payload: dict[str, Any]) -> None:
        body = orjson.dumps(payload)
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
            r = await client.post(self.url, content=body, headers=self.headers(body, int(alert.ts)))
        if r.status_code >= 300:
            raise RuntimeError(f"webhook answered {r.status_code}")


class AlertsFeature(BaseFeature):
    """The alert pipeline: audit listener -> queue -> rules -> notifiers; plus ``POST /api/alerts/test``."""

    name = "alerts"

    def __init__(self, services: "Services") -> None:
        self.services = services
        self.settings = services.settings.alerts
        self.source = services.settings.server.public_url
        self.rules = AlertRules(self.settings)
        self.notifiers: list[Notifier] = []
        if self.settings.smtp_host:
            self.notifiers.append(SmtpNotifier(self.settings, brand=services.settings.server.brand))
        if self.settings.webhook_url:
            self.notifiers.append(WebhookNotifier(self.settings))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._deferred: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.sent = 0
        self.failed = 0

    # ------------------------------------------------------------ intake (any thread)

    def listener(self, event: dict[str, Any]) -> None:
        action, decision = _pick(event)
        if action not in WATCHED:
            return
        if action in DECIDED and decision != "deny":
            return  # the common case leaves here: one lookup, two comparisons
        loop, queue = self._loop, self._queue
        if loop is None or queue is None:
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, event)
        except RuntimeError:  # the loop is closing
            self.dropped += 1

    def _enqueue(self, event: dict[str, Any]) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    # ------------------------------------------------------------ delivery (event loop)

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            event = await self._queue.get()
            try:
                for alert in self.rules.feed(event):
                    if alert.defer_s > 0:
                        self._later(alert)
                    else:
                        await self.dispatch(alert)
            except Exception:  # noqa: BLE001 - one bad event must not end alerting
                log.exception("alert_rules_failed", action=event.get("action"))
            finally:
                self._queue.task_done()

    def _later(self, alert: Alert) -> None:
        async def deliver() -> None:
            await asyncio.sleep(alert.defer_s)
            if not self.rules.superseded(alert):
                await self.dispatch(alert)

        task = asyncio.create_task(deliver(), name="alert-deferred")
        self._deferred.add(task)
        task.add_done_callback(self._deferred.discard)

    async def raise_alert(self, alert: Alert, *, force: bool = False) -> None:
        """Deliver an alert found outside the event stream (integrity check, test); honours the cooldown."""
        if force or self.rules.allow(alert.key or alert.summary):
            await self.dispatch(alert)

    async def dispatch(self, alert: Alert) -> None:
        payload = alert.as_dict(self.source)
        log.warning("security_alert", kind=alert.kind, severity=alert.severity, summary=alert.summary)
        for notifier in self.notifiers:
            try:
                await asyncio.wait_for(notifier.send(alert, payload), timeout=self.settings.timeout_s + 1)
            except Exception as exc:  # noqa: BLE001 - report and carry on with the next channel
                self.failed += 1
                reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
                log.error("alert_delivery_failed", channel=notifier.channel, kind=alert.kind, reason=reason[:300])
                self.services.emit(
                    "alert.sent", outcome="failure", reason=reason[:300],
                    details={"kind": alert.kind, "channel": notifier.channel, "summary": alert.summary},
                )  # fmt: skip
            else:
                self.sent += 1
                self.services.emit(
                    "alert.sent", outcome="success",
                    details={"kind": alert.kind, "channel": notifier.channel, "summary": alert.summary},
                )  # fmt: skip

    # ------------------------------------------------------------ request-triggered: a test alert

    async def test_endpoint(self, request: Request) -> Response:
        from gateway.api.csrf import csrf_refusal

        refusal = csrf_refusal(request.scope)
        if refusal is not None:
            return refusal
        ctx = get_context(request.scope)
        actor = ctx.identity.user if ctx is not None and ctx.identity is not None else ""
        if not self.notifiers:
            return error_response(request.scope, 409, detail="No alert channel is configured ([alerts] smtp_host or webhook_url).")
        alert = Alert("test", "info", f"Test alert requested by {actor}", {"requested_by": actor}, key=f"test:{time.time()}")
        body = orjson.dumps({"queued": True, "channels": [n.channel for n in self.notifiers]})
        # Answer at once; the slow part (SMTP, webhook) runs after the response is sent.
        return Response(body, status_code=202, media_type="application/json",
                        headers={"cache-control": "no-store"}, background=BackgroundTask(self.raise_alert, alert, force=True))  # fmt: skip

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/alerts/test", self.test_endpoint, methods=["POST"])]

    def readiness(self) -> dict[str, ReadinessCheck]:
        def check() -> tuple[bool, dict[str, object]]:
            return True, {"channels": [n.channel for n in self.notifiers], "sent": self.sent, "failed": self.failed,
                          "dropped": self.dropped, "suppressed": sum(self.rules.suppressed.values())}  # fmt: skip

        return {"alerts": check}

    # ------------------------------------------------------------ lifespan

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._task = asyncio.create_task(self._run(), name="alerts")
        self._unsubscribe = self.services.audit.subscribe(self.listener)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        # Let what is already queued go out (bounded), then stop.
        if self._queue is not None and self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=self.settings.timeout_s)
        if self._deferred:
            await asyncio.wait(set(self._deferred), timeout=POLICY_GRACE_S + self.settings.timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._loop = None
