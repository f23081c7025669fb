"""Audit viewer: search, verify and export the audit trail (groups auditors and security).

The guard in ``tools_ui/app.py`` has already stopped anyone the policy does
not let open this page.  The page only reads: the trail's columnar index,
the chain verification and the original lines for exports.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

try:
    from tools_ui import access, audit_view
except ModuleNotFoundError:  # run as a script: Streamlit puts only the main script's folder on sys.path
    sys.path.append(str(Path(__file__).resolve().parents[2]))
    from tools_ui import access, audit_view

from gateway import runtime
from gateway.audit.viewer import viewer_for

services = runtime.maybe_current()
if services is None:
    st.error("The audit viewer runs inside the gateway.")
    st.stop()

audit_view.render(viewer_for(services), access.current_user(), services.emit)
