"""``gateway run --workers N``: refused with the memory backend, N processes with Redis."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import USERS, add_users
from tests.helpers import ROOT, free_port, make_config_dir, write_secret

from .infra import REDIS_BIN, SKIP_REDIS, RedisServer, Replica, csrf_token, wait_for

pytestmark = pytest.mark.timeout(90)


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_workers_with_the_memory_backend_are_refused(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path / "cfg")
    r = gateway("run", "--config", str(cfg), "--workers", "2", "--port", str(free_port()))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "state.backend" in lines[0] and "redis" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(REDIS_BIN is None, reason=SKIP_REDIS)
def test_two_workers_share_sessions_and_keep_separate_audit_chains(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config_dir(
        tmp_path / "cfg",
        port=port,
        sections_extra=f'[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n'
        'password_file = "secrets/redis.password"\nkey_prefix = "workers:"\n',
    )
    write_secret(cfg.parent / "secrets" / "redis.password", f"{redis_server.password}\n")
    add_users(cfg)
    proc = Replica(cfg, "gw-w", port=port, workers=2).start()
    try:
        seen: set[str] = set()

        def both_workers() -> bool:
            # A new connection each time: the kernel hands them to either worker.
            seen.add(httpx.get(proc.url + "/readyz", timeout=5).json()["checks"]["state"]["replica"])
            return seen == {"gw-w", "gw-w.w1"}

        wait_for(both_workers, 30, interval=0.02, what="answers from both workers")

        with httpx.Client(base_url=f"http://localhost:{port}", timeout=10) as c:
            form = c.get("/auth/login")
            r = c.post("/auth/login", data={"username": "alice", "password": USERS["alice"][0], "csrf_token": csrf_token(form.text), "next": "/"})
            assert r.status_code == 303
            cookie = c.cookies
        for _ in range(20):  # whichever worker answers knows the session
            with httpx.Client(base_url=f"http://localhost:{port}", cookies=cookie, timeout=10) as c:
                who = c.get("/api/whoami")
                assert who.status_code == 200 and who.json()["user"] == "alice"
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.log()
    # Like `gateway run`: no uvicorn access log (the audit trail records requests, redacted).
    assert '"uvicorn.access"' not in proc.log()

    root = cfg.parent / "audit"
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["gw-w", "gw-w.w1"]
    ok = gateway("audit", "verify", str(root), "--config", str(cfg))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "== chain gw-w\n" in ok.stdout and "== chain gw-w.w1\n" in ok.stdout
    assert re.search(r"^OK: 2 chains, \d+ records in 2 files$", ok.stdout, re.M)

    # Edit one record of worker 1's chain: that chain fails, by name.
    trail = root / "gw-w.w1" / "audit.jsonl"
    lines = trail.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"outcome":"success"', '"outcome":"failure"', 1)
    trail.write_text("".join(lines))
    bad = gateway("audit", "verify", str(root), "--config", str(cfg))
    assert bad.returncode == 1
    assert "FAIL: 1 of 2 chains have a problem" in bad.stdout
    chain_w1 = bad.stdout.split("== chain gw-w.w1\n", 1)[1]
    assert chain_w1.startswith(f"FAIL: {trail}:2: edited")
