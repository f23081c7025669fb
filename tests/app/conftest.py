"""One real gateway (uvicorn, full chain, real Streamlit) for the whole module set."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from gateway.auth.users import UserDirectory
from tests.helpers import ROOT, free_port, make_config_dir, submit_sign_in

USERS = {
    "alice": ("correct-horse-7781", ["employees"], "alice@example.com"),
    "sam": ("battery-staple-4412", ["employees", "security"], "sam@example.com"),
    "aud": ("ledger-quill-9036", ["auditors"], "aud@example.com"),
}

TEST_POLICY = """
# Test-only routes of tests/app/probe_server.py: any signed-in user.
[[rule]]
id = "test-probes"
effect = "allow"
description = "test probes"
paths = ["/api/test/**"]
groups = ["employees", "auditors", "security"]
"""


class SignInClient:
    """httpx clients for a running gateway at ``self.url``, signed in through the real form."""

    url: str

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=20, **kw)

    def login(self, user: str, client: httpx.Client | None = None) -> httpx.Client:
        c = client or self.client()
        r = submit_sign_in(c, user, USERS[user][0])
        assert r.status_code == 303, r.text
        return c

    @contextlib.contextmanager
    def signed_in(self, user: str):
        c = self.client()
        try:
            yield self.login(user, c)
        finally:
            c.close()


@dataclass
class Gateway(SignInClient):
    url: str
    config: Path
    proc: subprocess.Popen

    def log(self) -> str:
        return (self.config.parent / "gateway.log").read_text(errors="replace")


def start_gateway(config: Path, port: int, script: str = "tests/app/probe_server.py", env: dict | None = None) -> subprocess.Popen:
    log = (config.parent / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, script, str(config), str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((config.parent / "gateway.log").read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gateway did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def add_users(config: Path) -> None:
    users = UserDirectory(config.parent / "users.toml")
    for name, (password, groups, email) in USERS.items():
        users.add(name, password, groups=groups, email=email)


@contextlib.contextmanager
def running_gateway(folder: Path, *, host: str = "127.0.0.1", policies: dict[str, str] | None = None) -> Iterator[Gateway]:
    """A real gateway in ``folder`` with the test users (and extra policy files), stopped afterwards.

    ``host``: the name tests browse by (a browser needs ``localhost`` so
    Host and Origin line up with the configured public URL).
    """
    port = free_port()
    config = make_config_dir(folder, port=port)
    for name, text in (policies or {}).items():
        (config.parent / "policies" / name).write_text(text)
    add_users(config)
    proc = start_gateway(config, port)
    try:
        yield Gateway(url=f"http://{host}:{port}", config=config, proc=proc)
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gw"), policies={"99-test-probes.toml": TEST_POLICY}) as gw:
        yield gw
