"""Streamlit's own configuration, set by the gateway rather than left to users.

These are passed the way ``streamlit run`` passes command-line flags, which
take precedence over any ``.streamlit/config.toml``, so a config file dropped
next to the tools cannot switch a protection off.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from gateway.settings import Settings

IDENTITY_HEADERS = {
    "X-Gateway-User": "user",
    "X-Gateway-Email": "email",
    "X-Gateway-Groups": "groups",
    "X-Gateway-Auth-Method": "auth_method",
    "X-Gateway-Session-Expires": "session_expires",
}


def streamlit_options(settings: Settings, session_key: bytes) -> dict[str, Any]:
    # Streamlit's own cookie secret is derived from the session key so that
    # every worker and replica agrees on it without another secret to manage.
    cookie_secret = hmac.new(session_key, b"toolgate/streamlit-cookie-secret", hashlib.sha256).hexdigest()
    upload_mb = max(1, settings.server.max_body_bytes // (1024 * 1024))
    return {
        "server.headless": True,
        "browser.gatherUsageStats": False,  # no outbound metrics call from the page
        "server.enableXsrfProtection": True,
        "server.enableCORS": True,
        "server.corsAllowedOrigins": [],
        "server.trustedUserHeaders": dict(IDENTITY_HEADERS),
        "server.enableAgentApi": False,
        "server.enableStaticServing": False,
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        "server.cookieSecret": cookie_secret,
        "server.maxUploadSize": upload_mb,
        "server.allowedHosts": list(settings.server.trusted_hosts),
        "global.developmentMode": False,
        "global.e2eTest": False,  # would let a client stop the runtime over the websocket
        "client.showErrorDetails": "none",  # tracebacks stay in the server log
        "client.toolbarMode": "viewer",
        # The grid's own "download as CSV" would copy data out unaudited; the
        # tools offer audited exports instead.
        "client.disableDataExport": True,
        "client.showSidebarNavigation": True,
        "theme.base": "light",
        "theme.primaryColor": "#0f766e",
    }


def apply(settings: Settings, session_key: bytes) -> None:
    from streamlit import config

    config.get_config_options(force_reparse=True, options_from_flags=streamlit_options(settings, session_key))
