"""Refuse request bodies over the limit without ever holding them in memory.

A declared ``Content-Length`` over the limit is answered at once; a chunked
body is counted as it streams and the request is cut off the moment it
passes the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import get_context
from gateway.errors import send_error


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(scope, receive, send, 400, detail="Invalid Content-Length.")
                    return
                if declared > self.limit:
                    await send_error(scope, receive, send, 413, headers={"connection": "close"})
                    return
                has_body = declared > 0
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            # Neither Content-Length nor Transfer-Encoding: HTTP/1.1 says there
            # is no body, so there is nothing to count.
            await self.app(scope, receive, send)
            return

        limit = self.limit
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            ctx = get_context(scope)
            if ctx is None or not ctx.response_started:
                await send_error(scope, receive, send, 413, headers={"connection": "close"})
