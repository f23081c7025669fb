"""Charts of the filtered view: traffic and denials over time, who and what was denied, failed sign-ins by address."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from gateway.audit.index import View, denied, sign_in_failures, timeline, top

BRAND = "#0f766e"
DANGER = "#b91c1c"
AMBER = "#b45309"


def _width_label(width_us: int) -> str:
    s = width_us // 1_000_000
    for unit, n in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if s >= n and s % n == 0:
            k = s // n
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{s} seconds"


def render(view: View) -> None:
    if view.rows == 0:
        st.info("No events match these filters.", icon=":material/search_off:")
        return
    t = view.project(["ts", "action", "outcome", "decision", "user", "tool", "path", "client_ip"])
    starts, requests, denials, width = timeline(t)
    st.subheader("Requests and denials over time")
    if len(starts):
        frame = pd.DataFrame({"time": pd.to_datetime(starts, unit="us", utc=True), "Requests": requests, "Denials": denials})
        fmt = "%H:%M:%S" if width < 60 * 10**6 else "%H:%M" if width < 86_400 * 10**6 else "%b %d"
        x = alt.X("time:T", title=None, axis=alt.Axis(format=fmt, labelOverlap=True))
        y_title = f"events per {_width_label(width)}"
        base = alt.Chart(frame).encode(x=x)
        area = base.mark_area(color=BRAND, opacity=0.25, line={"color": BRAND}, interpolate="step-after").encode(
            y=alt.Y("Requests:Q", title=y_title),
            tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M:%S", title="from (UTC)"), "Requests:Q", "Denials:Q"],
        )
        line = base.mark_line(color=DANGER, strokeWidth=2, interpolate="step-after").encode(y=alt.Y("Denials:Q", title=y_title))
        st.altair_chart((area + line).properties(height=240), width="stretch")
        st.caption(
            f"Teal: HTTP requests; red: denials (requests, websocket handshakes and in-app page switches), per {_width_label(width)}, UTC."
        )
    deny = denied(t)
    left, right = st.columns(2)
    with left:
        st.subheader("Top denied users")
        _bars(top(t, "user", deny), "user", DANGER, "No denials in this view.", none="(anonymous)")
    with right:
        st.subheader("Top denied tools and paths")
        tools = top(t, "tool", deny)
        if tools and not (len(tools) == 1 and tools[0][0] == "(none)"):
            _bars(tools, "tool", DANGER, "No denials in this view.", none="(other paths)")
        else:
            _bars(top(t, "path", deny), "path", DANGER, "No denials in this view.")
    st.subheader("Failed sign-ins by client IP")
    _bars(top(t, "client_ip", sign_in_failures(t)), "client IP", AMBER, "No failed sign-ins in this view.")


def _bars(rows: list[tuple[str, int]], label: str, color: str, empty: str, none: str = "(none)") -> None:
    if not rows:
        st.caption(empty)
        return
    frame = pd.DataFrame([(none if v == "(none)" else v, n) for v, n in rows], columns=["name", "events"])
    chart = (
        alt.Chart(frame)
        .mark_bar(color=color, cornerRadiusEnd=3)
        .encode(
            y=alt.Y("name:N", sort="-x", title=None),
            x=alt.X("events:Q", title="events", axis=alt.Axis(tickMinStep=1)),
            tooltip=[alt.Tooltip("name:N", title=label), "events:Q"],
        )
        .properties(height=alt.Step(26))
    )
    st.altair_chart(chart, width="stretch")
