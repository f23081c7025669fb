from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.policy import Policy, Request, compile_sources

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "policies"
MONDAY_10 = datetime(2025, 1, 6, 10, 0, tzinfo=timezone.utc)


def policy_of(*rule_blocks: str, **files: str) -> Policy:
    """Compile rule snippets (one file) or named files; snippets are dedented."""
    sources = {k.replace("_", "-") + ".toml": textwrap.dedent(v) for k, v in files.items()}
    if rule_blocks:
        sources["main.toml"] = "\n".join(textwrap.dedent(b) for b in rule_blocks)
    return compile_sources(sources, cache_size=0)


def req(**kw: object) -> Request:
    kw.setdefault("at", MONDAY_10)
    if "path" not in kw and "tool" not in kw:
        kw["path"] = "/x"
    return Request(**kw)  # type: ignore[arg-type]


@pytest.fixture
def shipped_sources() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(SHIPPED.glob("*.toml"))}
