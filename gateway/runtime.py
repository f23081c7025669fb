"""The bridge from the Streamlit pages to the gateway's services.

Streamlit runs the tool scripts in the same process as the gateway, so the
pages reach the policy engine and the audit trail through this one
registered object instead of re-reading configuration of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.services import Services

_current: "Services | None" = None


def install(services: "Services | None") -> None:
    global _current
    _current = services


def current() -> "Services":
    if _current is None:
        raise RuntimeError("the gateway is not running in this process")
    return _current


def maybe_current() -> "Services | None":
    return _current
