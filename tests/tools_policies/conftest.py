"""Fixtures for the policy editor and home page tests: a real policy directory, store and audit trail."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from gateway.audit import AuditTrail
from gateway.policy import PolicyStore
from gateway.settings import AuditSettings

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """The audit contract's ``emit`` callable, keeping what it was given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, action: str, *, outcome: str | None = None, **fields: Any) -> None:
        self.events.append((action, {"outcome": outcome, **fields}))

    def of(self, action: str) -> list[dict[str, Any]]:
        return [f for a, f in self.events if a == action]


class Clock:
    def __init__(self, t: float | None = None) -> None:
        self.t = time.time() if t is None else t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", d, ignore=shutil.ignore_patterns("README.md"))
    return d


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def store(pdir: Path, recorder: Recorder) -> PolicyStore:
    return PolicyStore(pdir, emit=recorder)


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


@pytest.fixture
def make_trail(tmp_path: Path, audit_path: Path) -> Iterator[Callable[..., AuditTrail]]:
    key_file = tmp_path / "audit.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    os.chmod(key_file, 0o600)
    made: list[AuditTrail] = []

    def make(*, clock: Callable[[], float] = time.time, **kw: Any) -> AuditTrail:
        settings = AuditSettings(path=audit_path, key_file=key_file, flush_interval_s=0.02, rotate_daily=False, **kw)
        t = AuditTrail(settings, clock=clock)
        t.start()
        made.append(t)
        return t

    yield make
    for t in made:
        t.close(timeout=2.0)
