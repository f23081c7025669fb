"""The Content-Security-Policy Streamlit's frontend actually runs under.

Measured with Streamlit 1.67 in Chromium (charts, dataframes, ``st.html``):

- ``script-src 'self' 'sha256-…'``: the bundle is same-origin ES modules; the
  only inline script is one line in ``index.html`` whose hash is computed here
  from the installed file, so it follows every Streamlit upgrade.  No
  ``'unsafe-eval'``: Vega charts run without it.
- ``style-src 'self' 'unsafe-inline'``: the only relaxation.  Emotion
  (CSS-in-JS) inserts ``<style>`` elements at run time and component code sets
  ``style=`` attributes; neither can carry a nonce or a stable hash.  Style
  injection cannot run script, so the XSS protection stays intact.
- ``img-src``/``media-src``/``font-src`` allow ``data:`` and ``blob:``: charts
  are exported as blob images, fonts and icons are embedded as data URIs.
- ``worker-src 'self' blob:``: the dataframe grid and Vega use blob workers.
- ``connect-src 'self'``: the websocket (``/_stcore/stream``) and fetches are
  same-origin; usage statistics are off (``browser.gatherUsageStats``), so
  nothing tries an outside host.
- ``frame-src 'self'``: ``st.html``/components render in same-origin iframes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def streamlit_index_path() -> Path:
    import streamlit

    return Path(streamlit.__file__).parent / "static" / "index.html"


def inline_script_hashes(html: str) -> list[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


@lru_cache(maxsize=4)
def streamlit_csp(https: bool) -> str:
    hashes = inline_script_hashes(streamlit_index_path().read_text(encoding="utf-8"))
    directives = [
        "default-src 'none'",
        "script-src 'self' " + " ".join(hashes),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "media-src 'self' data: blob:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "frame-src 'self'",
        "manifest-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    if https:
        directives.append("upgrade-insecure-requests")
    return "; ".join(directives)
