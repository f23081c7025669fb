"""``/ws/security-feed``: the live security feed's websocket, and the script that reads it.

Both routes sit behind the whole chain, so the session, the policy (rule
``live-feed-socket`` in ``policies/40-live-feed.toml``) and the audit layer
decide and record them like any page.  The endpoint checks again before it
accepts (the identity must be in group ``security`` and the policy must let
it open the live feed page), and keeps checking while the socket is open:
a revoked or expired session, a user who lost the group, or a policy change
that takes the feed away closes the socket (4401 / 4403).

Messages (server to client, JSON text frames):

* ``{"type": "hello", "user", "epoch", "heartbeat_s"}`` once after accept;
* ``{"type": "event", "event": {...}}`` per feed event (see ``hub.feed_item``),
  or ``{"type": "events", "events": [...]}`` for several that were waiting;
* ``{"type": "dropped", "count": n}`` when the client was too slow and lost events;
* ``{"type": "heartbeat"}`` when nothing else was sent for ``heartbeat_s``.

The client sends nothing: an open feed must not count as activity for the
session's idle timeout.  A client that sends a frame anyway is disconnected
(1003).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.audit.files import parse, read_tail
from gateway.context import Identity, RequestContext, get_context
from gateway.features import BaseFeature
from gateway.middleware.authorization import AccessQuery
from gateway.tools import tool_by_id

from .hub import FeedHub, Subscriber, from_record

if TYPE_CHECKING:
    from gateway.services import Services

log = structlog.get_logger(__name__)

FEED_PATH = "/ws/security-feed"
CLIENT_PATH = "/ws/security-feed/client.js"
FEED_GROUP = "security"
CLIENT_JS = Path(__file__).parent / "static" / "live-feed.js"

WS_NORMAL = 1000
WS_GOING_AWAY = 1001
WS_UNSUPPORTED = 1003
WS_POLICY = 1008
WS_TRY_LATER = 1013
WS_SESSION_ENDED = 4401
WS_FORBIDDEN = 4403

SEED_LINES = 400
MAX_BATCH = 100


@dataclasses.dataclass(frozen=True)
class _PageUser:
    name: str
    email: str
    groups: tuple[str, ...]
    ip: str


def _in_group(groups: Iterable[str]) -> bool:
    return any(g.lower() == FEED_GROUP for g in groups)


def seed_events(audit_path: Path, lines: int = SEED_LINES) -> list[dict[str, Any]]:
    """The newest records of the current trail file as flat events (the feed's backlog after a restart)."""
    try:
        tail, _, _ = read_tail(audit_path, lines)
    except OSError:
        return []
    out = []
    for line in tail:
        rec = parse(line)
        if rec is not None:
            out.append(from_record(rec))
    return out


class LiveFeedFeature(BaseFeature):
    name = "live-feed"

    def __init__(
        self,
        services: "Services",
        *,
        heartbeat_s: float = 20.0,
        recheck_s: float = 10.0,
    ) -> None:
        self.services = services
        self.hub = FeedHub(services.audit.subscribe)
        self.heartbeat_s = heartbeat_s
        self.recheck_s = recheck_s
        self._stopping: asyncio.Event | None = None
        self._client_js = CLIENT_JS.read_bytes()

    # ------------------------------------------------------------ feature hooks

    def routes(self) -> list[BaseRoute]:
        return [
            WebSocketRoute(FEED_PATH, self.websocket),
            Route(CLIENT_PATH, self.client_script, methods=["GET", "HEAD"]),
        ]

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        seed = await asyncio.to_thread(seed_events, Path(self.services.audit.path))
        self.hub.start(asyncio.get_running_loop(), seed)

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        self.hub.stop()

    # ------------------------------------------------------------ routes

    async def client_script(self, request: Request) -> Response:
        return Response(
            self._client_js,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    def allowed(self, ctx: RequestContext | None, ident: Identity | None) -> bool:
        """Group ``security`` and the live feed page allowed by policy, for this identity from this address."""
        if ctx is None or ident is None or not _in_group(ident.groups):
            return False
        tool = tool_by_id("live")
        user = _PageUser(ident.user, ident.email, tuple(sorted(ident.groups)), ctx.client_ip)
        if tool is None or not self.services.page_allowed(user, tool):
            return False
        try:
            decision = self.services.authorize(
                AccessQuery(identity=ident, path=FEED_PATH, tool=None, method="GET", client_ip=ctx.client_ip)
            )
        except Exception:  # noqa: BLE001 - an engine fault denies
            return False
        return bool(decision.allowed)

    async def websocket(self, ws: WebSocket) -> None:
        ctx = get_context(ws.scope)
        ident = ctx.identity if ctx is not None else None
        if not self.allowed(ctx, ident):
            # Closing before accept refuses the handshake (403).
            await ws.close(code=WS_POLICY)
            return
        assert ctx is not None and ident is not None
        if not self.hub.can_connect(ident.user) or self._stopping is None or self._stopping.is_set():
            await ws.close(code=WS_TRY_LATER)
            return
        since = _int(ws.query_params.get("since"))
        epoch = ws.query_params.get("epoch")
        await ws.accept()
        sub = self.hub.connect(ident.user, since=since, epoch=epoch)
        try:
            code = await self._serve(ws, sub, ctx, ident)
        finally:
            self.hub.disconnect(sub)
        if code is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=code)

    # ------------------------------------------------------------ one connection

    async def _serve(self, ws: WebSocket, sub: Subscriber, ctx: RequestContext, ident: Identity) -> int | None:
        """Pump events until the client leaves (None) or we end it (the close code)."""
        send_lock = asyncio.Lock()

        async def send(obj: dict[str, Any]) -> None:
            async with send_lock:
                await ws.send_text(orjson.dumps(obj).decode())

        async def sender() -> int | None:
            await send({"type": "hello", "user": ident.user, "epoch": self.hub.epoch, "heartbeat_s": self.heartbeat_s})
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    await send({"type": "heartbeat"})
                    continue
                batch = [item]
                # Under a burst (a scan, a password spray) send what is waiting in one frame.
                while len(batch) < MAX_BATCH and not sub.queue.empty():
                    batch.append(sub.queue.get_nowait())
                if sub.dropped:
                    n, sub.dropped = sub.dropped, 0
                    await send({"type": "dropped", "count": n})
                if len(batch) == 1:
                    await send({"type": "event", "event": item})
                else:
                    await send({"type": "events", "events": batch})

        async def receiver() -> int | None:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            return WS_UNSUPPORTED  # the client has nothing to say; whatever it sends ends the feed

        async def watchdog() -> int | None:
            while True:
                await asyncio.sleep(self.recheck_s)
                code = await self._recheck(ctx, ident)
                if code is not None:
                    return code

        async def stopping() -> int | None:
            assert self._stopping is not None
            await self._stopping.wait()
            return WS_GOING_AWAY

        tasks = [asyncio.create_task(c) for c in (sender(), receiver(), watchdog(), stopping())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        for t in done:
            if t.cancelled():
                continue
            exc = t.exception()
            if exc is None:
                return t.result()
            if isinstance(exc, (WebSocketDisconnect, OSError, RuntimeError)):
                return None
            log.error("live_feed_failed", error=repr(exc))
            return WS_TRY_LATER
        return None

    async def _recheck(self, ctx: RequestContext, ident: Identity) -> int | None:
        """Still signed in, still in the group, still allowed by policy?  Else the close code."""
        record = ctx.extra.get("session")
        groups: Iterable[str] = ident.groups
        if record is not None:
            current, _reason = await self.services.identity.sessions.check(record)
            if current is None:
                return WS_SESSION_ENDED
            groups = current.groups
        elif ident.expires_at is not None and time.time() >= ident.expires_at:
            return WS_SESSION_ENDED
        now = dataclasses.replace(ident, groups=frozenset(groups))
        if not self.allowed(ctx, now):
            return WS_FORBIDDEN
        return None


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None
