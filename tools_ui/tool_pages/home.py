"""Home: who I am, the tools I can open, the ones I may ask for, and what I did lately."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

try:
    from tools_ui import access
except ModuleNotFoundError:  # run as a script: Streamlit puts only the main script's folder on sys.path
    sys.path.append(str(Path(__file__).resolve().parents[2]))
    from tools_ui import access

from gateway import runtime  # noqa: E402
from gateway.tools import TOOLS  # noqa: E402
from tools_ui.editor.activity import recent_activity  # noqa: E402

ACTIVITY_LIMIT = 20


def _contact_md(contact: str) -> str:
    return f"[{contact}](mailto:{contact})" if "@" in contact and " " not in contact else contact


user = access.current_user()
allowed = access.allowed_tool_ids(user)
services = runtime.maybe_current()

st.title(f"Welcome, {user.name}" if user.signed_in else "Welcome")
st.caption(f"Your internal tools, behind Toolgate. Signed in as {user.email or user.name}." if user.signed_in else "Your internal tools, behind Toolgate.")

with st.container(border=True, key="who-am-i"):
    st.subheader(":material/badge: Who I am")
    left, right = st.columns([3, 2], gap="medium")
    with left:
        st.markdown(f"**Name**  \n{user.name or '—'}")
        st.markdown(f"**Email**  \n{user.email or '—'}")
        st.markdown("**Groups**  \n" + (" ".join(f":blue-badge[{g}]" for g in user.groups) or "none"))
    with right:
        st.markdown(f"**Signed in with**  \n{user.auth_method or '—'}")
        st.markdown(f"**Session ends**  \n{user.session_expires or '—'}")
        # The gateway serves a confirmation form with a CSRF token; signing out is its POST.
        st.link_button("Sign out", "/auth/logout", icon=":material/logout:")

st.subheader(":material/apps: My tools")
mine = [t for t in TOOLS if t.id in allowed and t.id != "home"]
if not mine:
    st.info("You have no tools yet. Ask your security team for access.")
cols = st.columns(3)
for i, tool in enumerate(mine):
    with cols[i % 3].container(border=True, height="stretch"):
        st.markdown(f"#### {tool.title}")
        st.write(tool.description)
        st.page_link("tool_pages/" + tool.script, label=f"Open {tool.title}", icon=tool.icon)

others = [t for t in TOOLS if t.id not in allowed]
if others:
    st.subheader(":material/lock_open: Tools you can request")
    with st.container(border=True, key="requestable"):
        for tool in others:
            contact = (services.access_contact(tool) if services else "") or tool.contact or "your security team"
            st.markdown(f"**{tool.title}**: {tool.description} Ask {_contact_md(contact)}.")

st.subheader(":material/history: My recent activity")
with st.container(border=True, key="my-activity"):
    rows = []
    if services is not None and user.signed_in:
        try:
            rows = recent_activity(services.settings.audit.path, user.name, limit=ACTIVITY_LIMIT)
        except OSError:
            st.warning("Your activity cannot be read right now.")
    if rows:
        st.caption(f"Your last {len(rows)} events from the audit trail, newest first (app assets and sign-in pages left out).")
        st.table(
            [{"When (UTC)": r.when, "What": r.what, "Where": r.where, "Result": r.result, "From": r.client_ip} for r in rows],
            hide_index=True,
        )
    else:
        st.caption("Nothing recorded for you yet.")
