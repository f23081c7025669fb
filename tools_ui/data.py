"""Generated sample data for the Sales and Operations dashboards.

Everything here is synthetic and deterministic: the same seed and reference
time give the same frames, so the dashboards look lived-in without any data
source behind them (and tests can pin numbers down). Only the calendar moves
with ``as_of`` so the pages always show "the last 24 months" / "the last 7
days"; the numbers themselves come from the seed.

The ``make_*`` generators and the query helpers are pure pandas/numpy; the
``load_*`` wrappers add Streamlit's cache for the pages. All timestamps are
naive UTC wall-clock values: Streamlit's charts and tables display naive
datetimes as written, whatever the viewer's time zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd

SEED = 20_240_917

# --------------------------------------------------------------------------- sales

REGIONS: tuple[str, ...] = ("NA", "EMEA", "APAC", "LATAM")
STAGES: tuple[str, ...] = ("Prospecting", "Qualification", "Proposal", "Negotiation", "Closed won")
MONTHS = 24

# share of the starting revenue, annual growth
_REGION_PROFILE: dict[str, tuple[float, float]] = {
    "NA": (0.42, 0.15),
    "EMEA": (0.31, 0.11),
    "APAC": (0.18, 0.27),
    "LATAM": (0.09, 0.21),
}
# B2B shape: slow January, quarter-end pushes, a big December.
_SEASON = np.array([0.86, 0.90, 1.05, 0.94, 0.97, 1.07, 0.91, 0.86, 1.06, 0.99, 1.07, 1.31])
_SEASON = _SEASON / _SEASON.mean()
_START_MONTHLY_REVENUE = 3_600_000.0
_N_ACCOUNTS = 180
_N_OPPORTUNITIES = 1_500
_STAGE_ADVANCE = np.array([0.71, 0.66, 0.62, 0.68])  # chance to move past each open stage

_STEMS = (
    "Northwind", "Bluefin", "Cobalt", "Harbor", "Meridian", "Summit", "Pinecrest", "Redwood",
    "Atlas", "Vantage", "Silverline", "Lumen", "Keystone", "Orion", "Granite", "Beacon",
    "Crescent", "Evergreen", "Falcon", "Ironbridge", "Juniper", "Kestrel", "Lakeshore", "Maple",
    "Nimbus", "Oakridge", "Polaris", "Quarry", "Riverstone", "Sable", "Tidewater", "Upland",
    "Verde", "Westbrook", "Yardley", "Zenith", "Alder", "Brightwater", "Cedar", "Driftwood",
)  # fmt: skip
_INDUSTRIES: dict[str, tuple[str, ...]] = {
    "Financial services": ("Bank", "Capital", "Insurance"),
    "Healthcare": ("Health", "Medical", "Clinics"),
    "Retail": ("Retail", "Outfitters", "Markets"),
    "Manufacturing": ("Industries", "Manufacturing", "Components"),
    "Software": ("Software", "Labs", "Systems"),
    "Logistics": ("Logistics", "Freight"),
    "Energy": ("Energy", "Power"),
    "Telecom": ("Telecom", "Networks"),
    "Media": ("Media", "Studios"),
}
_OWNERS: dict[str, tuple[str, ...]] = {
    "NA": ("Dana Whitfield", "Marcus Lee", "Priya Natarajan", "Tom Alvarez"),
    "EMEA": ("Sophie Laurent", "Jonas Berg", "Aisha Okafor"),
    "APAC": ("Kenji Watanabe", "Mei Lin Tan", "Arjun Mehta"),
    "LATAM": ("Lucía Fernández", "Rafael Costa"),
}


@dataclass(frozen=True)
class SalesData:
    accounts: pd.DataFrame  # account_id, account, region, industry, owner, health, customer_since
    monthly: pd.DataFrame  # month, account_id, account, region, revenue (one row per active account-month)
    # opp_id, account_id, account, region, created, amount, stage, stage_index, status, closed
    opportunities: pd.DataFrame
    months: pd.DatetimeIndex  # the 24 month starts covered, oldest first


@dataclass(frozen=True)
class SalesFilter:
    regions: tuple[str, ...]
    start: pd.Timestamp  # first month (month start), inclusive
    end: pd.Timestamp  # last month (month start), inclusive

    @property
    def n_months(self) -> int:
        return (self.end.year - self.start.year) * 12 + self.end.month - self.start.month + 1

    @property
    def end_exclusive(self) -> pd.Timestamp:
        return self.end + pd.DateOffset(months=1)

    def previous(self) -> SalesFilter:
        """The period of the same length just before this one, same regions."""
        n = self.n_months
        return SalesFilter(self.regions, self.start - pd.DateOffset(months=n), self.start - pd.DateOffset(months=1))


@dataclass(frozen=True)
class Kpi:
    value: float
    previous: float | None  # None when the comparison period is not (fully) in the data

    @property
    def change(self) -> float | None:
        """Relative change against the previous period."""
        if self.previous is None or self.previous == 0:
            return None
        return self.value / self.previous - 1.0


def last_full_month(as_of: date) -> pd.Timestamp:
    return pd.Timestamp(as_of.year, as_of.month, 1) - pd.DateOffset(months=1)


def make_sales(seed: int = SEED, as_of: date | None = None) -> SalesData:
    """24 months of account revenue and the opportunity history, ending last month."""
    as_of = as_of or datetime.now(timezone.utc).date()
    rng = np.random.default_rng([seed, 1])
    months = pd.date_range(end=last_full_month(as_of), periods=MONTHS, freq="MS")

    accounts = _make_accounts(rng, months)
    monthly = _make_monthly(rng, accounts, months)
    opportunities = _make_opportunities(rng, accounts, months, pd.Timestamp(as_of))
    return SalesData(accounts.drop(columns=["_base", "_growth", "_start", "_end"]), monthly, opportunities, months)


def _make_accounts(rng: np.random.Generator, months: pd.DatetimeIndex) -> pd.DataFrame:
    n = _N_ACCOUNTS
    region_names = list(_REGION_PROFILE)
    region_p = np.array([s for s, _ in _REGION_PROFILE.values()])
    regions = rng.choice(region_names, size=n, p=region_p / region_p.sum())
    industries = rng.choice(list(_INDUSTRIES), size=n)

    # unique "Stem Suffix" names that fit the industry
    names: list[str] = []
    taken: set[str] = set()
    for ind in industries:
        while True:
            name = f"{rng.choice(_STEMS)} {rng.choice(_INDUSTRIES[ind])}"
            if name not in taken:
                taken.add(name)
                names.append(name)
                break

    # a few whales, a long tail: revenue is concentrated like real B2B books
    size = rng.lognormal(mean=0.0, sigma=1.05, size=n)
    base = np.empty(n)
    for r in region_names:
        m = regions == r
        base[m] = size[m] / size[m].sum() * _REGION_PROFILE[r][0] * _START_MONTHLY_REVENUE
    growth = np.array([_REGION_PROFILE[r][1] for r in regions]) + rng.normal(0.0, 0.12, n)

    start = np.where(rng.random(n) < 0.76, 0, rng.integers(1, MONTHS, n))
    base[start > 0] *= 0.6  # new logos land smaller than the installed base
    end = np.full(n, MONTHS)  # exclusive
    churn = (start == 0) & (rng.random(n) < 0.05)
    end[churn] = rng.integers(6, MONTHS, churn.sum())

    health = np.clip(np.round(62 + 90 * (growth - 0.2) + rng.normal(0, 11, n)), 18, 99).astype(int)
    health[churn] = np.minimum(health[churn], rng.integers(15, 40, churn.sum()))
    owners = [rng.choice(_OWNERS[r]) for r in regions]
    # accounts older than the window signed some time before it
    since = [
        months[s] if s > 0 else months[0] - pd.DateOffset(months=int(k))
        for s, k in zip(start, rng.integers(1, 60, n), strict=True)
    ]
    return pd.DataFrame(
        {
            "account_id": np.arange(1, n + 1),
            "account": names,
            "region": regions,
            "industry": industries,
            "owner": owners,
            "health": health,
            "customer_since": pd.to_datetime(since),
            "_base": base,
            "_growth": growth,
            "_start": start,
            "_end": end,
        }
    )


def _make_monthly(rng: np.random.Generator, accounts: pd.DataFrame, months: pd.DatetimeIndex) -> pd.DataFrame:
    n, t = len(accounts), np.arange(MONTHS)
    moy = months.month.to_numpy() - 1
    season = np.tile(_SEASON[moy], (n, 1))
    # APAC's February dips a little further (lunar new year)
    apac = (accounts["region"] == "APAC").to_numpy()
    season[np.ix_(apac, moy == 1)] *= 0.92
    trend = (1.0 + accounts["_growth"].to_numpy()[:, None]) ** (t[None, :] / 12.0)
    start, end = accounts["_start"].to_numpy()[:, None], accounts["_end"].to_numpy()[:, None]
    age = t[None, :] - start
    # new logos onboard gradually
    ramp = np.where(start > 0, np.select([age == 0, age == 1, age == 2], [0.35, 0.65, 0.88], 1.0), 1.0)
    noise = rng.lognormal(0.0, 0.07, (n, MONTHS))
    revenue = accounts["_base"].to_numpy()[:, None] * trend * season * ramp * noise
    active = (t[None, :] >= start) & (t[None, :] < end)

    acc_idx, month_idx = np.nonzero(active)
    frame = pd.DataFrame(
        {
            "month": months[month_idx],
            "account_id": accounts["account_id"].to_numpy()[acc_idx],
            "account": accounts["account"].to_numpy()[acc_idx],
            "region": accounts["region"].to_numpy()[acc_idx],
            "revenue": np.round(revenue[acc_idx, month_idx], 2),
        }
    )
    return frame.sort_values(["month", "account_id"], ignore_index=True)


def _make_opportunities(
    rng: np.random.Generator, accounts: pd.DataFrame, months: pd.DatetimeIndex, as_of: pd.Timestamp
) -> pd.DataFrame:
    n = _N_OPPORTUNITIES
    window_start, window_end = months[0], months[-1] + pd.DateOffset(months=1)
    span_days = (window_end - window_start).days
    # more opportunities as the business grows: sample creation days from a rising density
    u = rng.random(n)
    created = window_start + pd.to_timedelta(np.floor(span_days * np.sqrt(0.45 * u + 0.55 * u**2)), unit="D")
    created = created.sort_values()

    weight = np.sqrt(accounts["_base"].to_numpy())
    acc = rng.choice(len(accounts), size=n, p=weight / weight.sum())
    size_factor = (accounts["_base"].to_numpy()[acc] / accounts["_base"].median()) ** 0.3
    amount = np.round(rng.lognormal(np.log(42_000), 0.55, n) * size_factor, -2)

    reached = np.zeros(n, dtype=int)  # furthest stage the deal will reach
    for i, p in enumerate(_STAGE_ADVANCE):
        reached += (reached == i) & (rng.random(n) < p)
    cycle = rng.integers(35, 170, n)  # days from creation to close
    closes_at = created + pd.to_timedelta(cycle, unit="D")

    concluded = np.asarray(closes_at <= as_of)
    elapsed = np.asarray((as_of - created).days).clip(min=0) / cycle
    # an unfinished deal has only progressed part of the way to where it will end up
    in_flight_stage = np.minimum(reached, np.minimum(3, np.floor(elapsed * 4).astype(int)))
    stage_index = np.where(concluded, reached, in_flight_stage)
    status = np.where(~concluded, "open", np.where(reached == len(STAGES) - 1, "won", "lost"))
    closed = pd.Series(closes_at).where(concluded)

    return pd.DataFrame(
        {
            "opp_id": [f"OPP-{10_000 + i}" for i in range(n)],
            "account_id": accounts["account_id"].to_numpy()[acc],
            "account": accounts["account"].to_numpy()[acc],
            "region": accounts["region"].to_numpy()[acc],
            "created": created,
            "amount": amount,
            "stage": np.array(STAGES)[stage_index],
            "stage_index": stage_index,
            "status": status,
            "closed": closed.to_numpy(),
        }
    )


def default_filter(data: SalesData, months: int = 12) -> SalesFilter:
    return SalesFilter(REGIONS, data.months[-months], data.months[-1])


def _covers(data: SalesData, f: SalesFilter) -> bool:
    return f.start >= data.months[0] and f.end <= data.months[-1]


def monthly_in(data: SalesData, f: SalesFilter) -> pd.DataFrame:
    m = data.monthly
    return m[m["region"].isin(f.regions) & (m["month"] >= f.start) & (m["month"] <= f.end)]


def created_in(data: SalesData, f: SalesFilter) -> pd.DataFrame:
    o = data.opportunities
    return o[o["region"].isin(f.regions) & (o["created"] >= f.start) & (o["created"] < f.end_exclusive)]


def closed_in(data: SalesData, f: SalesFilter) -> pd.DataFrame:
    o = data.opportunities
    return o[o["region"].isin(f.regions) & (o["closed"] >= f.start) & (o["closed"] < f.end_exclusive)]


def _period_figures(data: SalesData, f: SalesFilter) -> dict[str, float]:
    closed = closed_in(data, f)
    won = closed[closed["status"] == "won"]
    decided = len(closed)
    return {
        "revenue": float(monthly_in(data, f)["revenue"].sum()),
        "new_pipeline": float(created_in(data, f)["amount"].sum()),
        "win_rate": len(won) / decided if decided else 0.0,
        "avg_deal": float(won["amount"].mean()) if len(won) else 0.0,
    }


def sales_kpis(data: SalesData, f: SalesFilter) -> dict[str, Kpi]:
    """Revenue, new pipeline, win rate and average won deal, with the previous period."""
    now = _period_figures(data, f)
    prev_f = f.previous()
    prev = _period_figures(data, prev_f) if _covers(data, prev_f) else None
    return {k: Kpi(v, None if prev is None else prev[k]) for k, v in now.items()}


def _month_of(ts: pd.Series) -> pd.Series:
    return ts.dt.to_period("M").dt.start_time


def kpi_trends(data: SalesData, f: SalesFilter) -> pd.DataFrame:
    """One row per month of the period: revenue, new_pipeline, win_rate, avg_deal (for sparklines)."""
    months = pd.date_range(f.start, f.end, freq="MS")
    created, closed = created_in(data, f), closed_in(data, f)
    won = closed["status"] == "won"
    closed_month = _month_of(closed["closed"])
    out = pd.DataFrame(
        {
            "revenue": monthly_in(data, f).groupby("month")["revenue"].sum(),
            "new_pipeline": created.groupby(_month_of(created["created"]))["amount"].sum(),
            "win_rate": won.groupby(closed_month).mean(),
            "avg_deal": closed.loc[won, "amount"].groupby(closed_month[won]).mean(),
        }
    ).reindex(months)
    # a month without closed deals has no rate: carry the last one rather than plunge to zero
    out[["win_rate", "avg_deal"]] = out[["win_rate", "avg_deal"]].ffill()
    return out.fillna(0.0).rename_axis("month").reset_index()


def revenue_by_month(data: SalesData, f: SalesFilter) -> pd.DataFrame:
    """month, region, revenue: every month/region pair in the filter, zero-filled."""
    grid = pd.MultiIndex.from_product(
        [pd.date_range(f.start, f.end, freq="MS"), list(f.regions)], names=["month", "region"]
    )
    sums = monthly_in(data, f).groupby(["month", "region"])["revenue"].sum()
    return sums.reindex(grid, fill_value=0.0).reset_index()


def revenue_by_region(data: SalesData, f: SalesFilter) -> pd.DataFrame:
    """region, revenue, share, growth (vs the previous period, NaN when unknown)."""
    now = monthly_in(data, f).groupby("region")["revenue"].sum().reindex(list(f.regions), fill_value=0.0)
    prev_f = f.previous()
    if _covers(data, prev_f):
        prev = monthly_in(data, prev_f).groupby("region")["revenue"].sum().reindex(now.index)
        growth = now / prev - 1.0
    else:
        growth = pd.Series(np.nan, index=now.index)
    total = now.sum()
    out = pd.DataFrame({"revenue": now, "share": now / total if total else 0.0, "growth": growth})
    return out.rename_axis("region").reset_index().sort_values("revenue", ascending=False, ignore_index=True)


def pipeline_by_stage(data: SalesData, f: SalesFilter) -> pd.DataFrame:
    """The funnel for opportunities created in the period: how many reached each stage."""
    opps = created_in(data, f)
    idx = opps["stage_index"].to_numpy()
    amounts = opps["amount"].to_numpy()
    count = [int((idx >= s).sum()) for s in range(len(STAGES))]
    amount = [float(amounts[idx >= s].sum()) for s in range(len(STAGES))]
    conversion = [1.0] + [c / p if p else 0.0 for p, c in zip(count, count[1:], strict=False)]
    return pd.DataFrame({"stage": STAGES, "opportunities": count, "amount": amount, "conversion": conversion})


def top_accounts(data: SalesData, f: SalesFilter, n: int = 15) -> pd.DataFrame:
    """The biggest accounts by revenue in the period, with share, growth, health and a monthly trend."""
    m = monthly_in(data, f)
    if m.empty:
        return pd.DataFrame(
            columns=["account", "region", "industry", "owner", "revenue", "share", "growth", "health", "trend"]
        )
    per_account = m.groupby("account_id")["revenue"].sum().nlargest(n)
    ids = per_account.index
    period_months = pd.date_range(f.start, f.end, freq="MS")
    trend = (
        m[m["account_id"].isin(ids)]
        .pivot_table(index="account_id", columns="month", values="revenue", aggfunc="sum")
        .reindex(index=ids, columns=period_months, fill_value=0.0)
        .fillna(0.0)
    )
    prev_f = f.previous()
    if _covers(data, prev_f):
        prev = monthly_in(data, prev_f).groupby("account_id")["revenue"].sum().reindex(ids)
        growth = (per_account / prev - 1.0).where(prev > 0)
    else:
        growth = pd.Series(np.nan, index=ids)
    info = data.accounts.set_index("account_id").loc[ids]
    return pd.DataFrame(
        {
            "account": info["account"].to_numpy(),
            "region": info["region"].to_numpy(),
            "industry": info["industry"].to_numpy(),
            "owner": info["owner"].to_numpy(),
            "revenue": per_account.to_numpy(),
            "share": (per_account / m["revenue"].sum()).to_numpy(),
            "growth": growth.to_numpy(),
            "health": info["health"].to_numpy(),
            "trend": [row.round(0).tolist() for row in trend.to_numpy()],
        }
    )


# --------------------------------------------------------------------------- operations

STEP = pd.Timedelta(minutes=5)
WINDOW = pd.Timedelta(days=7)
SEVERITIES: tuple[str, ...] = ("SEV1", "SEV2", "SEV3", "SEV4")


@dataclass(frozen=True)
class Service:
    name: str
    team: str
    slo: float  # availability objective
    p50_ms: float
    rps: float  # peak requests per second
    tail95: float  # typical p95 / p50
    tail99: float  # typical p99 / p95


SERVICES: tuple[Service, ...] = (
    Service("api-gateway", "Platform", 0.999, 34.0, 2_400.0, 2.1, 1.8),
    Service("auth", "Identity", 0.9995, 21.0, 900.0, 2.4, 1.7),
    Service("checkout", "Commerce", 0.999, 118.0, 310.0, 2.2, 1.9),
    Service("payments", "Payments", 0.9995, 205.0, 140.0, 1.9, 2.1),
    Service("search", "Discovery", 0.995, 82.0, 1_150.0, 2.6, 1.6),
    Service("notifications", "Messaging", 0.99, 57.0, 520.0, 2.0, 2.4),
)
SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)

# Per severity: p50 / p95 / p99 multipliers and the extra error rate while it lasts, typical minutes.
_SEV_EFFECT: dict[str, tuple[float, float, float, float, float]] = {
    "SEV1": (2.2, 3.5, 4.5, 0.080, 95.0),
    "SEV2": (1.6, 2.4, 3.2, 0.015, 70.0),
    "SEV3": (1.25, 1.6, 2.1, 0.0018, 45.0),
    "SEV4": (1.05, 1.2, 1.5, 0.0003, 30.0),
}
_INCIDENT_TITLES: dict[str, tuple[str, ...]] = {
    "api-gateway": (
        "Elevated 5xx from edge pool eu-west",
        "TLS handshake latency after cert rotation",
        "Rate limiter misconfiguration",
    ),
    "auth": ("Token refresh timeouts", "Session store failover", "Slow JWKS fetches from IdP"),
    "checkout": ("Cart service saturation", "Inventory reservation deadlocks", "Slow promo code evaluation"),
    "payments": ("Card processor timeouts", "Retry storm against ledger DB", "3-D Secure callback failures"),
    "search": ("Index shard rebalancing", "Query cache eviction storm", "Degraded relevance after deploy"),
    "notifications": ("Email provider throttling", "Push queue backlog", "Webhook delivery retries"),
}


@dataclass(frozen=True)
class OpsData:
    latency: pd.DataFrame  # ts, service, p50_ms, p95_ms, p99_ms, requests, errors (one row per 5 min per service)
    incidents: pd.DataFrame  # incident, severity, service, title, opened, resolved, duration, status, postmortem
    as_of: pd.Timestamp


def ops_as_of(now: datetime | None = None) -> pd.Timestamp:
    """Now, as naive UTC, floored to the 5-minute grid (so the cache refreshes every 5 minutes)."""
    now = now or datetime.now(timezone.utc)
    ts = pd.Timestamp(now)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.floor(STEP)


def service(name: str) -> Service:
    for s in SERVICES:
        if s.name == name:
            return s
    raise KeyError(name)


def make_ops(seed: int = SEED, as_of: datetime | pd.Timestamp | None = None) -> OpsData:
    """Seven days of 5-minute latency/traffic per service, and the incidents that shaped it."""
    end = ops_as_of(as_of)
    rng = np.random.default_rng([seed, 2])
    ts = pd.date_range(end=end, periods=int(WINDOW / STEP), freq=STEP)
    n_s, n_t = len(SERVICES), len(ts)

    hours = (ts.hour + ts.minute / 60.0).to_numpy()
    # traffic follows the working day across EMEA and NA (peak ~15:00 UTC), quieter at weekends
    diurnal = 0.58 + 0.42 * np.exp(-(((hours - 15.0 + 12.0) % 24.0 - 12.0) ** 2) / (2 * 4.5**2))
    weekly = np.where(ts.day_of_week.to_numpy() >= 5, 0.72, 1.0)
    load = diurnal * weekly  # 0..1, shared shape
    load = load[None, :] * rng.lognormal(0.0, 0.05, (n_s, n_t))

    incidents = _make_incidents(rng, ts, end)
    p50_mult = np.ones((n_s, n_t))
    p95_mult = np.ones((n_s, n_t))
    p99_mult = np.ones((n_s, n_t))
    extra_err = np.zeros((n_s, n_t))
    for inc in incidents.itertuples():
        i = SERVICE_NAMES.index(inc.service)
        until = inc.resolved if pd.notna(inc.resolved) else end + STEP
        on = np.asarray((ts >= inc.opened) & (ts < until))
        m50, m95, m99, err, _ = _SEV_EFFECT[inc.severity]
        p50_mult[i, on] = np.maximum(p50_mult[i, on], m50)
        p95_mult[i, on] = np.maximum(p95_mult[i, on], m95)
        p99_mult[i, on] = np.maximum(p99_mult[i, on], m99)
        extra_err[i, on] += err * rng.lognormal(0.0, 0.25, on.sum())

    base = np.array([s.p50_ms for s in SERVICES])[:, None]
    tail95 = np.array([s.tail95 for s in SERVICES])[:, None]
    tail99 = np.array([s.tail99 for s in SERVICES])[:, None]
    # queueing: latency rises faster than load; ratios stay >= 1.1 so p50 < p95 < p99 always holds
    p50 = base * (0.85 + 0.3 * load**2) * rng.lognormal(0.0, 0.04, (n_s, n_t)) * p50_mult
    p95 = p50 * np.maximum(1.1, tail95 * rng.lognormal(0.0, 0.07, (n_s, n_t))) * p95_mult / p50_mult
    p99 = p95 * np.maximum(1.1, tail99 * rng.lognormal(0.0, 0.12, (n_s, n_t))) * p99_mult / p95_mult
    p95 = np.maximum(p95, p50 * 1.1)
    p99 = np.maximum(p99, p95 * 1.1)

    rps = np.array([s.rps for s in SERVICES])[:, None]
    requests = np.round(rps * 300.0 * load).astype(np.int64)
    allowed = 1.0 - np.array([s.slo for s in SERVICES])[:, None]
    base_err = allowed * rng.uniform(0.12, 0.5, (n_s, 1)) * rng.lognormal(0.0, 0.5, (n_s, n_t))
    errors = rng.binomial(requests, np.clip(base_err + extra_err, 0.0, 1.0))

    latency = pd.DataFrame(
        {
            "ts": np.tile(ts.to_numpy(), n_s),
            "service": np.repeat(SERVICE_NAMES, n_t),
            "p50_ms": np.round(p50.ravel(), 1),
            "p95_ms": np.round(p95.ravel(), 1),
            "p99_ms": np.round(p99.ravel(), 1),
            "requests": requests.ravel(),
            "errors": errors.ravel(),
        }
    )
    return OpsData(latency, incidents, end)


def _make_incidents(rng: np.random.Generator, ts: pd.DatetimeIndex, end: pd.Timestamp) -> pd.DataFrame:
    n = 9
    # busier services page more often
    weights = np.array([3, 2, 3, 2, 3, 2], dtype=float)
    services = rng.choice(SERVICE_NAMES, size=n, p=weights / weights.sum())
    severity = rng.choice(SEVERITIES, size=n, p=[0.07, 0.23, 0.42, 0.28])
    severity[0] = "SEV2"  # the week always has one notable outage worth a postmortem
    starts = np.sort(rng.choice(np.arange(12, len(ts) - 30), size=n, replace=False))
    opened = ts[starts]
    minutes = np.array([rng.lognormal(np.log(_SEV_EFFECT[s][4]), 0.45) for s in severity])
    minutes = np.clip(np.round(minutes / 5) * 5, 10, 6 * 60)
    resolved = pd.Series(opened + pd.to_timedelta(minutes, unit="min"))
    # the most recent incident is still being worked on
    ongoing_open = end - pd.Timedelta(minutes=int(rng.integers(7, 16)) * 5)
    opened = opened.append(pd.DatetimeIndex([ongoing_open]))
    services = np.append(services, rng.choice(SERVICE_NAMES))
    severity = np.append(severity, "SEV3")
    resolved = pd.concat([resolved.clip(upper=end), pd.Series([pd.NaT])], ignore_index=True)

    titles = [rng.choice(_INCIDENT_TITLES[s]) for s in services]
    ids = [f"INC-{4_120 + i}" for i in range(len(opened))]
    duration = pd.Series(resolved.to_numpy() - opened.to_numpy())
    status = np.where(resolved.isna(), "Investigating", "Resolved")
    postmortem = [
        "pending" if pd.isna(r) else (f"postmortems/{i}.md" if sev in ("SEV1", "SEV2") else "not required")
        for i, sev, r in zip(ids, severity, resolved, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "incident": ids,
            "severity": severity,
            "service": services,
            "title": titles,
            "opened": opened,
            "resolved": resolved.to_numpy(),
            "duration": duration.to_numpy(),
            "status": status,
            "postmortem": postmortem,
        }
    )
    return frame.sort_values("opened", ascending=False, ignore_index=True)


def latency_window(data: OpsData, services: Iterable[str], hours: int) -> pd.DataFrame:
    """The latency rows of the given services within the last ``hours``."""
    lat = data.latency
    since = data.as_of - pd.Timedelta(hours=hours)
    return lat[lat["service"].isin(list(services)) & (lat["ts"] > since)]


def availability(rows: pd.DataFrame) -> float:
    requests = rows["requests"].sum()
    return 1.0 - rows["errors"].sum() / requests if requests else 1.0


def slo_status(data: OpsData) -> pd.DataFrame:
    """Per service: objective, 7-day availability, error budget used (1.0 = all of it), 1 h burn rate."""
    lat = data.latency
    last_hour = lat["ts"] > data.as_of - pd.Timedelta(hours=1)
    rows = []
    for s in SERVICES:
        mine = lat["service"] == s.name
        allowed = 1.0 - s.slo
        err_rate = 1.0 - availability(lat[mine])
        err_rate_1h = 1.0 - availability(lat[mine & last_hour])
        rows.append(
            {
                "service": s.name,
                "team": s.team,
                "slo": s.slo,
                "availability": 1.0 - err_rate,
                "budget_used": err_rate / allowed,
                "burn_rate_1h": err_rate_1h / allowed,
                "p99_ms": float(lat.loc[mine, "p99_ms"].median()),
            }
        )
    return pd.DataFrame(rows)


def fleet_slo(data: OpsData, services: Iterable[str]) -> float:
    """The request-weighted objective of a set of services."""
    names = list(services)
    req = data.latency[data.latency["service"].isin(names)].groupby("service")["requests"].sum()
    slo = pd.Series({s.name: s.slo for s in SERVICES}).reindex(req.index)
    return float((slo * req).sum() / req.sum())


def incidents_for(data: OpsData, services: Iterable[str]) -> pd.DataFrame:
    inc = data.incidents
    return inc[inc["service"].isin(list(services))]


@dataclass(frozen=True)
class OpsKpis:
    availability: float  # over the 7 days
    slo: float
    daily_availability: list[float]  # one value per day, oldest first
    daily_burn: list[float]  # error rate / allowed error rate, per day
    daily_incidents: list[int]  # incidents opened per day
    p95_last_hour: float
    p95_day_before: float  # the same hour one day earlier
    hourly_p95: list[float]  # the last 24 hours
    budget_left: float  # 1.0 = untouched, negative = overspent
    burn_rate_1h: float
    incidents: int
    open_incidents: int
    mttr_minutes: float | None  # mean time to resolve, resolved incidents only


def _weighted_p95(rows: pd.DataFrame) -> float:
    """p95 across services, weighted by traffic: a rough 'what a typical request sees'."""
    req = rows["requests"].sum()
    return float((rows["p95_ms"] * rows["requests"]).sum() / req) if req else float("nan")


def ops_kpis(data: OpsData, services: Iterable[str]) -> OpsKpis:
    names = list(services)
    lat = data.latency[data.latency["service"].isin(names)]
    hour = pd.Timedelta(hours=1)
    last_hour = lat[lat["ts"] > data.as_of - hour]
    day_ago = data.as_of - pd.Timedelta(days=1)
    day_before = lat[(lat["ts"] > day_ago - hour) & (lat["ts"] <= day_ago)]
    day = (data.as_of - lat["ts"]) // pd.Timedelta(days=1)  # 0 = the last 24 h
    daily = [availability(g) for _, g in lat.groupby(day, sort=True)][::-1]
    days = len(daily)
    recent = lat[lat["ts"] > data.as_of - pd.Timedelta(hours=24)]
    hours_ago = (data.as_of - recent["ts"]) // hour  # 0 = the last hour
    hourly = [_weighted_p95(g) for _, g in recent.groupby(hours_ago, sort=True)][::-1]

    slo = fleet_slo(data, names)
    allowed = 1.0 - slo
    avail = availability(lat)
    inc = incidents_for(data, names)
    resolved = inc.dropna(subset=["resolved"])
    inc_day = ((data.as_of - inc["opened"]) // pd.Timedelta(days=1)).clip(upper=days - 1)
    per_day = np.bincount(inc_day.to_numpy(dtype=int), minlength=days)[::-1]
    return OpsKpis(
        availability=avail,
        slo=slo,
        daily_availability=daily,
        daily_burn=[(1.0 - a) / allowed for a in daily],
        daily_incidents=[int(c) for c in per_day],
        p95_last_hour=_weighted_p95(last_hour),
        p95_day_before=_weighted_p95(day_before),
        hourly_p95=hourly,
        budget_left=1.0 - (1.0 - avail) / allowed,
        burn_rate_1h=(1.0 - availability(last_hour)) / allowed,
        incidents=len(inc),
        open_incidents=int(inc["resolved"].isna().sum()),
        mttr_minutes=float(resolved["duration"].mean() / pd.Timedelta(minutes=1)) if len(resolved) else None,
    )
