"""Home: who I am and the tools I can open."""

from __future__ import annotations

import streamlit as st

from gateway import runtime
from gateway.tools import TOOLS
from tools_ui import access

user = access.current_user()
allowed = access.allowed_tool_ids(user)

st.title(f"Welcome, {user.name}" if user.signed_in else "Welcome")
st.caption("Your internal tools, behind Toolgate.")

with st.container(border=True):
    st.subheader("Who I am")
    c1, c2, c3 = st.columns(3)
    c1.metric("User", user.name or "—")
    c2.metric("Signed in with", user.auth_method or "—")
    c3.metric("Session ends", user.session_expires or "—")
    st.write("**Email:** " + (user.email or "—"))
    st.write("**Groups:** " + (", ".join(user.groups) or "none"))

st.subheader("My tools")
mine = [t for t in TOOLS if t.id in allowed and t.id != "home"]
if not mine:
    st.info("You have no tools yet. Ask your security team for access.")
cols = st.columns(3)
for i, tool in enumerate(mine):
    with cols[i % 3].container(border=True):
        st.markdown(f"#### {tool.title}")
        st.write(tool.description)
        st.page_link("tool_pages/" + tool.script, label=f"Open {tool.title}", icon=tool.icon)

others = [t for t in TOOLS if t.id not in allowed]
if others:
    st.subheader("Tools you can request")
    services = runtime.maybe_current()
    for tool in others:
        contact = (services.access_contact(tool) if services else "") or tool.contact or "your security team"
        st.write(f"- **{tool.title}**: {tool.description} Ask {contact}.")
