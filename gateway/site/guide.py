"""The user guide's pages: one layout (head, header, contents, footer) around each page's body.

Pages are assembled once, in memory, from ``layout.html`` and
``pages/<name>.html`` (the body only), so the contents list and the head are
written once and a page cannot fall out of step with the others.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGES_DIR = HERE / "pages"

# (file, title): the order of the contents list.
CONTENTS: tuple[tuple[str, str], ...] = (
    ("index.html", "Overview"),
    ("sign-in.html", "Signing in"),
    ("tools.html", "Using the tools"),
    ("policies.html", "Access policies"),
    ("audit.html", "Audit trail and alerts"),
    ("api.html", "APIs, tokens and MCP"),
    ("deployment.html", "Deployment and operations"),
)
GUIDE_PAGES = tuple(name for name, _ in CONTENTS)


@dataclass(frozen=True)
class Page:
    body: bytes
    etag: str


def page_path(name: str) -> str:
    return "/docs" if name == "index.html" else f"/docs/{name}"


def _nav(current: str) -> str:
    items = []
    for name, title in CONTENTS:
        here = ' aria-current="page"' if name == current else ""
        items.append(f'<li><a href="{page_path(name)}"{here}>{html.escape(title)}</a></li>')
    return "".join(items)


def render(layout: str, name: str, title: str) -> str:
    body = (PAGES_DIR / name).read_text(encoding="utf-8")
    # The body goes in last: its own braces are text, not placeholders.
    return layout.replace("{title}", html.escape(title)).replace("{nav}", _nav(name)).replace("{body}", body)


@cache
def pages() -> dict[str, Page]:
    """Every page, rendered once; a strong ETag each (the bytes' hash)."""
    layout = (HERE / "layout.html").read_text(encoding="utf-8")
    out = {}
    for name, title in CONTENTS:
        data = render(layout, name, title).encode("utf-8")
        out[name] = Page(data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
    return out
