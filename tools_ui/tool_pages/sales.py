"""Sales: revenue, pipeline and regional sales (generated sample data)."""

from __future__ import annotations

import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

try:
    from tools_ui import cached, data
except ModuleNotFoundError:  # run as a script: Streamlit puts only the main script's folder on sys.path
    sys.path.append(str(Path(__file__).resolve().parents[2]))
    from tools_ui import cached, data

REGION_COLORS = {"NA": "#2E6FD8", "EMEA": "#F08A3C", "APAC": "#2BA88A", "LATAM": "#B55CC4"}
STAGE_COLOR = "#2E6FD8"


def money(v: float) -> str:
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v >= 1e6:
        return f"{sign}${v / 1e6:.1f}M"
    if v >= 1e3:
        return f"{sign}${v / 1e3:.1f}k"
    return f"{sign}${v:.0f}"


def region_scale(regions: tuple[str, ...]) -> alt.Scale:
    return alt.Scale(domain=list(regions), range=[REGION_COLORS[r] for r in regions])


def filters(sales: data.SalesData) -> data.SalesFilter | None:
    months = list(sales.months)
    default = data.default_filter(sales)
    left, right = st.columns([2, 3], vertical_alignment="bottom")
    regions = left.multiselect("Regions", data.REGIONS, default=list(data.REGIONS), key="sales.regions")
    start, end = right.select_slider(
        "Period",
        options=months,
        value=(default.start, default.end),
        format_func=lambda m: m.strftime("%b %Y"),
        key="sales.period",
    )
    if not regions:
        return None
    # keep the canonical region order whatever order they were picked in
    return data.SalesFilter(tuple(r for r in data.REGIONS if r in regions), start, end)


def kpis(sales: data.SalesData, f: data.SalesFilter) -> None:
    k = data.sales_kpis(sales, f)
    compare = f"vs previous {f.n_months} months" if f.n_months > 1 else "vs previous month"
    trends = data.kpi_trends(sales, f)
    spark = len(trends) > 1  # a single month makes no line

    def series(col: str, scale: float = 1.0) -> list[float] | None:
        return (trends[col] * scale).round(4).tolist() if spark else None

    def pct(kpi: data.Kpi) -> str | None:
        return None if kpi.change is None else f"{kpi.change:+.1%}"

    c1, c2, c3, c4 = st.columns(4)
    with c1:
        st.metric(
            "Revenue",
            money(k["revenue"].value),
            pct(k["revenue"]),
            delta_description=compare if k["revenue"].change is not None else None,
            chart_data=series("revenue"),
            chart_type="area",
            border=True,
            help="Recognised revenue in the selected months and regions.",
        )
    with c2:
        st.metric(
            "New pipeline",
            money(k["new_pipeline"].value),
            pct(k["new_pipeline"]),
            delta_description=compare if k["new_pipeline"].change is not None else None,
            chart_data=series("new_pipeline"),
            chart_type="bar",
            border=True,
            help="Value of opportunities created in the period.",
        )
    with c3:
        wr = k["win_rate"]
        st.metric(
            "Win rate",
            f"{wr.value:.1%}",
            None if wr.previous is None else f"{(wr.value - wr.previous) * 100:+.1f} pp",
            delta_description=compare if wr.previous is not None else None,
            chart_data=series("win_rate", 100),
            border=True,
            help="Won / (won + lost) for opportunities closed in the period.",
        )
    with c4:
        st.metric(
            "Average won deal",
            money(k["avg_deal"].value),
            pct(k["avg_deal"]),
            delta_description=compare if k["avg_deal"].change is not None else None,
            chart_data=series("avg_deal"),
            border=True,
        )


def revenue_chart(sales: data.SalesData, f: data.SalesFilter) -> None:
    df = data.revenue_by_month(sales, f)
    df["label"] = df["month"].dt.strftime("%b %Y")
    df["region_order"] = df["region"].map(list(f.regions).index)  # stack in the legend's order
    chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("month:O", title=None, timeUnit="yearmonth", axis=alt.Axis(format="%b %y", labelAngle=-45)),
            y=alt.Y("revenue:Q", title="Revenue", stack="zero", axis=alt.Axis(format="$~s")),
            color=alt.Color("region:N", title="Region", scale=region_scale(f.regions), legend=alt.Legend(orient="top")),
            order=alt.Order("region_order:Q"),
            tooltip=[
                alt.Tooltip("label:N", title="Month"),
                alt.Tooltip("region:N", title="Region"),
                alt.Tooltip("revenue:Q", title="Revenue", format="$,.0f"),
            ],
        )
        .properties(height=320)
    )
    st.altair_chart(chart, width="stretch")


def region_chart(sales: data.SalesData, f: data.SalesFilter) -> None:
    df = data.revenue_by_region(sales, f)
    df["share_label"] = df["share"].map(lambda s: f"{s:.0%}")
    df["growth_label"] = df["growth"].map(lambda g: "n/a" if pd.isna(g) else f"{g:+.1%}")
    base = alt.Chart(df).encode(
        y=alt.Y("region:N", title=None, sort=df["region"].tolist()),  # already largest first
        x=alt.X("revenue:Q", title="Revenue", axis=alt.Axis(format="$~s")),
    )
    bars = base.mark_bar().encode(
        color=alt.Color("region:N", scale=region_scale(f.regions), legend=None),
        tooltip=[
            alt.Tooltip("region:N", title="Region"),
            alt.Tooltip("revenue:Q", title="Revenue", format="$,.0f"),
            alt.Tooltip("share_label:N", title="Share"),
            alt.Tooltip("growth_label:N", title="vs previous period"),
        ],
    )
    labels = base.mark_text(align="left", dx=4).encode(text="share_label:N")
    st.altair_chart((bars + labels).properties(height=320), width="stretch")


def pipeline_chart(sales: data.SalesData, f: data.SalesFilter) -> None:
    df = data.pipeline_by_stage(sales, f)
    df["label"] = [
        f"{n:,} · {c:.0%}" if i else f"{n:,}" for i, (n, c) in enumerate(zip(df["opportunities"], df["conversion"]))
    ]
    base = alt.Chart(df).encode(
        y=alt.Y("stage:N", title=None, sort=list(data.STAGES)),
        x=alt.X("amount:Q", title="Pipeline value", axis=alt.Axis(format="$~s")),
    )
    bars = base.mark_bar(color=STAGE_COLOR, cornerRadiusEnd=3).encode(
        tooltip=[
            alt.Tooltip("stage:N", title="Stage"),
            alt.Tooltip("opportunities:Q", title="Opportunities", format=","),
            alt.Tooltip("amount:Q", title="Value", format="$,.0f"),
            alt.Tooltip("conversion:Q", title="From previous stage", format=".0%"),
        ],
    )
    labels = base.mark_text(align="left", dx=4).encode(text="label:N")
    st.altair_chart((bars + labels).properties(height=300), width="stretch")
    st.caption("Opportunities created in the period, by the furthest stage reached; labels show count · conversion.")


def accounts_table(sales: data.SalesData, f: data.SalesFilter) -> None:
    df = data.top_accounts(sales, f, n=15)
    df["growth"] = df["growth"] * 100  # printf formats below take percentage points
    top_share = float(df["share"].max()) if len(df) else 0.1
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        height=(len(df) + 1) * 35 + 3,  # every row visible, no inner scrolling
        column_order=["account", "region", "industry", "owner", "revenue", "share", "growth", "health", "trend"],
        column_config={
            "account": st.column_config.TextColumn("Account", pinned=True),
            "region": st.column_config.TextColumn("Region", width="small"),
            "industry": st.column_config.TextColumn("Industry"),
            "owner": st.column_config.TextColumn("Owner"),
            "revenue": st.column_config.NumberColumn("Revenue", format="$%,.0f"),
            "share": st.column_config.ProgressColumn(
                "Share",
                help="Share of the selected revenue",
                format="percent",
                min_value=0.0,
                max_value=max(0.05, math.ceil(top_share * 20) / 20),
                width="small",
            ),
            "growth": st.column_config.NumberColumn(
                "Growth", help="Against the previous period of the same length", format="%+.1f%%"
            ),
            "health": st.column_config.ProgressColumn(
                "Health", help="Account health score (usage, support, renewal signals)", min_value=0, max_value=100,
                format="%d", width="small",
            ),
            "trend": st.column_config.LineChartColumn("Monthly revenue", y_min=0, width="medium"),
        },
    )


def main() -> None:
    st.title("Sales")
    st.caption("Revenue, pipeline and regional performance across the book of business (generated sample data).")

    sales = cached.load_sales(datetime.now(timezone.utc).date())
    f = filters(sales)
    if f is None:
        st.info("Pick at least one region to see the numbers.", icon=":material/filter_alt:")
        return

    kpis(sales, f)

    st.subheader("Revenue by month")
    revenue_chart(sales, f)

    left, right = st.columns(2)
    with left:
        st.subheader("Pipeline by stage")
        pipeline_chart(sales, f)
    with right:
        st.subheader("Revenue by region")
        region_chart(sales, f)

    st.subheader("Top accounts")
    accounts_table(sales, f)


main()
