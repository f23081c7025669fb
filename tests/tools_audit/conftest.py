"""Fixtures for the audit viewer and live feed tests: real trails written by AuditTrail."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tests.tools_audit.tools_audit_support import Clock, make_key, write_trail


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return make_key(tmp_path / "audit.key")


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def trail(audit_dir: Path, key_file: Path) -> Callable[..., Path]:
    """``trail(events, **settings)`` writes the events (emit kwargs) and returns the current file."""

    clock = Clock()

    def write(events: list[dict[str, Any]], **kw: Any) -> Path:
        return write_trail(audit_dir / "audit.jsonl", key_file, events, clock=clock, **kw)

    return write
