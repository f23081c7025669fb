"""The audit viewer page: filters, the paged table, a record's details; charts and panels live next door.

Everything here reads: the trail's columnar index (``gateway.audit.index``)
answers the filters, the original JSONL lines are read only for the record
being looked at or exported, and the page never writes to the trail.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import streamlit as st

from gateway.audit.index import NONE, AuditIndex, Filters, View, denied, distinct, read_record, select, sign_in_failures
from gateway.audit.viewer import AuditViewer
from tools_ui import audit_view_charts, audit_view_panels
from tools_ui.access import PageUser

PRESETS: dict[str, dt.timedelta | None] = {
    "All time": None,
    "Last hour": dt.timedelta(hours=1),
    "Last 24 hours": dt.timedelta(days=1),
    "Last 7 days": dt.timedelta(days=7),
    "Last 30 days": dt.timedelta(days=30),
    "Custom range": None,
}
PAGE_SIZES = (50, 100, 250, 500)
TABLE_COLUMNS = (
    "time", "action", "outcome", "user", "client_ip", "method", "path", "status", "decision",
    "rule_id", "tool", "request_id", "reason", "seq",
)  # fmt: skip
LABELS = {
    "time": "Time (UTC)", "action": "Event", "outcome": "Outcome", "user": "User", "client_ip": "Client IP",
    "method": "Method", "path": "Path", "status": "Status", "decision": "Decision", "rule_id": "Rule",
    "tool": "Tool", "request_id": "Request id", "reason": "Reason", "seq": "Seq",
}  # fmt: skip


@dataclass(frozen=True)
class Choices:
    users: list[str]
    actions: list[str]
    decisions: list[str]
    outcomes: list[str]
    tools: list[str]


# Exports go through the audited Export tab; the grid's own CSV button would bypass it.
_PAGE_CSS = """<style>
.st-key-audit_table [data-testid="stElementToolbar"] button[aria-label="Download as CSV"] { display: none; }
</style>"""


def render(viewer: AuditViewer, user: PageUser, emit: Any) -> None:
    st.html(_PAGE_CSS)
    st.title("Audit viewer")
    st.caption("Search, verify and export the audit trail. Read-only: nothing on this page changes the trail.")
    index = viewer.index
    first = index.version == 0
    with st.spinner("Indexing the audit trail…") if first else _nothing():
        index.refresh(max_age_s=1.0)
    audit_view_panels.integrity_badge(viewer)

    filters = filter_controls(index)
    if filters is None:
        return
    view = cached_view(index, filters)
    summary(view)
    events_tab, charts_tab, export_tab = st.tabs([":material/table_rows: Events", ":material/bar_chart: Charts", ":material/download: Export"])
    with events_tab:
        table(view, filters)
    with charts_tab:
        audit_view_charts.render(view)
    with export_tab:
        audit_view_panels.export_panel(viewer, view, filters, user, emit)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# ------------------------------------------------------------------ filters


def choices(index: AuditIndex) -> Choices:
    cache = st.session_state.get("audit_choices")
    if cache is not None and cache[0] == index.version:
        return cache[1]
    t = index.table
    c = Choices(
        users=[NONE, *distinct(t, "user")],
        actions=distinct(t, "action"),
        decisions=distinct(t, "decision"),
        outcomes=distinct(t, "outcome"),
        tools=[NONE, *distinct(t, "tool")],
    )
    st.session_state["audit_choices"] = (index.version, c)
    return c


def _keep(key: str, options: list[str]) -> list[str]:
    """The options, plus values picked earlier that the newest index no longer lists (Streamlit refuses unknown ones)."""
    picked = st.session_state.get(key) or []
    return [*options, *(v for v in picked if v not in options)]


def filter_controls(index: AuditIndex) -> Filters | None:
    c = choices(index)
    with st.container(border=True, key="audit_filters"):
        top = st.columns([1.2, 1.4, 1, 1])
        preset = top[0].selectbox("Time range", list(PRESETS), key="audit_f_range")
        actions = top[1].multiselect("Event type", _keep("audit_f_actions", c.actions), key="audit_f_actions", placeholder="Any event")
        decisions = top[2].multiselect("Decision", _keep("audit_f_decisions", c.decisions), key="audit_f_decisions", placeholder="Any")
        outcomes = top[3].multiselect("Outcome", _keep("audit_f_outcomes", c.outcomes), key="audit_f_outcomes", placeholder="Any")
        since, until = time_window(preset)
        row = st.columns([1.2, 1.4, 1, 1])
        users = row[0].multiselect("User", _keep("audit_f_users", c.users), key="audit_f_users", placeholder="Any user")
        tools = row[1].multiselect("Tool", _keep("audit_f_tools", c.tools), key="audit_f_tools", placeholder="Any tool")
        ip = row[2].text_input("Client IP or network", key="audit_f_ip", placeholder="10.0.0.7 or 10.0.0.0/8")
        rid = row[3].text_input("Request id", key="audit_f_rid", placeholder="exact id")
        bottom = st.columns([3, 1], vertical_alignment="center")
        hide = bottom[0].toggle(
            "Hide allowed requests for page assets (/static, /_stcore, /media …)",
            value=True,
            key="audit_f_assets",
            help="Scripts, styles and Streamlit's runtime make most of the requests; denied ones are always shown.",
        )
        bottom[1].button("Reset filters", icon=":material/filter_alt_off:", on_click=_reset_filters, type="tertiary")
    try:
        return Filters(
            since=since,
            until=until,
            users=tuple(users),
            actions=tuple(actions),
            decisions=tuple(decisions),
            outcomes=tuple(outcomes),
            tools=tuple(tools),
            client_ip=ip.strip(),
            request_id=rid.strip(),
            hide_assets=hide,
        )
    except ValueError:
        st.error(f"“{ip}” is not an IP address or network (examples: 10.0.0.7, 10.0.0.0/8, 2001:db8::/32).")
        return None


def _reset_filters() -> None:
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith("audit_f_"):
            del st.session_state[key]


def time_window(preset: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    now = dt.datetime.now(dt.timezone.utc)
    if preset != "Custom range":
        span = PRESETS[preset]
        return (now - span if span is not None else None), None
    cols = st.columns(4)
    d0 = cols[0].date_input("From (UTC)", value=(now - dt.timedelta(days=1)).date(), key="audit_f_d0")
    t0 = cols[1].time_input("at", value=dt.time(0, 0), key="audit_f_t0")
    d1 = cols[2].date_input("To (UTC)", value=now.date(), key="audit_f_d1")
    t1 = cols[3].time_input("at ", value=dt.time(23, 59), key="audit_f_t1")
    since = dt.datetime.combine(d0, t0, dt.timezone.utc)
    until = dt.datetime.combine(d1, t1, dt.timezone.utc) + dt.timedelta(minutes=1)
    if until <= since:
        st.warning("The end of the range is before its start.")
    return since, until


def cached_view(index: AuditIndex, filters: Filters) -> View:
    key = (index.version, filters)
    cache = st.session_state.get("audit_view")
    if cache is not None and cache[0] == key:
        return cache[1]
    view = select(index, filters)
    st.session_state["audit_view"] = (key, view)
    return view


# ------------------------------------------------------------------ summary and table


def summary(view: View) -> None:
    t = view.project(["action", "outcome", "decision", "user"])
    cols = st.columns(4)
    cols[0].metric("Matching events", f"{view.rows:,}", help=f"of {view.total:,} in the trail")
    cols[1].metric("Denials", f"{pc.sum(denied(t)).as_py() or 0:,}" if view.rows else "0")
    cols[2].metric("Failed sign-ins", f"{pc.sum(sign_in_failures(t)).as_py() or 0:,}" if view.rows else "0")
    users = pc.count_distinct(t.column("user")).as_py() if view.rows else 0
    cols[3].metric("Users", f"{users:,}")


def page_frame(part: pa.Table) -> Any:
    ts = part.column("ts")
    text = pc.utf8_slice_codeunits(pc.strftime(ts, format="%Y-%m-%d %H:%M:%S", locale="C"), 0, 23) if part.num_rows else pa.array([], pa.string())
    shown = part.append_column("time", text)
    return shown.select(list(TABLE_COLUMNS)).to_pandas()


def table(view: View, filters: Filters) -> None:
    if view.rows == 0:
        st.info("No events match these filters.", icon=":material/search_off:")
        return
    if st.session_state.get("audit_page_filters") != filters:
        st.session_state["audit_page_filters"] = filters
        st.session_state["audit_page_no"] = 1
    nav = st.columns([1, 1, 3])
    size = nav[0].selectbox("Rows per page", PAGE_SIZES, index=1, key="audit_page_size")
    pages = view.pages(size)
    if st.session_state.get("audit_page_no", 1) > pages:
        st.session_state["audit_page_no"] = pages
    number = nav[1].number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="audit_page_no")
    nav[2].caption(f"Newest first. Rows {(number - 1) * size + 1:,}–{min(view.rows, number * size):,} of {view.rows:,}.")
    part = view.page(int(number), int(size))
    frame = page_frame(part)
    event = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(frame), 640),
        on_select="rerun",
        selection_mode="single-row",
        key="audit_table",
        column_config={k: st.column_config.Column(LABELS[k]) for k in TABLE_COLUMNS}
        | {"status": st.column_config.NumberColumn(LABELS["status"], format="%d"), "seq": st.column_config.NumberColumn(LABELS["seq"], format="%d")},
    )
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    if rows:
        i = rows[0]
        if 0 <= i < part.num_rows:
            row = {c: part.column(c)[i].as_py() for c in ("src", "offset", "length", "seq")}
            record = read_record(view.files, row)
            where = f"{view.files[row['src']].name}:{part.column('line')[i].as_py()}" if row["src"] < len(view.files) else "?"
            with st.container(border=True, key="audit_record"):
                st.markdown(f"**Record seq {row['seq']}** · `{where}`")
                if record is None:
                    st.warning("This record is no longer where the index says: the file changed. Check the integrity status.")
                else:
                    st.json(record, expanded=2)
    else:
        st.caption("Select a row to see the full record.")
