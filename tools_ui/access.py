"""Who is looking, and which tools they may open: the page-level guard.

The identity comes from ``st.user``, which Streamlit fills from the
``X-Gateway-*`` headers of the websocket handshake; the gateway strips any
client-sent copies and injects the verified values, so these are facts, not
claims.  Decisions come from the same policy engine that guards HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from gateway import runtime
from gateway.tools import TOOLS, Tool


@dataclass(frozen=True)
class PageUser:
    name: str
    email: str
    groups: tuple[str, ...]
    auth_method: str
    session_expires: str
    ip: str

    @property
    def signed_in(self) -> bool:
        return bool(self.name)


def _user_value(key: str) -> str:
    try:
        value = st.user[key]
    except KeyError:
        return ""
    return value if isinstance(value, str) else ""


def current_user() -> PageUser:
    groups = tuple(g for g in (s.strip() for s in _user_value("groups").split(",")) if g)
    try:
        ip = st.context.ip_address or ""
    except Exception:  # noqa: BLE001 - outside a websocket session (tests)
        ip = ""
    return PageUser(
        name=_user_value("user"),
        email=_user_value("email"),
        groups=groups,
        auth_method=_user_value("auth_method"),
        session_expires=_user_value("session_expires"),
        ip=ip,
    )


def allowed_tool_ids(user: PageUser) -> frozenset[str]:
    """Tools whose page this user may open; none at all when not signed in."""
    if not user.signed_in:
        return frozenset()
    services = runtime.maybe_current()
    if services is None:
        return frozenset()
    return frozenset(t.id for t in TOOLS if services.page_allowed(user, t))


def not_allowed(user: PageUser, tool: Tool, home: object) -> None:
    """The branded "not allowed" view; audited; nothing of the page runs."""
    services = runtime.maybe_current()
    contact = tool.contact or "your security team"
    if services is not None:
        services.page_denied(user, tool)
        contact = services.access_contact(tool) or contact
    st.title("Access not granted")
    if user.signed_in:
        st.error(f"You are signed in as **{user.name}**, but you do not have access to **{tool.title}**.")
        st.write(f"To request access, contact {contact}.")
    else:
        st.error("You are not signed in.")
    if user.signed_in:
        st.page_link(home, label="Back to my tools", icon=":material/home:")  # type: ignore[arg-type]
    st.stop()
