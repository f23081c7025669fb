"""The dashboards' data, cached per Streamlit server process.

Separate from :mod:`tools_ui.data` so that module stays free of Streamlit: the
gateway's REST API imports it at start-up, before any Streamlit runtime
exists (``st.cache_data`` would warn there and fall back to a private cache).
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from tools_ui.data import SEED, OpsData, SalesData, make_ops, make_sales


@st.cache_data(show_spinner=False, max_entries=4)
def load_sales(as_of: date, seed: int = SEED) -> SalesData:
    return make_sales(seed, as_of)


@st.cache_data(show_spinner=False, max_entries=4)
def load_ops(as_of: pd.Timestamp, seed: int = SEED) -> OpsData:
    return make_ops(seed, as_of)
