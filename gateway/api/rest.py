"""A small read-only data API over the sample dashboards, as a FastAPI app at ``/api/v1``.

Mounted behind the whole gateway chain, so every route is decided by policy
on its own path (the shipped policy: ``/api/v1/sales/**`` for employees,
``/api/v1/ops/**`` for employees and operators, the docs and ``/me`` for any
staff group).  Each route also depends on :func:`gateway_caller`, which takes
the identity the gateway verified from ``scope["gateway"]`` and re-checks
the decision: mounted anywhere without the chain, the API refuses everything
rather than serving anonymously.

OpenAPI docs at ``/api/v1/docs``: Swagger UI 5 served from the files the
``fastapi-offline`` package ships (no CDN), with its start-up code in a
static file, so it runs under the gateway's Content-Security-Policy.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

import datetime as dt
import functools
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from gateway.api.access import Caller, caller
from gateway.api.csrf import CsrfGuard
from gateway.errors import error_response
from gateway.middleware.authorization import AccessQuery
from gateway.policy import normalize_path

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from gateway.services import Services

PREFIX = "/api/v1"
STATIC = Path(__file__).resolve().parent / "static"


def swagger_ui_dir() -> Path:
    """Swagger UI 5 (``swagger-ui-bundle.js``, ``swagger-ui.css``; Apache-2.0) as shipped in the
    ``fastapi-offline`` wheel (MIT), so the docs need no CDN."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


# ---------------------------------------------------------------- data (cached, deterministic)


@functools.lru_cache(maxsize=2)
def _sales(as_of: dt.date) -> Any:
    from tools_ui import data

    return data.make_sales(as_of=as_of)


@functools.lru_cache(maxsize=2)
def _ops(as_of: pd.Timestamp) -> Any:
    from tools_ui import data

    return data.make_ops(as_of=as_of)


def sales_data() -> Any:
    return _sales(dt.datetime.now(dt.UTC).date())


def ops_data() -> Any:
    from tools_ui import data

    return _ops(data.ops_as_of())


def _num(v: Any) -> float | None:
    f = float(v)
    return None if math.isnan(f) or math.isinf(f) else f


def _ts(v: Any) -> str | None:
    return None if v is None or pd.isna(v) else pd.Timestamp(v).isoformat()


# ---------------------------------------------------------------- response models


class Me(BaseModel):
    user: str
    email: str
    groups: list[str]
    auth_method: str


class Kpi(BaseModel):
    value: float
    previous: float | None = Field(description="The same-length period before; null when not covered by the data")
    change: float | None = Field(description="Relative change against the previous period")


class SalesKpis(BaseModel):
    start: str
    end: str
    regions: list[str]
    revenue: Kpi
    new_pipeline: Kpi
    win_rate: Kpi
    avg_deal: Kpi


class RegionRevenue(BaseModel):
    region: str
    revenue: float
    share: float
    growth: float | None


class MonthRevenue(BaseModel):
    month: str
    region: str
    revenue: float


class Stage(BaseModel):
    stage: str
    opportunities: int
    amount: float
    conversion: float


class Account(BaseModel):
    account: str
    region: str
    industry: str
    owner: str
    revenue: float
    share: float
    growth: float | None
    health: str


class ServiceSlo(BaseModel):
    service: str
    team: str
    slo: float
    availability: float
    budget_used: float = Field(description="Share of the error budget used over 7 days (1.0 = all of it)")
    burn_rate_1h: float
    p99_ms: float


class Incident(BaseModel):
    incident: str
    severity: str
    service: str
    title: str
    opened: str
    resolved: str | None
    status: str
    postmortem: str


class LatencyPoint(BaseModel):
    hour: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    errors: int


# ---------------------------------------------------------------- identity and policy


def _authorized_caller(services: "Services") -> Any:
    def gateway_caller(request: Request) -> Caller:
        """The identity the gateway verified, re-checked against the policy for this route's path."""
        who = caller(request.scope)
        if who is None:
            raise HTTPException(status_code=401)
        try:
            path = normalize_path(request.scope.get("raw_path") or request.url.path)
            query = AccessQuery(identity=who.identity, path=path, tool=None, method=request.method, client_ip=who.ctx.client_ip)
            allowed = services.authorize(query).allowed
        except Exception:  # noqa: BLE001 - any doubt refuses
            allowed = False
        if not allowed:
            raise HTTPException(status_code=403)
        return who

    return gateway_caller


def _regions(values: list[str] | None) -> tuple[str, ...]:
    from tools_ui import data

    if not values:
        return data.REGIONS
    wanted = [v.strip().upper() for item in values for v in item.split(",") if v.strip()]
    bad = [v for v in wanted if v not in data.REGIONS]
    if bad:
        raise HTTPException(status_code=422, detail=f"unknown region(s) {bad}; known: {list(data.REGIONS)}")
    return tuple(dict.fromkeys(wanted))


def _sales_filter(months: int, regions: list[str] | None) -> tuple[Any, Any]:
    from tools_ui import data

    d = sales_data()
    base = data.default_filter(d, months)
    return d, data.SalesFilter(_regions(regions), base.start, base.end)


# ---------------------------------------------------------------- the app


def build_rest_api(services: "Services") -> FastAPI:
    from tools_ui import data

    app = FastAPI(
        title=f"{services.settings.server.brand} data API",
        version="1.0",
        description=(
            "Read-only figures behind the Sales and Operations dashboards. Every route is authorized by the "
            "gateway's access policy for the signed-in user or API token (`Authorization: Bearer ...`, "
            "from `gateway token create`)."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    Who = Annotated[Caller, Depends(_authorized_caller(services))]
    Months = Annotated[int, Query(ge=1, le=12, description="How many recent full months")]
    Regions = Annotated[list[str] | None, Query(description=f"Regions ({', '.join(data.REGIONS)}); repeat or comma-separate")]

    @app.exception_handler(StarletteHTTPException)
    async def gateway_errors(request: Request, exc: StarletteHTTPException) -> Any:
        # The gateway's error format (request id, no internals), not FastAPI's.
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code == 422 else None
        return error_response(request.scope, exc.status_code, detail=detail)

    @app.get("/me", response_model=Me, tags=["identity"], summary="Who the gateway says I am")
    def me(who: Who) -> Me:
        i = who.identity
        return Me(user=i.user, email=i.email, groups=sorted(i.groups), auth_method=i.auth_method)

    @app.get("/sales/kpis", response_model=SalesKpis, tags=["sales"], summary="Revenue, new pipeline, win rate, average deal")
    def sales_kpis(who: Who, months: Months = 12, region: Regions = None) -> SalesKpis:
        d, f = _sales_filter(months, region)
        k = data.sales_kpis(d, f)

        def kpi(x: Any) -> Kpi:
            return Kpi(value=float(x.value), previous=None if x.previous is None else float(x.previous), change=x.change)

        return SalesKpis(start=f.start.date().isoformat(), end=f.end.date().isoformat(), regions=list(f.regions),
                         **{name: kpi(v) for name, v in k.items()})  # fmt: skip

    @app.get("/sales/revenue/by-region", response_model=list[RegionRevenue], tags=["sales"])
    def revenue_by_region(who: Who, months: Months = 12, region: Regions = None) -> list[RegionRevenue]:
        d, f = _sales_filter(months, region)
        rows = data.revenue_by_region(d, f)
        return [RegionRevenue(region=r.region, revenue=float(r.revenue), share=float(r.share), growth=_num(r.growth))
                for r in rows.itertuples()]  # fmt: skip

    @app.get("/sales/revenue/by-month", response_model=list[MonthRevenue], tags=["sales"])
    def revenue_by_month(who: Who, months: Months = 12, region: Regions = None) -> list[MonthRevenue]:
        d, f = _sales_filter(months, region)
        rows = data.revenue_by_month(d, f)
        return [MonthRevenue(month=r.month.date().isoformat(), region=r.region, revenue=float(r.revenue)) for r in rows.itertuples()]

    @app.get("/sales/pipeline", response_model=list[Stage], tags=["sales"], summary="The funnel of opportunities created in the period")
    def pipeline(who: Who, months: Months = 12, region: Regions = None) -> list[Stage]:
        d, f = _sales_filter(months, region)
        rows = data.pipeline_by_stage(d, f)
        return [Stage(stage=r.stage, opportunities=int(r.opportunities), amount=float(r.amount), conversion=float(r.conversion))
                for r in rows.itertuples()]  # fmt: skip

    @app.get("/sales/top-accounts", response_model=list[Account], tags=["sales"])
    def top_accounts(
        who: Who, months: Months = 12, region: Regions = None, n: Annotated[int, Query(ge=1, le=50)] = 10
    ) -> list[Account]:
        d, f = _sales_filter(months, region)
        rows = data.top_accounts(d, f, n)
        return [
            Account(account=r.account, region=r.region, industry=r.industry, owner=r.owner, revenue=float(r.revenue),
                    share=float(r.share), growth=_num(r.growth), health=str(r.health))
            for r in rows.itertuples()
        ]  # fmt: skip

    @app.get("/ops/slo", response_model=list[ServiceSlo], tags=["operations"], summary="Objective, availability and error budget per service")
    def slo(who: Who) -> list[ServiceSlo]:
        rows = data.slo_status(ops_data())
        return [ServiceSlo(**{k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}) for row in rows.to_dict("records")]

    @app.get("/ops/incidents", response_model=list[Incident], tags=["operations"])
    def incidents(
        who: Who,
        service: Annotated[str | None, Query(description="One service name")] = None,
        status: Literal["all", "open", "resolved"] = "all",
    ) -> list[Incident]:
        if service is not None and service not in data.SERVICE_NAMES:
            raise HTTPException(status_code=422, detail=f"unknown service {service!r}; known: {list(data.SERVICE_NAMES)}")
        rows = data.incidents_for(ops_data(), [service] if service else data.SERVICE_NAMES)
        if status == "open":
            rows = rows[rows["resolved"].isna()]
        elif status == "resolved":
            rows = rows[rows["resolved"].notna()]
        return [
            Incident(incident=r.incident, severity=r.severity, service=r.service, title=r.title, opened=_ts(r.opened) or "",
                     resolved=_ts(r.resolved), status=r.status, postmortem=r.postmortem)
            for r in rows.itertuples()
        ]  # fmt: skip

    @app.get("/ops/latency", response_model=list[LatencyPoint], tags=["operations"], summary="Hourly latency and traffic for one service")
    def latency(
        who: Who,
        service: Annotated[str, Query(description="One service name")] = "api-gateway",
        hours: Annotated[int, Query(ge=1, le=168)] = 24,
    ) -> list[LatencyPoint]:
        if service not in data.SERVICE_NAMES:
            raise HTTPException(status_code=422, detail=f"unknown service {service!r}; known: {list(data.SERVICE_NAMES)}")
        rows = data.latency_window(ops_data(), [service], hours)
        hourly = rows.groupby(rows["ts"].dt.floor("h")).agg(
            p50_ms=("p50_ms", "median"), p95_ms=("p95_ms", "median"), p99_ms=("p99_ms", "median"),
            requests=("requests", "sum"), errors=("errors", "sum"),
        )  # fmt: skip
        return [
            LatencyPoint(hour=ts.isoformat(), p50_ms=float(r.p50_ms), p95_ms=float(r.p95_ms), p99_ms=float(r.p99_ms),
                         requests=int(r.requests), errors=int(r.errors))
            for ts, r in hourly.iterrows()
        ]  # fmt: skip

    # ------------------------------------------------------------ docs (self-hosted Swagger UI)

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs(who: Who, request: Request) -> HTMLResponse:
        root = html.escape(request.scope.get("root_path", "") or PREFIX)
        title = html.escape(app.title)
        page = (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="robots" content="noindex, nofollow">'
            f"<title>{title} · docs</title>"
            f'<link rel="stylesheet" href="{root}/docs/assets/swagger-ui.css">'
            '<link rel="icon" href="/_gateway/static/logo.svg" type="image/svg+xml">'
            "</head><body>"
            f'<div id="swagger-ui" data-openapi-url="{root}/openapi.json"></div>'
            f'<script src="{root}/docs/assets/swagger-ui-bundle.js"></script>'
            f'<script src="{root}/docs/init.js"></script>'
            "</body></html>"
        )
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    @app.get("/docs/init.js", include_in_schema=False)
    def docs_init(who: Who) -> Any:
        from starlette.responses import FileResponse

        return FileResponse(STATIC / "swagger-init.js", media_type="text/javascript")

    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_dir())), name="swagger-ui")

    return app


class RestApiFeature:
    """The FastAPI app mounted at ``/api/v1`` (behind the CSRF guard for unsafe methods)."""

    name = "rest-api"

    def __init__(self, services: "Services") -> None:
        self.services = services
        self.app = build_rest_api(services)

    def asgi(self) -> "ASGIApp":
        return CsrfGuard(self.app)

    def routes(self) -> list[Any]:
        from starlette.routing import Mount, Route

        async def index(request: Request) -> JSONResponse:
            # The gateway serves paths without a trailing slash, and a Mount
            # only matches below its prefix: the bare prefix needs its own route.
            return JSONResponse({"docs": f"{PREFIX}/docs", "openapi": f"{PREFIX}/openapi.json"})

        return [Route(PREFIX, index, methods=["GET", "HEAD"]), Mount(PREFIX, app=self.asgi(), name="rest-api")]

    def readiness(self) -> dict[str, Any]:
        return {}

    async def start(self) -> None:
        # Build the first day's figures before the first request needs them.
        import asyncio

        await asyncio.to_thread(sales_data)
        await asyncio.to_thread(ops_data)

    async def stop(self) -> None:
        return None
