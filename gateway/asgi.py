"""ASGI entry point for process managers: an app factory that reads ``GATEWAY_CONFIG``.

``gateway run --workers N`` hands this to uvicorn (each worker process calls
it once).  It also serves other managers, e.g.::

    GATEWAY_CONFIG=/config/gateway.toml uvicorn --factory gateway.asgi:create_app --no-proxy-headers ...

Prefer ``gateway run``: it sets the server options the gateway relies on
(no proxy-header rewriting, no ``Server`` banner, graceful shutdown).
Several processes need ``[state] backend = "redis"``; each takes its own
replica slot and audit chain (see :mod:`gateway.state.replica`).
"""

from __future__ import annotations

import logging
from typing import Any


def create_app() -> Any:
    from gateway import logging as gateway_logging
    from gateway.app import create_app as build
    from gateway.settings import load_settings

    gateway_logging.configure()
    app = build(load_settings(), freeze_heap=True)
    # configure() hands uvicorn's loggers to ours; the access log stays off
    # as in `gateway run` (the audit middleware records every request).
    # uvicorn decides per connection whether that logger has a handler.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    return app
