"""The frame around every page: brand, the user's own menu, and sign-out."""

from __future__ import annotations

from typing import Mapping, Sequence

import streamlit as st

from gateway.tools import Tool
from tools_ui.access import PageUser


def sidebar(user: PageUser, tools: Sequence[Tool], pages: Mapping[str, object]) -> None:
    with st.sidebar:
        st.markdown("### :material/shield_lock: Toolgate")
        for tool in tools:
            st.page_link(pages[tool.id], label=tool.title, icon=tool.icon)  # type: ignore[arg-type]
        st.divider()
        if user.signed_in:
            st.caption(f"Signed in as **{user.name}**")
            if user.groups:
                st.caption("Groups: " + ", ".join(user.groups))
            # Sign-out is a POST with a CSRF token, served by the gateway.
            st.link_button("Sign out", "/auth/logout", icon=":material/logout:")
        else:
            st.caption("Not signed in")
