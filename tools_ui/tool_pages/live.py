"""Live security feed (placeholder until the tools issue lands): Denials and sign-in failures as they happen."""

import streamlit as st

st.title("Live security feed")
st.caption("Denials and sign-in failures as they happen.")
st.warning("Placeholder: this page is built in the tools issue. Access to it is already enforced by policy.")
