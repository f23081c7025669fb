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
