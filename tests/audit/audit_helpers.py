"""Helpers for the audit tests (a unique module name: test folders share sys.path)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from gateway.audit import AuditTrail

# Run a test once per writer: overrides the conftest ``writer_mode`` fixture
# (the trail's settings follow it).
BOTH_WRITERS = pytest.mark.parametrize("writer_mode", ["thread", "process"])

# 2025-11-25T11:17:00.123456Z
T0 = 1764069420.123456


class Clock:
    """A settable clock for AuditTrail(clock=...): time only moves when a test says so."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def write_key(path: Path, key: bytes | None = None) -> bytes:
    key = key if key is not None else secrets.token_bytes(32)
    path.write_text(key.hex() + "\n")
    os.chmod(path, 0o600)
    return key


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def records_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines_of(path)]


def user_records(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        out += [r for r in records_of(p) if r["event"]["action"] != "audit.rotated"]
    return out


def wait_for(cond: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def emit_requests(trail: AuditTrail, n: int, *, start: int = 0, user: str = "alice") -> None:
    for i in range(start, start + n):
        trail.emit(
            "http.request",
            request_id=f"req-{i:05d}",
            client_ip="10.0.0.7",
            user=user,
            email=f"{user}@example.com",
            groups=frozenset({"employees", "sales"}),
            auth_method="session",
            method="GET",
            path="/sales",
            tool="sales",
            status=200,
            bytes=1234,
            duration_ms=2.5,
            decision="allow",
            rule_id="sales-employees",
            policy_version="v7",
            user_agent="Mozilla/5.0 (X11; Linux x86_64)",
        )
