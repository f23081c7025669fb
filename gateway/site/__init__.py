"""The user guide at ``/docs``, ``/sitemap.xml`` and ``/manifest.webmanifest``.

The guide is plain HTML and CSS (pages assembled once in memory by
:mod:`gateway.site.guide`, stylesheet and icons under ``assets/``), under a
strict policy of its own (no script at all).  It is behind sign-in and
policy like any page unless ``platform.docs_public`` opens it.

The sitemap is an internal one: only for signed-in users, listing only the
pages the asking user may open, marked ``X-Robots-Tag: noindex``, and not
advertised in ``robots.txt`` (which disallows everything): nothing here
invites a crawler in.  The manifest makes the tools installable as an
internal web app with the brand icon.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import paths
from gateway.api.access import caller, may_open, tool_entries
from gateway.errors import error_response
from gateway.features import BaseFeature
from gateway.site.guide import GUIDE_PAGES, page_path, pages

if TYPE_CHECKING:
    from gateway.services import Services

ASSETS = Path(__file__).resolve().parent / "assets"
# The guide needs no script, no inline style and nothing from elsewhere.
SITE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; manifest-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
NOINDEX = "noindex, nofollow"


class GuideHeaders:
    """Adds the guide's own CSP and ``X-Robots-Tag`` to what StaticFiles sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"content-security-policy"]
                headers += [(b"content-security-policy", SITE_CSP.encode()), (b"x-robots-tag", NOINDEX.encode())]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with)


class SiteFeature(BaseFeature):
    name = "site"

    def __init__(self, services: "Services") -> None:
        self.services = services
        self.assets = StaticFiles(directory=ASSETS)
        paths.set_docs_public(services.settings.platform.docs_public)

    # ------------------------------------------------------------ /docs

    async def guide_page(self, request: Request) -> Response:
        # "/docs" is the overview; the gateway serves no path with a trailing slash.
        name = request.path_params.get("page", "index.html")
        page = pages().get(name)
        if page is None:
            return error_response(request.scope, 404)
        headers = {"content-security-policy": SITE_CSP, "x-robots-tag": NOINDEX, "etag": page.etag}
        # The static files' own revalidation rule (ETag list, W/ prefixes, "*").
        if self.assets.is_not_modified(Headers(headers), request.headers):
            return Response(status_code=304, headers=headers)
        return Response(page.body, media_type="text/html; charset=utf-8", headers=headers)

    # ------------------------------------------------------------ /sitemap.xml

    async def sitemap(self, request: Request) -> Response:
        who = caller(request.scope)
        if who is None:
            return error_response(request.scope, 401)
        base = self.services.settings.server.public_url
        urls = [t["url"] for t in tool_entries(self.services, who)]
        for page in GUIDE_PAGES:
            path = page_path(page)
            if may_open(self.services, who, path):
                urls.append(base + path)
        if may_open(self.services, who, "/api/v1/docs"):
            urls.append(base + "/api/v1/docs")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            + "".join(f"  <url><loc>{html.escape(u)}</loc></url>\n" for u in urls)
            + "</urlset>\n"
        )
        return Response(body, media_type="application/xml", headers={"x-robots-tag": NOINDEX, "cache-control": "no-store"})

    # ------------------------------------------------------------ /manifest.webmanifest

    def manifest_body(self) -> dict[str, Any]:
        brand = self.services.settings.server.brand
        return {
            "name": f"{brand} internal tools",
            "short_name": brand,
            "description": "Internal tools behind the security gateway.",
            "id": "/",
            "start_url": "/",
            "scope": "/",
            "display": "standalone",
            "background_color": "#f1f5f9",
            "theme_color": "#0f766e",
            "icons": [
                {"src": "/_gateway/static/logo.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"},
                {"src": "/docs/assets/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
                {"src": "/docs/assets/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
                {"src": "/docs/assets/icon-maskable-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable"},
            ],
        }

    async def manifest(self, request: Request) -> Response:
        return Response(
            orjson.dumps(self.manifest_body()), media_type="application/manifest+json",
            headers={"x-robots-tag": NOINDEX, "cache-control": "no-store"},
        )  # fmt: skip

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/docs", self.guide_page, methods=["GET", "HEAD"]),
            Route("/docs/{page}", self.guide_page, methods=["GET", "HEAD"]),
            Mount("/docs/assets", app=GuideHeaders(self.assets), name="docs-assets"),
            Route("/sitemap.xml", self.sitemap, methods=["GET", "HEAD"]),
            Route("/manifest.webmanifest", self.manifest, methods=["GET", "HEAD"]),
        ]
