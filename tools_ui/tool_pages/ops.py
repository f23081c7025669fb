"""Operations: service latency, error budgets and incidents (generated sample data)."""

from __future__ import annotations

import sys
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

try:
    from tools_ui import cached, data
except ModuleNotFoundError:  # run as a script: Streamlit puts only the main script's folder on sys.path
    sys.path.append(str(Path(__file__).resolve().parents[2]))
    from tools_ui import cached, data

ALL = "All services"
WINDOWS = {"24 h": 24, "3 d": 72, "7 d": 168}
PERCENTILE_COLORS = {"p50": "#2BA88A", "p95": "#F0A030", "p99": "#E0413A"}
STATE_COLORS = {"Healthy": "#2BA88A", "At risk": "#F0A030", "Exhausted": "#E0413A"}
INCIDENT_COLOR = "#E0413A"
SERVICE_COLORS = ["#2E6FD8", "#F08A3C", "#2BA88A", "#B55CC4", "#8C6D46", "#5BB8E0"]


def controls() -> tuple[list[str], str | None, int]:
    left, right = st.columns([2, 3], vertical_alignment="bottom")
    choice = left.selectbox("Service", [ALL, *data.SERVICE_NAMES], key="ops.service")
    window = right.segmented_control(
        "Window", list(WINDOWS), default="7 d", required=True, key="ops.window"
    )
    selected = None if choice == ALL else choice
    services = list(data.SERVICE_NAMES) if selected is None else [selected]
    return services, selected, WINDOWS[window or "7 d"]


def kpis(ops: data.OpsData, services: list[str]) -> None:
    k = data.ops_kpis(ops, services)
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        st.metric(
            "Availability, 7 d",
            f"{k.availability:.3%}",
            f"{(k.availability - k.slo) * 100:+.3f} pp",
            delta_description=f"vs SLO {k.slo:.2%}",
            chart_data=[round(a * 100, 4) for a in k.daily_availability],
            border=True,
            help="Successful requests / all requests over the last 7 days; the sparkline is one point a day.",
        )
    with c2:
        change = k.p95_last_hour / k.p95_day_before - 1.0 if k.p95_day_before else 0.0
        st.metric(
            "p95 latency, last hour",
            f"{k.p95_last_hour:,.0f} ms",
            f"{change:+.1%}",
            delta_color="inverse",
            delta_description="vs same hour yesterday",
            chart_data=[round(v, 1) for v in k.hourly_p95],
            border=True,
            help="Request-weighted across the selected services; the sparkline covers the last 24 hours.",
        )
    with c3:
        st.metric(
            "Error budget left, 7 d",
            f"{k.budget_left:.0%}",
            f"{k.burn_rate_1h:.1f}× burn rate",
            delta_color="red" if k.burn_rate_1h > 1.0 else "green",
            delta_arrow="off",
            delta_description="last hour",
            chart_data=[round(b, 3) for b in k.daily_burn],
            chart_type="bar",
            border=True,
            help="A burn rate above 1× spends the budget faster than the SLO allows.",
        )
    with c4:
        st.metric(
            "Incidents, 7 d",
            k.incidents,
            f"{k.open_incidents} open" if k.open_incidents else "none open",
            delta_color="red" if k.open_incidents else "gray",
            delta_arrow="off",
            delta_description=None if k.mttr_minutes is None else f"MTTR {k.mttr_minutes:.0f} min",
            chart_data=k.daily_incidents,
            chart_type="bar",
            border=True,
            help="Incidents opened per day; MTTR is the mean time to resolve.",
        )


def latency_chart(ops: data.OpsData, services: list[str], selected: str | None, hours: int) -> None:
    rows = data.latency_window(ops, services, hours)
    time_axis = alt.X("ts:T", title=None, axis=alt.Axis(format="%a %H:%M" if hours > 24 else "%H:%M", labelAngle=0))
    if selected:
        long = rows.melt(id_vars="ts", value_vars=["p50_ms", "p95_ms", "p99_ms"], var_name="series", value_name="ms")
        long["series"] = long["series"].str.removesuffix("_ms")
        color = alt.Color(
            "series:N",
            title="Percentile",
            scale=alt.Scale(domain=list(PERCENTILE_COLORS), range=list(PERCENTILE_COLORS.values())),
            legend=alt.Legend(orient="top"),
        )
        st.caption(f"{selected}: p50, p95 and p99 at 5-minute resolution. Shaded: incidents.")
    else:
        long = rows[["ts", "service", "p95_ms"]].rename(columns={"service": "series", "p95_ms": "ms"})
        color = alt.Color(
            "series:N",
            title="Service",
            scale=alt.Scale(domain=list(data.SERVICE_NAMES), range=SERVICE_COLORS),
            legend=alt.Legend(orient="top"),
        )
        st.caption("p95 per service at 5-minute resolution. Pick a service for its p50/p95/p99. Shaded: incidents.")

    lines = (
        alt.Chart(long)
        .mark_line(strokeWidth=1.3)
        .encode(
            x=time_axis,
            y=alt.Y("ms:Q", title="Latency (ms)"),
            color=color,
            tooltip=[
                alt.Tooltip("ts:T", title="Time (UTC)", format="%a %d %b %H:%M"),
                alt.Tooltip("series:N", title="Series"),
                alt.Tooltip("ms:Q", title="ms", format=",.1f"),
            ],
        )
    )

    since = ops.as_of - pd.Timedelta(hours=hours)
    inc = data.incidents_for(ops, services).copy()
    inc["until"] = inc["resolved"].fillna(ops.as_of)
    inc = inc[inc["until"] > since]
    inc["opened"] = inc["opened"].clip(lower=since)
    shades = (
        alt.Chart(inc[["incident", "severity", "service", "title", "opened", "until"]])
        .mark_rect(color=INCIDENT_COLOR, opacity=0.12)
        .encode(
            x="opened:T",
            x2="until:T",
            tooltip=[
                alt.Tooltip("incident:N", title="Incident"),
                alt.Tooltip("severity:N", title="Severity"),
                alt.Tooltip("service:N", title="Service"),
                alt.Tooltip("title:N", title="What"),
            ],
        )
    )
    st.altair_chart(alt.layer(shades, lines).properties(height=340), width="stretch")


def budget_status(ops: data.OpsData, selected: str | None) -> pd.DataFrame:
    status = data.slo_status(ops)
    used = status["budget_used"]
    status["state"] = np.select([used >= 1.0, used >= 0.75], ["Exhausted", "At risk"], "Healthy")
    status["used_pct"] = used * 100
    status["alpha"] = np.where((status["service"] == selected) | (selected is None), 1.0, 0.35)
    return status


def budget_chart(status: pd.DataFrame) -> None:
    domain_max = max(100.0, float(status["used_pct"].max()) * 1.1)
    bars = (
        alt.Chart(status)
        .mark_bar(cornerRadiusEnd=3)
        .encode(
            y=alt.Y("service:N", title=None, sort=list(data.SERVICE_NAMES)),
            x=alt.X("used_pct:Q", title="Error budget used, 7 d (%)", scale=alt.Scale(domain=[0, domain_max])),
            color=alt.Color(
                "state:N",
                title=None,
                scale=alt.Scale(domain=list(STATE_COLORS), range=list(STATE_COLORS.values())),
                legend=alt.Legend(orient="top"),
            ),
            opacity=alt.Opacity("alpha:Q", scale=None, legend=None),
            tooltip=[
                alt.Tooltip("service:N", title="Service"),
                alt.Tooltip("used_pct:Q", title="Budget used (%)", format=".0f"),
                alt.Tooltip("burn_rate_1h:Q", title="Burn rate, 1 h", format=".1f"),
            ],
        )
    )
    limit = alt.Chart(pd.DataFrame({"x": [100.0]})).mark_rule(strokeDash=[4, 4], color="#888").encode(x="x:Q")
    st.altair_chart(alt.layer(bars, limit).properties(height=260), width="stretch")


def slo_table(status: pd.DataFrame) -> None:
    table = status.assign(slo=status["slo"] * 100, availability=status["availability"] * 100)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_order=["service", "team", "slo", "availability", "budget_used", "burn_rate_1h", "p99_ms"],
        column_config={
            "service": st.column_config.TextColumn("Service"),
            "team": st.column_config.TextColumn("Team"),
            "slo": st.column_config.NumberColumn("SLO", format="%.2f%%"),
            "availability": st.column_config.NumberColumn("Availability", format="%.3f%%"),
            "budget_used": st.column_config.ProgressColumn(
                "Budget used", format="percent", min_value=0.0, max_value=1.0, width="small"
            ),
            "burn_rate_1h": st.column_config.NumberColumn(
                "Burn, 1 h", format="%.1f×", help="Above 1× the budget runs out before the SLO window ends"
            ),
            "p99_ms": st.column_config.NumberColumn("p99 (median)", format="%.0f ms"),
        },
    )


def incident_table(ops: data.OpsData, services: list[str]) -> None:
    inc = data.incidents_for(ops, services).copy()
    if inc.empty:
        st.success("No incidents in the last 7 days.", icon=":material/check_circle:")
        return
    # an open incident shows how long it has been running so far
    inc["duration"] = inc["duration"].fillna(ops.as_of - inc["opened"])
    st.dataframe(
        inc,
        hide_index=True,
        width="stretch",
        column_order=[
            "incident", "severity", "service", "title", "opened", "resolved", "duration", "status", "postmortem"
        ],
        column_config={
            "incident": st.column_config.TextColumn("Incident", pinned=True),
            "severity": st.column_config.TextColumn("Severity", width="small"),
            "service": st.column_config.TextColumn("Service"),
            "title": st.column_config.TextColumn("Summary", width="medium"),
            "opened": st.column_config.DatetimeColumn("Opened (UTC)", format="ddd D MMM, HH:mm"),
            "resolved": st.column_config.DatetimeColumn("Resolved (UTC)", format="ddd D MMM, HH:mm"),
            "duration": st.column_config.NumberColumn("Duration", format="compact"),
            "status": st.column_config.TextColumn("Status"),
            "postmortem": st.column_config.TextColumn("Postmortem"),
        },
    )


def main() -> None:
    st.title("Operations")
    st.caption("Latency, error budgets and incidents of the production services, last 7 days (generated sample data).")

    ops = cached.load_ops(data.ops_as_of())
    services, selected, hours = controls()

    kpis(ops, services)

    st.subheader("Latency")
    latency_chart(ops, services, selected, hours)

    status = budget_status(ops, selected)
    left, right = st.columns([2, 3])
    with left:
        st.subheader("Error budget burn")
        budget_chart(status)
    with right:
        st.subheader("SLO status")
        slo_table(status)

    st.subheader("Incidents")
    incident_table(ops, services)


main()
