"""``gateway healthcheck``, and probes from checkers that cannot choose their Host."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.healthcheck import READINESS, build_probe
from gateway.settings import load_settings
from tests.helpers import GatewayProcess, free_port, make_config_dir, run_cli, write_secret

PUBLIC_ONLY = 'trusted_hosts = ["localhost", "127.0.0.1", "testserver"]'


def _config(tmp_path: Path, *, port: int = 8501, server: str = "", hosts: str = "") -> Path:
    config = make_config_dir(tmp_path, port=port, server_extra=server)
    if hosts:
        text = config.read_text()
        assert PUBLIC_ONLY in text
        config.write_text(text.replace(PUBLIC_ONLY, hosts))
    return config


def _healthcheck(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("healthcheck", "--config", str(config), *args)


@pytest.mark.parametrize(
    ("bind", "expected"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("10.1.2.3", "10.1.2.3")],
)
def test_probe_address_reaches_the_bound_interface(tmp_path, bind, expected):
    settings = load_settings(_config(tmp_path, port=9123, server=f'host = "{bind}"'))
    assert build_probe(settings).url == f"http://{expected}:9123/healthz"


def test_probe_host_is_the_public_name_when_it_is_served(tmp_path):
    hosts = 'trusted_hosts = ["tools.example.com"]'
    config = _config(tmp_path, hosts=hosts)
    config.write_text(config.read_text().replace('public_url = "http://localhost:8501"', 'public_url = "https://tools.example.com"'))
    probe = build_probe(load_settings(config), path=READINESS)
    assert probe.host_header == "tools.example.com"
    assert probe.url.endswith("/readyz")


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ('trusted_hosts = ["intranet.corp", "localhost"]', "localhost"),  # public_url's host, served though not first
        ('trusted_hosts = ["intranet.corp", "tools.corp"]', "intranet.corp"),  # public_url's host not served: the first
        ('trusted_hosts = ["*.corp.example"]', "healthcheck.corp.example"),
        ('trusted_hosts = ["*"]', "localhost"),
    ],
)
def test_probe_host_is_one_the_trusted_host_layer_accepts(tmp_path, hosts, expected):
    from gateway.middleware.trusted_host import TrustedHostMiddleware

    settings = load_settings(_config(tmp_path, hosts=hosts))
    probe = build_probe(settings)
    layer = TrustedHostMiddleware(lambda *a: None, allowed_hosts=settings.server.trusted_hosts)
    assert probe.host_header == expected
    assert layer.host_allowed(probe.host_header)


def test_tls_listener_is_probed_over_https(tmp_path):
    config = _config(tmp_path)
    write_secret(tmp_path / "secrets" / "tls.key", "unused")
    (tmp_path / "tls.crt").write_text("unused")
    text = config.read_text().replace("[server]\n", '[server]\ntls_cert = "tls.crt"\ntls_key = "secrets/tls.key"\n', 1)
    config.write_text(text)
    settings = load_settings(config)
    assert build_probe(settings).url.startswith("https://127.0.0.1:")


@pytest.mark.slow
def test_a_gateway_serving_only_its_public_name_is_healthy(tmp_path):
    port = free_port()
    config = _config(tmp_path, port=port, hosts='trusted_hosts = ["tools.example.com"]')
    config.write_text(config.read_text().replace(f'public_url = "http://localhost:{port}"', f'public_url = "http://tools.example.com:{port}"'))
    gw = GatewayProcess(config, port, host_header="tools.example.com").start()
    try:
        # A checker that sends the address as Host (as a load balancer's
        # may) gets the probes, and nothing else.
        for path in ("/healthz", "/readyz"):
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/auth/login", timeout=5)
        assert refused.value.code == 400

        live = _healthcheck(config)
        assert live.returncode == 0, live.stderr
        assert f"http://127.0.0.1:{port}/healthz: 200" in live.stdout
        ready = _healthcheck(config, "--ready")
        assert ready.returncode == 0, ready.stderr
    finally:
        gw.stop()

    down = _healthcheck(config, "--timeout", "1")
    assert down.returncode == 1
    assert "no answer" in down.stderr
