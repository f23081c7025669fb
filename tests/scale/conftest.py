"""Fixtures: a real Redis, nginx terminating TLS, and gateway replicas sharing one config dir."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.app.conftest import USERS, add_users
from tests.helpers import free_port, make_config_dir, write_secret

from .infra import (
    CLIENT_IP,
    NGINX_BIN,
    PROXY_IP,
    REDIS_BIN,
    SKIP_NGINX,
    SKIP_REDIS,
    Certs,
    Nginx,
    RedisServer,
    Replica,
    csrf_token,
    make_certs,
)

CONFIG = """
[server]
public_url = "{public_url}"
trusted_hosts = ["localhost", "127.0.0.1"]
trusted_proxies = ["{proxy_ip}/32"]

[auth]
login_max_failures = 3
login_window_s = 60

[policy]
dir = "policies"
reload_interval_s = 0.5

[audit]
path = "audit/audit.jsonl"
key_file = "secrets/audit.key"
flush_interval_s = 0.05

[state]
backend = "redis"
redis_url = "{redis_url}"
password_file = "secrets/redis.password"
key_prefix = "tg-test:"
timeout_s = 0.5
health_interval_s = 0.25
"""


def write_cluster_config(folder: Path, *, redis: RedisServer, public_url: str) -> Path:
    config = make_config_dir(folder)
    write_secret(folder / "secrets" / "redis.password", (redis.password or "") + "\n")
    config.write_text(CONFIG.format(public_url=public_url, proxy_ip=PROXY_IP, redis_url=redis.url))
    add_users(config)
    return config


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    if REDIS_BIN is None:
        pytest.skip(SKIP_REDIS)
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=secrets.token_urlsafe(16)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@dataclass
class Browser:
    """One client (one cookie jar) that can talk to any proxy port, from CLIENT_IP."""

    nginx: Nginx
    http: httpx.Client

    def url(self, via: str, path: str) -> str:
        return self.nginx.url(via) + path

    def get(self, via: str, path: str, **kw) -> httpx.Response:
        return self.http.get(self.url(via, path), **kw)

    def post(self, via: str, path: str, **kw) -> httpx.Response:
        return self.http.post(self.url(via, path), **kw)

    def login(self, user: str, *, via: str = "all", password: str | None = None, headers: dict | None = None) -> httpx.Response:
        form = self.get(via, "/auth/login", headers=headers)
        data = {"username": user, "password": password or USERS[user][0], "csrf_token": csrf_token(form.text), "next": "/"}
        return self.post(via, "/auth/login", data=data, headers=headers)

    def close(self) -> None:
        self.http.close()


@dataclass
class Cluster:
    config: Path
    redis: RedisServer
    nginx: Nginx
    a: Replica
    b: Replica
    certs: Certs
    browsers: list[Browser] = field(default_factory=list)

    def browser(self) -> Browser:
        transport = httpx.HTTPTransport(local_address=CLIENT_IP, verify=self.certs.client_context())
        b = Browser(self.nginx, httpx.Client(transport=transport, follow_redirects=False, timeout=20))
        self.browsers.append(b)
        return b

    def audit_dir(self, replica: str) -> Path:
        return self.config.parent / "audit" / replica


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_server: RedisServer, certs: Certs) -> Iterator[Cluster]:
    if NGINX_BIN is None:
        pytest.skip(SKIP_NGINX)
    folder = tmp_path_factory.mktemp("cluster")
    a_port, b_port = free_port(), free_port()
    nginx = Nginx(folder / "nginx", certs, {"all": [a_port, b_port], "a": [a_port], "b": [b_port]})
    config = write_cluster_config(folder / "config", redis=redis_server, public_url=nginx.url("all"))
    a = Replica(config, "gw-a", port=a_port)
    b = Replica(config, "gw-b", port=b_port)
    started: list = []
    try:
        for r in (a, b):  # both boot at once
            started.append(r.launch())
        for r in (a, b):
            r.wait_ready()
        started.append(nginx.start())
        c = Cluster(config=config, redis=redis_server, nginx=nginx, a=a, b=b, certs=certs)
        yield c
        for br in c.browsers:
            br.close()
    finally:
        for thing in reversed(started):
            thing.stop()
