"""Helpers for tests/tools_audit (a unique module name: test folders share one import namespace)."""

from __future__ import annotations

import os
import random
import secrets
from pathlib import Path
from typing import Any, Iterable

import orjson

from gateway.audit import AuditTrail
from gateway.settings import AuditSettings

# 2025-11-25T11:17:00Z
T0 = 1764069420.0
USERS = ("alice", "bob", "carol", "dave", "=cmd|' /C calc'!A0")
TOOLS = ("sales", "ops", "audit", None)


class Clock:
    def __init__(self, t: float = T0, step: float = 1.0) -> None:
        self.t = t
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def make_key(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def write_trail(
    path: Path, key_file: Path, events: Iterable[dict[str, Any]], *, clock: Any = None, replica_id: str | None = None, **kw: Any
) -> Path:
    settings = AuditSettings(path=path, key_file=key_file, flush_interval_s=0.01, **kw)
    trail = AuditTrail(settings, clock=clock or Clock(), replica_id=replica_id)
    trail.start()
    try:
        for ev in events:
            ev = dict(ev)
            trail.emit(ev.pop("action"), **ev)
    finally:
        assert trail.close(timeout=10)
    return path


def sample_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """A deterministic mix of requests (some denied), sign-ins (some failed) and page denials."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        r = rng.random()
        user = rng.choice(USERS)
        if r < 0.7:
            deny = rng.random() < 0.2
            out.append(
                {
                    "action": "http.request",
                    "request_id": f"{i:032x}",
                    "client_ip": f"10.{rng.randrange(3)}.0.{rng.randrange(1, 30)}",
                    "user": None if rng.random() < 0.1 else user,
                    "method": "GET",
                    "path": rng.choice(["/", "/sales", "/audit", "/static/js/x.js", "/ops"]),
                    "tool": rng.choice(TOOLS),
                    "status": 403 if deny else 200,
                    "decision": "deny" if deny else "allow",
                    "rule_id": "default-deny" if deny else "r1",
                }
            )
        elif r < 0.85:
            ok = rng.random() < 0.5
            out.append(
                {
                    "action": "auth.login",
                    "outcome": "success" if ok else "failure",
                    "user": user,
                    "client_ip": f"192.168.1.{rng.randrange(1, 6)}",
                    "reason": None if ok else "invalid_credentials",
                }
            )
        else:
            out.append({"action": "page.denied", "outcome": "failure", "user": user, "tool": "audit", "path": "/audit", "decision": "deny", "details": {"n": i}})
    return out


def records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every record of the files, in the order given."""
    out = []
    for p in paths:
        out += [orjson.loads(line) for line in p.read_bytes().splitlines() if line]
    return out
