"""Toolgate: a security-hardened gateway for internal Streamlit tools."""

__version__ = "0.1.0"
