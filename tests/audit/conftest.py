from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from gateway.audit import AuditTrail
from gateway.settings import AuditSettings

from .audit_helpers import write_key


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "audit.key"
    write_key(p)
    return p


@pytest.fixture
def key(key_file: Path) -> bytes:
    return bytes.fromhex(key_file.read_text().strip())


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def writer_mode() -> str:
    """The writer of the trails these tests make: the in-process thread unless a test asks for both.

    Tests of the trail's core behaviour take ``writer_mode`` from
    ``audit_helpers.BOTH_WRITERS`` and run once with each writer.
    """
    return "thread"


@pytest.fixture
def settings_for(audit_dir: Path, key_file: Path, writer_mode: str) -> Callable[..., AuditSettings]:
    def make(**kw: Any) -> AuditSettings:
        base: dict[str, Any] = {"path": audit_dir / "audit.jsonl", "key_file": key_file, "flush_interval_s": 0.02, "writer": writer_mode}
        base.update(kw)
        return AuditSettings(**base)

    return make


@pytest.fixture
def make_trail(settings_for: Callable[..., AuditSettings]) -> Iterator[Callable[..., AuditTrail]]:
    made: list[AuditTrail] = []

    def make(*, start: bool = True, clock: Callable[[], float] = time.time, replica_id: str | None = None, **kw: Any) -> AuditTrail:
        t = AuditTrail(settings_for(**kw), replica_id=replica_id, clock=clock)
        made.append(t)
        if start:
            t.start()
        return t

    yield make
    for t in made:
        t.close(timeout=2.0)


