"""The generated sales data: shape, determinism, plausible numbers, and filters that really filter."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from tools_ui import data

AS_OF = date(2026, 3, 14)


@pytest.fixture(scope="module")
def sales() -> data.SalesData:
    return data.make_sales(as_of=AS_OF)


@pytest.fixture(scope="module")
def year(sales: data.SalesData) -> data.SalesFilter:
    return data.default_filter(sales)  # the last 12 months, all regions


def test_covers_24_months_ending_last_month(sales: data.SalesData) -> None:
    assert len(sales.months) == data.MONTHS == 24
    assert sales.months[-1] == pd.Timestamp(2026, 2, 1)
    assert sales.months[0] == pd.Timestamp(2024, 3, 1)
    assert set(sales.monthly["month"]) == set(sales.months)


def test_same_seed_same_data_other_seed_other_data(sales: data.SalesData) -> None:
    again = data.make_sales(as_of=AS_OF)
    for a, b in [
        (sales.accounts, again.accounts),
        (sales.monthly, again.monthly),
        (sales.opportunities, again.opportunities),
    ]:
        pd.testing.assert_frame_equal(a, b)
    other = data.make_sales(seed=data.SEED + 1, as_of=AS_OF)
    assert not sales.monthly["revenue"].equals(other.monthly["revenue"])


def test_accounts_are_unique_and_well_formed(sales: data.SalesData) -> None:
    acc = sales.accounts
    assert acc["account"].is_unique and acc["account_id"].is_unique
    assert set(acc["region"]) == set(data.REGIONS)
    assert acc["health"].between(0, 100).all()
    assert not sales.monthly.duplicated(["month", "account_id"]).any()


def test_revenue_is_plausible_with_growth_and_seasonality(sales: data.SalesData) -> None:
    m = sales.monthly
    assert (m["revenue"] > 0).all()
    total = m.groupby("month")["revenue"].sum()
    assert total.between(1e6, 20e6).all()
    growth = total.iloc[12:].sum() / total.iloc[:12].sum() - 1
    assert 0.08 < growth < 0.6
    # December is the year-end push; January is the hangover
    for dec in [t for t in total.index if t.month == 12 and t + pd.DateOffset(months=1) in total.index]:
        assert total[dec] > total[dec + pd.DateOffset(months=1)] * 1.15
        assert total[dec] > total[dec - pd.DateOffset(months=1)]
    by_region = m.groupby("region")["revenue"].sum()
    assert by_region.idxmax() == "NA" and by_region.idxmin() == "LATAM"


def test_opportunities_are_consistent(sales: data.SalesData) -> None:
    o = sales.opportunities
    assert o["opp_id"].is_unique
    assert o["stage_index"].between(0, len(data.STAGES) - 1).all()
    assert (o["stage"] == np.array(data.STAGES)[o["stage_index"]]).all()
    won, lost, open_ = (o["status"] == s for s in ("won", "lost", "open"))
    assert (won | lost | open_).all()
    assert (o.loc[won, "stage"] == "Closed won").all()
    assert (o.loc[lost | open_, "stage_index"] < len(data.STAGES) - 1).all()
    assert o.loc[open_, "closed"].isna().all() and o.loc[won | lost, "closed"].notna().all()
    assert (o.loc[won | lost, "closed"] > o.loc[won | lost, "created"]).all()
    assert (o.loc[won | lost, "closed"] <= pd.Timestamp(AS_OF)).all()
    assert (o["created"] >= sales.months[0]).all() and (o["amount"] > 0).all()
    # account, region and name agree with the account table
    joined = o.merge(sales.accounts, on="account_id", suffixes=("", "_acc"))
    assert len(joined) == len(o)
    assert (joined["region"] == joined["region_acc"]).all() and (joined["account"] == joined["account_acc"]).all()


def test_filter_periods() -> None:
    f = data.SalesFilter(("NA",), pd.Timestamp(2025, 4, 1), pd.Timestamp(2025, 6, 1))
    assert f.n_months == 3
    assert f.end_exclusive == pd.Timestamp(2025, 7, 1)
    prev = f.previous()
    assert (prev.start, prev.end, prev.regions) == (pd.Timestamp(2025, 1, 1), pd.Timestamp(2025, 3, 1), ("NA",))


def test_kpis_match_the_raw_rows(sales: data.SalesData, year: data.SalesFilter) -> None:
    k = data.sales_kpis(sales, year)
    m, o = sales.monthly, sales.opportunities
    in_year = m["month"] >= year.start
    assert k["revenue"].value == pytest.approx(m.loc[in_year, "revenue"].sum())
    in_prev = ~in_year & (m["month"] >= year.previous().start)
    assert k["revenue"].previous == pytest.approx(m.loc[in_prev, "revenue"].sum())
    closed = o[(o["closed"] >= year.start) & (o["closed"] < year.end_exclusive)]
    assert k["win_rate"].value == pytest.approx((closed["status"] == "won").mean())
    assert 0.05 < k["win_rate"].value < 0.5
    assert k["new_pipeline"].value == pytest.approx(o.loc[o["created"] >= year.start, "amount"].sum())
    assert k["revenue"].change == pytest.approx(k["revenue"].value / k["revenue"].previous - 1)


def test_no_comparison_when_previous_period_is_missing(sales: data.SalesData) -> None:
    f = data.SalesFilter(data.REGIONS, sales.months[0], sales.months[5])
    k = data.sales_kpis(sales, f)
    assert all(v.previous is None and v.change is None for v in k.values())
    assert data.revenue_by_region(sales, f)["growth"].isna().all()
    assert data.top_accounts(sales, f)["growth"].isna().all()


def test_region_filter_reaches_every_view(sales: data.SalesData, year: data.SalesFilter) -> None:
    apac = data.SalesFilter(("APAC",), year.start, year.end)
    assert set(data.revenue_by_month(sales, apac)["region"]) == {"APAC"}
    assert list(data.revenue_by_region(sales, apac)["region"]) == ["APAC"]
    assert set(data.top_accounts(sales, apac)["region"]) == {"APAC"}
    assert set(data.created_in(sales, apac)["region"]) == {"APAC"}
    assert set(data.closed_in(sales, apac)["region"]) == {"APAC"}
    everyone = data.sales_kpis(sales, year)["revenue"].value
    only_apac = data.sales_kpis(sales, apac)["revenue"].value
    assert 0 < only_apac < everyone / 2
    funnel_all = data.pipeline_by_stage(sales, year)
    funnel_apac = data.pipeline_by_stage(sales, apac)
    assert (funnel_apac["opportunities"] < funnel_all["opportunities"]).all()


def test_period_filter_reaches_every_view(sales: data.SalesData) -> None:
    q = data.SalesFilter(data.REGIONS, pd.Timestamp(2025, 7, 1), pd.Timestamp(2025, 9, 1))
    by_month = data.revenue_by_month(sales, q)
    assert set(by_month["month"]) == {pd.Timestamp(2025, m, 1) for m in (7, 8, 9)}
    assert len(by_month) == 3 * len(data.REGIONS)
    created = data.created_in(sales, q)["created"]
    assert created.min() >= q.start and created.max() < pd.Timestamp(2025, 10, 1)
    assert all(len(t) == 3 for t in data.top_accounts(sales, q)["trend"])


def test_views_add_up(sales: data.SalesData, year: data.SalesFilter) -> None:
    revenue = data.sales_kpis(sales, year)["revenue"].value
    assert data.revenue_by_month(sales, year)["revenue"].sum() == pytest.approx(revenue)
    regions = data.revenue_by_region(sales, year)
    assert regions["revenue"].sum() == pytest.approx(revenue)
    assert regions["share"].sum() == pytest.approx(1.0)
    assert regions["revenue"].is_monotonic_decreasing
    trends = data.kpi_trends(sales, year)
    assert len(trends) == 12 and trends["revenue"].sum() == pytest.approx(revenue)
    assert trends["new_pipeline"].sum() == pytest.approx(data.sales_kpis(sales, year)["new_pipeline"].value)


def test_pipeline_is_a_funnel(sales: data.SalesData, year: data.SalesFilter) -> None:
    funnel = data.pipeline_by_stage(sales, year)
    assert list(funnel["stage"]) == list(data.STAGES)
    assert funnel["opportunities"].is_monotonic_decreasing and funnel["amount"].is_monotonic_decreasing
    assert funnel["opportunities"].iloc[0] == len(data.created_in(sales, year))
    assert funnel["opportunities"].iloc[-1] > 0
    assert funnel["conversion"].between(0, 1).all()
    won = data.created_in(sales, year)["status"].eq("won").sum()
    assert funnel["opportunities"].iloc[-1] == won


def test_top_accounts(sales: data.SalesData, year: data.SalesFilter) -> None:
    top = data.top_accounts(sales, year, n=15)
    assert len(top) == 15 and top["account"].is_unique
    assert top["revenue"].is_monotonic_decreasing
    in_year = data.monthly_in(sales, year)
    assert top["revenue"].iloc[0] == pytest.approx(in_year.groupby("account_id")["revenue"].sum().max())
    assert all(len(t) == 12 and sum(t) == pytest.approx(r, abs=10) for t, r in zip(top["trend"], top["revenue"]))
    assert top["share"].between(0, 1).all()


def test_the_calendar_follows_as_of() -> None:
    later = data.make_sales(as_of=date(2026, 7, 2))
    assert later.months[-1] == pd.Timestamp(2026, 6, 1)
    assert data.last_full_month(date(2026, 1, 31)) == pd.Timestamp(2025, 12, 1)
