"""The gateway's own small routes: probes, crawler rules, security contact."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.errors import STATIC_PREFIX
from gateway.features import ReadinessCheck
from gateway.settings import Settings

# A readiness check returns (ok, detail); detail is shown to the probe.

STATIC_DIR = Path(__file__).parent / "static"


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def core_routes(settings: Settings, checks: dict[str, ReadinessCheck]) -> list[BaseRoute]:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=180)).strftime("%Y-%m-%dT%H:%M:%SZ")
    security_txt = (
        f"Contact: {settings.server.security_contact}\n"
        f"Expires: {expires}\n"
        "Preferred-Languages: en\n"
        f"Canonical: {settings.server.public_url}/.well-known/security.txt\n"
    )

    async def healthz(_: Request) -> Response:
        # Liveness only: the process answers.  Dependencies are /readyz's job.
        return _json({"status": "ok"})

    async def readyz(_: Request) -> Response:
        results: dict[str, object] = {}
        ready = True
        for name, check in checks.items():
            try:
                ok, detail = check()
            except Exception:  # noqa: BLE001 - a failing check means not ready
                ok, detail = False, {"error": "check failed"}
            results[name] = {"ok": ok, **detail}
            ready = ready and ok
        return _json({"status": "ready" if ready else "unavailable", "checks": results}, 200 if ready else 503)

    async def robots(_: Request) -> Response:
        # Internal tools must never be indexed.
        return PlainTextResponse("User-agent: *\nDisallow: /\n")

    async def security(_: Request) -> Response:
        return PlainTextResponse(security_txt)

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/robots.txt", robots, methods=["GET", "HEAD"]),
        Route("/.well-known/security.txt", security, methods=["GET", "HEAD"]),
        Mount(STATIC_PREFIX, app=StaticFiles(directory=STATIC_DIR), name="gateway-static"),
    ]
