"""What ``gateway run`` does to the process it serves from."""

from __future__ import annotations

import re

import httpx


def test_heap_is_frozen_once_started(platform_gw):
    # Without the freeze every full collection walks the whole start-up heap
    # (Streamlit, pandas, pyarrow, the policy index): ~100 ms pauses under load.
    lines = [line for line in platform_gw.process.log().splitlines() if "gc.heap_frozen" in line]
    assert len(lines) == 1, "the server should freeze the start-up heap exactly once"
    objects = re.search(r'"objects":\s*(\d+)|objects=(\d+)', lines[0])
    assert objects is not None, lines[0]
    assert int(objects.group(1) or objects.group(2)) > 100_000
    # Still serving, with everything frozen.
    assert httpx.get(platform_gw.process.url + "/healthz", timeout=5).json() == {"status": "ok"}


def test_building_an_app_does_not_freeze_the_heap(tmp_path):
    # Only the servers ask for it: a process that builds many apps (this
    # test suite) must keep collecting what they leave behind.
    import gc

    from starlette.testclient import TestClient

    from gateway.app import create_app
    from gateway.settings import load_settings
    from tests.helpers import make_config_dir

    before = gc.get_freeze_count()
    with TestClient(create_app(load_settings(make_config_dir(tmp_path))), client=("127.0.0.1", 5000)) as c:
        assert c.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == before


def _access_lines(platform_gw, request_id: str) -> list[dict]:
    import orjson

    out = []
    for line in platform_gw.process.log().splitlines():
        if '"logger":"gateway.access"' in line and request_id in line:
            out.append(orjson.loads(line))
    return out


def test_access_log_has_a_json_line_per_request_from_the_trail(platform_gw):
    # stderr is a file here, not a terminal: JSON, the shape of every other log line.
    import time

    r = httpx.get(
        platform_gw.url + "/api/whoami?access_token=hunter2-secret-in-query",
        headers={**platform_gw.bearer("carol", ["employees"]), "user-agent": "access-log-test"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    rid = r.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while not (lines := _access_lines(platform_gw, rid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(lines) == 1, "one access line per request"
    line = lines[0]
    assert line["event"] == "http.request" and line["level"] == "info" and line["logger"] == "gateway.access"
    assert (line["method"], line["path"], line["status"], line["user"]) == ("GET", "/api/whoami", 200, "carol")
    assert line["user_agent"] == "access-log-test" and line["duration_ms"] > 0
    # It shows what the trail recorded, so what the trail never holds (the
    # query string with its token) never reaches the console either.
    assert "hunter2" not in platform_gw.process.log()
    rec = platform_gw.wait_audit(lambda rec: rec.get("http", {}).get("request", {}).get("id") == rid)
    assert line["timestamp"] == rec["@timestamp"]


def test_uvicorn_access_log_stays_off(platform_gw):
    # Streamlit's logger setup re-attaches a handler to uvicorn.access; the
    # gateway's only request log is the one rendered from the trail.
    r = httpx.get(platform_gw.url + "/healthz?uvicorn-probe=1", timeout=5)
    assert r.status_code == 200
    assert "uvicorn-probe" not in platform_gw.process.log()
    assert '"GET /healthz' not in platform_gw.process.log()
