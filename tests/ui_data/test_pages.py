"""Run the two page files for real with Streamlit's AppTest and look at what they render."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from tools_ui import cached, data

PAGES = Path(__file__).resolve().parents[2] / "tools_ui" / "tool_pages"
SALES = PAGES / "sales.py"
OPS = PAGES / "ops.py"

# What the pages may put on screen: nothing that fetches from the internet (maps, deck.gl),
# nothing that runs HTML or scripts of its own.
ALLOWED = {
    "title", "caption", "markdown", "subheader", "metric", "dataframe", "vega_lite_chart",
    "multiselect", "select_slider", "selectbox", "button_group", "alert", "info", "success",
    "column", "flex_container", "vertical", "horizontal", "main",
}  # fmt: skip


def run(page: Path) -> AppTest:
    at = AppTest.from_file(str(page), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def walk(node: object) -> Iterator[object]:
    for child in getattr(node, "children", {}).values():
        yield child
        yield from walk(child)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def chart_data(at: AppTest) -> list[list[pd.DataFrame]]:
    """The rows each chart was sent, one frame per dataset."""
    return [
        [pa.ipc.open_stream(d.data.data).read_pandas() for d in c.proto.datasets]
        for c in at.get("vega_lite_chart")
    ]


def element_types(at: AppTest) -> set[str]:
    return {getattr(n, "type", type(n).__name__) for n in walk(at.main)}


def money(v: float) -> str:
    return f"${v / 1e6:.1f}M"


@pytest.fixture(scope="module")
def sales_at() -> AppTest:
    return run(SALES)


@pytest.fixture(scope="module")
def ops_at() -> AppTest:
    return run(OPS)


def test_sales_renders_kpis_charts_and_table(sales_at: AppTest) -> None:
    at = sales_at
    assert [t.value for t in at.title] == ["Sales"]
    assert at.caption and at.caption[0].value
    assert [m.label for m in at.metric] == ["Revenue", "New pipeline", "Win rate", "Average won deal"]
    assert all(m.delta for m in at.metric)  # the default year has a previous year to compare with
    specs = charts(at)
    assert len(specs) == 3
    assert all("layer" in s or "mark" in s for s in specs)
    assert len(at.dataframe) == 1
    top = at.dataframe[0].value
    assert len(top) == 15 and top["revenue"].is_monotonic_decreasing
    assert element_types(at) <= ALLOWED, element_types(at) - ALLOWED


def test_sales_numbers_come_from_the_data(sales_at: AppTest) -> None:
    sales = cached.load_sales(datetime.now(timezone.utc).date())
    k = data.sales_kpis(sales, data.default_filter(sales))
    assert sales_at.metric[0].value == money(k["revenue"].value)
    assert sales_at.metric[2].value == f"{k['win_rate'].value:.1%}"


def test_sales_region_filter_filters_everything() -> None:
    at = run(SALES)
    before = at.metric[0].value
    at.multiselect(key="sales.regions").set_value(["LATAM"]).run()
    assert not at.exception
    assert set(at.dataframe[0].value["region"]) == {"LATAM"}
    assert at.metric[0].value != before
    sales = cached.load_sales(datetime.now(timezone.utc).date())
    d = data.default_filter(sales)
    latam = data.SalesFilter(("LATAM",), d.start, d.end)
    assert at.metric[0].value == money(data.sales_kpis(sales, latam)["revenue"].value)
    # every chart was sent LATAM rows only (the funnel has no region column: it is checked in the data tests)
    frames = [f for chart in chart_data(at) for f in chart if "region" in f.columns]
    assert len(frames) == 2 and all(set(f["region"]) == {"LATAM"} for f in frames)


def test_sales_period_filter_and_no_regions() -> None:
    at = run(SALES)
    sales = cached.load_sales(datetime.now(timezone.utc).date())
    first = sales.months[0]
    at.select_slider(key="sales.period").set_value((first, sales.months[2])).run()
    assert not at.exception
    # nothing before the first month to compare with: no deltas, and a three-month trend
    assert all(not m.delta for m in at.metric)
    assert all(len(t) == 3 for t in at.dataframe[0].value["trend"])
    q = data.SalesFilter(data.REGIONS, first, sales.months[2])
    assert at.metric[0].value == money(data.sales_kpis(sales, q)["revenue"].value)

    at.select_slider(key="sales.period").set_value((sales.months[-1], sales.months[-1])).run()
    assert not at.exception  # a single month: no sparklines, one bar per region
    assert at.metric[0].delta and "previous month" in at.metric[0].proto.delta_description

    at.multiselect(key="sales.regions").set_value([]).run()
    assert not at.exception
    assert len(at.info) == 1 and not at.metric and not at.dataframe and not at.get("vega_lite_chart")


def test_ops_renders_kpis_charts_and_tables(ops_at: AppTest) -> None:
    at = ops_at
    assert [t.value for t in at.title] == ["Operations"]
    assert at.caption and at.caption[0].value
    assert [m.label for m in at.metric] == [
        "Availability, 7 d",
        "p95 latency, last hour",
        "Error budget left, 7 d",
        "Incidents, 7 d",
    ]
    assert at.metric[3].value == "10" and at.metric[3].delta == "1 open"
    assert len(charts(at)) == 2
    _, lines = chart_data(at)[0]
    assert set(lines["series"]) == set(data.SERVICE_NAMES) and len(lines) == 6 * 2016
    assert len(at.dataframe) == 2
    slo, incidents = (df.value for df in at.dataframe)
    assert list(slo["service"]) == list(data.SERVICE_NAMES)
    assert len(incidents) == 10 and incidents["resolved"].isna().sum() == 1
    assert element_types(at) <= ALLOWED, element_types(at) - ALLOWED


def test_ops_service_selector_narrows_the_page() -> None:
    at = run(OPS)
    at.selectbox(key="ops.service").set_value("checkout").run()
    assert not at.exception
    incidents = at.dataframe[1].value
    assert set(incidents["service"]) <= {"checkout"}
    ops = cached.load_ops(data.ops_as_of())
    k = data.ops_kpis(ops, ["checkout"])
    assert at.metric[0].value == f"{k.availability:.3%}"
    assert at.metric[3].value == str(len(data.incidents_for(ops, ["checkout"])))
    shades, lines = chart_data(at)[0]
    assert set(lines["series"]) == {"p50", "p95", "p99"}  # one service: its percentiles
    assert len(lines) == 3 * 2016
    assert set(shades["service"]) <= {"checkout"}

    at.segmented_control(key="ops.window").set_value("24 h").run()
    assert not at.exception
    _, lines = chart_data(at)[0]
    assert len(lines) == 3 * 288
    assert lines["ts"].max() - lines["ts"].min() == pd.Timedelta(hours=24) - pd.Timedelta(minutes=5)


def test_ops_every_service_and_window_renders() -> None:
    at = run(OPS)
    for name in data.SERVICE_NAMES:
        for window in ("24 h", "3 d", "7 d"):
            at.selectbox(key="ops.service").set_value(name)
            at.segmented_control(key="ops.window").set_value(window).run()
            assert not at.exception, (name, window)
            assert len(at.metric) == 4 and len(charts(at)) == 2
            if not data.incidents_for(cached.load_ops(data.ops_as_of()), [name]).empty:
                assert set(at.dataframe[-1].value["service"]) == {name}


def test_pages_are_fast_once_warm() -> None:
    for page in (SALES, OPS):
        at = run(page)
        start = time.perf_counter()
        at.run()
        assert time.perf_counter() - start < 1.5, page.name


def test_data_module_stays_free_of_streamlit() -> None:
    """The REST API imports tools_ui.data at start-up; st.cache_data there would warn (no runtime yet)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import sys, tools_ui.data; print('streamlit' in sys.modules)"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "False", out.stderr
    assert "No runtime found" not in out.stderr
