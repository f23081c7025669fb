"""The generated operations data: shape, determinism, plausible numbers, and the per-service views."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from tools_ui import data

AS_OF = pd.Timestamp("2026-03-14 09:35")


@pytest.fixture(scope="module")
def ops() -> data.OpsData:
    return data.make_ops(as_of=AS_OF)


def test_seven_days_at_five_minutes_for_every_service(ops: data.OpsData) -> None:
    lat = ops.latency
    assert len(data.SERVICES) == 6
    assert len(lat) == 7 * 288 * len(data.SERVICES)
    for _, rows in lat.groupby("service"):
        ts = rows["ts"]
        assert len(ts) == 2016 and ts.is_monotonic_increasing
        assert (ts.diff().dropna() == pd.Timedelta(minutes=5)).all()
        assert ts.iloc[-1] == AS_OF and ts.iloc[0] == AS_OF - pd.Timedelta(days=7) + pd.Timedelta(minutes=5)
    assert set(lat["service"]) == set(data.SERVICE_NAMES)


def test_same_seed_same_data_other_seed_other_data(ops: data.OpsData) -> None:
    again = data.make_ops(as_of=AS_OF)
    pd.testing.assert_frame_equal(ops.latency, again.latency)
    pd.testing.assert_frame_equal(ops.incidents, again.incidents)
    other = data.make_ops(seed=data.SEED + 1, as_of=AS_OF)
    assert not ops.latency["p99_ms"].equals(other.latency["p99_ms"])


def test_as_of_is_naive_utc_on_the_five_minute_grid() -> None:
    assert data.ops_as_of(datetime(2026, 3, 14, 9, 39, 59, tzinfo=timezone.utc)) == pd.Timestamp("2026-03-14 09:35")
    cet = timezone(timedelta(hours=1))
    assert data.ops_as_of(datetime(2026, 3, 14, 10, 40, 1, tzinfo=cet)) == pd.Timestamp("2026-03-14 09:40")
    assert data.ops_as_of().tzinfo is None
    # an off-grid reference time lands on the grid
    assert data.make_ops(as_of=pd.Timestamp("2026-03-14 09:38:12")).as_of == AS_OF


def test_latency_is_ordered_and_plausible(ops: data.OpsData) -> None:
    lat = ops.latency
    assert (lat["p50_ms"] > 0).all()
    assert (lat["p50_ms"] < lat["p95_ms"]).all() and (lat["p95_ms"] < lat["p99_ms"]).all()
    medians = lat.groupby("service")["p50_ms"].median()
    for s in data.SERVICES:
        assert medians[s.name] == pytest.approx(s.p50_ms, rel=0.3)
    assert lat["p99_ms"].max() < 10_000


def test_traffic_has_a_daily_rhythm(ops: data.OpsData) -> None:
    gw = ops.latency[ops.latency["service"] == "api-gateway"]
    by_hour = gw.groupby(gw["ts"].dt.hour)["requests"].mean()
    assert by_hour[15] > 1.4 * by_hour[3]
    weekday = gw["ts"].dt.day_of_week
    assert gw.loc[weekday < 5, "requests"].mean() > gw.loc[weekday >= 5, "requests"].mean()


def test_errors_never_exceed_requests(ops: data.OpsData) -> None:
    lat = ops.latency
    assert (lat["requests"] > 0).all() and (lat["errors"] >= 0).all()
    assert (lat["errors"] <= lat["requests"]).all()


def test_incidents_are_well_formed(ops: data.OpsData) -> None:
    inc = ops.incidents
    assert 5 <= len(inc) <= 15 and inc["incident"].is_unique
    assert set(inc["severity"]) <= set(data.SEVERITIES) and set(inc["service"]) <= set(data.SERVICE_NAMES)
    assert (inc["opened"] > AS_OF - pd.Timedelta(days=7)).all() and (inc["opened"] <= AS_OF).all()
    assert inc["opened"].is_monotonic_decreasing  # newest first
    ongoing = inc["resolved"].isna()
    assert ongoing.sum() == 1
    assert (inc.loc[ongoing, "status"] == "Investigating").all() and (inc.loc[ongoing, "postmortem"] == "pending").all()
    done = inc[~ongoing]
    assert (done["status"] == "Resolved").all()
    assert (done["resolved"] > done["opened"]).all() and (done["resolved"] <= AS_OF).all()
    assert (done["duration"] == done["resolved"] - done["opened"]).all()
    major = done["severity"].isin(["SEV1", "SEV2"])
    assert major.any()
    assert (done.loc[major, "postmortem"] == "postmortems/" + done.loc[major, "incident"] + ".md").all()
    assert (done.loc[~major, "postmortem"] == "not required").all()


def test_incidents_show_in_the_latency(ops: data.OpsData) -> None:
    lat = ops.latency
    for inc in ops.incidents[ops.incidents["severity"].isin(["SEV1", "SEV2"])].itertuples():
        rows = lat[lat["service"] == inc.service]
        until = inc.resolved if pd.notna(inc.resolved) else AS_OF
        during = rows[(rows["ts"] >= inc.opened) & (rows["ts"] < until)]
        assert during["p99_ms"].median() > 1.8 * rows["p99_ms"].median()
        assert data.availability(during) < data.availability(rows)  # worse than the week overall


def test_slo_status_matches_the_raw_rows(ops: data.OpsData) -> None:
    status = data.slo_status(ops).set_index("service")
    assert list(status.index) == list(data.SERVICE_NAMES)
    for s in data.SERVICES:
        rows = ops.latency[ops.latency["service"] == s.name]
        err = rows["errors"].sum() / rows["requests"].sum()
        assert status.loc[s.name, "availability"] == pytest.approx(1 - err)
        assert status.loc[s.name, "budget_used"] == pytest.approx(err / (1 - s.slo))
        last = rows[rows["ts"] > AS_OF - pd.Timedelta(hours=1)]
        assert len(last) == 12
        assert status.loc[s.name, "burn_rate_1h"] == pytest.approx(
            last["errors"].sum() / last["requests"].sum() / (1 - s.slo)
        )
    assert status["availability"].between(0.97, 1.0).all()
    assert (status["budget_used"] > 0).all() and status["budget_used"].max() > 0.5


def test_window_and_service_filters(ops: data.OpsData) -> None:
    day = data.latency_window(ops, ["auth"], 24)
    assert set(day["service"]) == {"auth"} and len(day) == 288
    assert day["ts"].min() > AS_OF - pd.Timedelta(hours=24)
    three = data.latency_window(ops, ["auth", "search"], 72)
    assert set(three["service"]) == {"auth", "search"} and len(three) == 2 * 864
    assert set(data.incidents_for(ops, ["payments"])["service"]) <= {"payments"}


def test_kpis_for_one_service_and_the_fleet(ops: data.OpsData) -> None:
    status = data.slo_status(ops).set_index("service")
    for name in data.SERVICE_NAMES:
        k = data.ops_kpis(ops, [name])
        assert k.availability == pytest.approx(status.loc[name, "availability"])
        assert k.slo == data.service(name).slo
        assert k.budget_left == pytest.approx(1 - status.loc[name, "budget_used"])
        assert k.burn_rate_1h == pytest.approx(status.loc[name, "burn_rate_1h"])
        assert k.incidents == len(data.incidents_for(ops, [name])) == sum(k.daily_incidents)
    fleet = data.ops_kpis(ops, data.SERVICE_NAMES)
    assert len(fleet.daily_availability) == len(fleet.daily_burn) == len(fleet.daily_incidents) == 7
    assert len(fleet.hourly_p95) == 24
    assert fleet.hourly_p95[-1] == pytest.approx(fleet.p95_last_hour)
    assert fleet.incidents == len(ops.incidents) and fleet.open_incidents == 1
    done = ops.incidents.dropna(subset=["resolved"])
    assert fleet.mttr_minutes == pytest.approx(done["duration"].mean().total_seconds() / 60)
    slos = np.array([s.slo for s in data.SERVICES])
    assert slos.min() <= fleet.slo <= slos.max()
    p95 = ops.latency["p95_ms"]
    assert p95.min() < fleet.p95_last_hour < p95.max()
