"""The internal tools: one Streamlit multipage app behind the gateway.

Every page is registered with ``st.navigation`` so that a typed URL or a page
switch over the websocket always lands here first; the menu itself shows
only the pages the signed-in user may open, and the guard stops the script
before a forbidden page runs a single line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# Streamlit runs this file as a script; make the project importable.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from gateway.tools import TOOLS  # noqa: E402
from tools_ui import access, chrome  # noqa: E402

st.set_page_config(page_title="Toolgate", page_icon=str(_ROOT / "gateway" / "static" / "logo.svg"), layout="wide")

user = access.current_user()
pages = {
    t.id: st.Page(
        str(Path(__file__).parent / "tool_pages" / t.script),
        title=t.title,
        icon=t.icon,
        url_path=t.url_path or None,
        default=t.id == "home",
    )
    for t in TOOLS
}
current = st.navigation(list(pages.values()), position="hidden")
tool = next(t for t in TOOLS if pages[t.id] is current)

allowed_ids = access.allowed_tool_ids(user)
chrome.sidebar(user, [t for t in TOOLS if t.id in allowed_ids], pages)

if tool.id not in allowed_ids:
    access.not_allowed(user, tool, pages["home"])  # audits and stops the script

current.run()
