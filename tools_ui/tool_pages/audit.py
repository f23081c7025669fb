"""Audit viewer (placeholder until the tools issue lands): Search, verify and export the audit trail."""

import streamlit as st

st.title("Audit viewer")
st.caption("Search, verify and export the audit trail.")
st.warning("Placeholder: this page is built in the tools issue. Access to it is already enforced by policy.")
