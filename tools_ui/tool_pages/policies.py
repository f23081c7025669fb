"""Policy editor (placeholder until the tools issue lands): Edit, test and roll back the access policies."""

import streamlit as st

st.title("Policy editor")
st.caption("Edit, test and roll back the access policies.")
st.warning("Placeholder: this page is built in the tools issue. Access to it is already enforced by policy.")
