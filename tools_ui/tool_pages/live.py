"""Live security feed: denials, failed sign-ins and policy changes as they happen (group security).

The feed is not a Streamlit rerun loop: an ``st.html`` widget loads
``/ws/security-feed/client.js`` (same origin, so the gateway's CSP allows it
with no inline script), which opens the ``/ws/security-feed`` websocket and
updates the page's DOM itself, reconnecting with backoff when the socket
drops.  The websocket is authorized by session and policy like any page,
and checks the group again itself.
"""

from __future__ import annotations

import streamlit as st

st.title("Live security feed")
st.caption(
    "Denied requests and page switches, failed sign-ins and policy changes, pushed as they happen. "
    "Times are your local time; hover one for UTC."
)

WIDGET_CSS = """
<style>
.tg-live { font-size: 0.95rem; }
.tg-live-bar { display: flex; flex-wrap: wrap; gap: 0.6rem 1rem; align-items: center; padding: 0.6rem 0.8rem;
  border: 1px solid #e2e8f0; border-radius: 10px; background: #f8fafc; }
.tg-live-state { font-weight: 600; padding: 0.15rem 0.6rem; border-radius: 999px; background: #e2e8f0; color: #334155; }
.tg-live-state::before { content: "\\25CF"; margin-right: 0.35rem; }
.tg-live-state[data-state="live"] { background: #ccfbf1; color: #115e59; }
.tg-live-state[data-state="connecting"] { background: #fef9c3; color: #854d0e; }
.tg-live-state[data-state="reconnecting"] { background: #ffedd5; color: #9a3412; }
.tg-live-state[data-state="signed-out"], .tg-live-state[data-state="forbidden"] { background: #fee2e2; color: #991b1b; }
.tg-live-counts { display: flex; flex-wrap: wrap; gap: 0.3rem 0.8rem; color: #475569; }
.tg-live-count.tg-kind-anonymous { color: #94a3b8; }
.tg-live-filters { display: flex; flex-wrap: wrap; gap: 0.3rem 0.8rem; margin-left: auto; color: #334155; }
.tg-live-filter { cursor: pointer; white-space: nowrap; }
.tg-live-clear { border: 1px solid #cbd5e1; background: #fff; border-radius: 6px; padding: 0.1rem 0.6rem; cursor: pointer; }
.tg-live-empty { color: #64748b; margin: 1rem 0.2rem; }
.tg-live .tg-live-list { list-style: none; margin: 0.6rem 0 0; padding: 0; }
.tg-live-item { display: flex; gap: 0.7rem; align-items: baseline; padding: 0.45rem 0.6rem; border-bottom: 1px solid #e2e8f0;
  border-left: 4px solid #cbd5e1; transition: background-color 2s ease; }
.tg-live-item[hidden] { display: none; }
.tg-live-item.tg-new { background: #fef3c7; }
.tg-live-item.tg-kind-denial { border-left-color: #b91c1c; }
.tg-live-item.tg-kind-signin_failure { border-left-color: #d97706; }
.tg-live-item.tg-kind-policy { border-left-color: #0f766e; }
.tg-live-notice { color: #64748b; font-style: italic; }
.tg-live-time { font-variant-numeric: tabular-nums; color: #475569; min-width: 4.8rem; }
.tg-live-badge { font-size: 0.75rem; font-weight: 700; text-transform: uppercase; letter-spacing: 0.03em; color: #475569; min-width: 7.5rem; }
.tg-kind-denial .tg-live-badge { color: #b91c1c; }
.tg-kind-signin_failure .tg-live-badge { color: #b45309; }
.tg-kind-policy .tg-live-badge { color: #0f766e; }
.tg-live-body { display: flex; flex-direction: column; min-width: 0; }
.tg-live-title { font-weight: 600; color: #0f172a; overflow-wrap: anywhere; }
.tg-live-meta { color: #64748b; font-size: 0.85rem; overflow-wrap: anywhere; }
@media (max-width: 640px) {
  .tg-live-item { flex-wrap: wrap; gap: 0.2rem 0.6rem; }
  .tg-live-badge { min-width: 0; }
  .tg-live-filters { margin-left: 0; }
}
</style>
"""

st.html(
    WIDGET_CSS
    + '<div class="tg-live" data-toolgate-live data-ws="/ws/security-feed">'
    + '<p class="tg-live-empty">Loading the live feed…</p></div>'
    + '<script src="/ws/security-feed/client.js"></script>',
    unsafe_allow_javascript=True,
)
st.caption(
    "Denied requests without a signed-in user (mostly browsers being sent to the sign-in page) are counted "
    "but hidden unless you tick “Anonymous requests”. "
    "The full history is in the audit viewer."
)
