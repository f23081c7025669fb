"""Configuration: validated once, bad values stop start-up naming the key."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from gateway.settings import ConfigError, load_settings
from tests.helpers import ROOT, make_config_dir


@pytest.fixture
def config(tmp_path):
    return make_config_dir(tmp_path / "cfg")


def test_loads_defaults_and_resolves_paths_relative_to_config(config):
    s = load_settings(config, environ={})
    assert s.server.port == 8501
    assert s.session.keys_file == config.parent / "secrets" / "session.keys"
    assert s.audit.fail_closed is True
    assert s.server.allowed_networks[0] == ipaddress.ip_network("0.0.0.0/0")


def test_env_overrides_single_keys(config):
    env = {
        "GATEWAY_SERVER_PORT": "9100",
        "GATEWAY_SERVER_TRUSTED_PROXIES": '["10.0.0.0/8"]',
        "GATEWAY_AUDIT_FAIL_CLOSED": "false",
        "GATEWAY_SERVER_PUBLIC_URL": "https://tools.example.com",
    }
    s = load_settings(config, environ=env)
    assert s.server.port == 9100
    assert s.server.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    assert s.audit.fail_closed is False
    assert s.server.https


def test_config_from_environment_variable(config):
    assert load_settings(None, environ={"GATEWAY_CONFIG": str(config)}).config_path == config


@pytest.mark.parametrize(
    "env,key",
    [
        ({"GATEWAY_SERVER_PORT": "99999"}, "server.port"),
        ({"GATEWAY_SERVER_PORT": '"80"'}, "server.port"),
        ({"GATEWAY_SERVER_TRUSTED_PROXIES": '["10.0.0.1/8"]'}, "server.trusted_proxies"),
        ({"GATEWAY_SERVER_ALLOWED_NETWORKS": '["nonsense"]'}, "server.allowed_networks"),
        ({"GATEWAY_SERVER_ALLOWED_NETWORKS": "[]"}, "server.allowed_networks"),
        ({"GATEWAY_SERVER_PUBLIC_URL": "javascript:alert(1)"}, "server.public_url"),
        ({"GATEWAY_SERVER_TLS_CERT": "/nonexistent.pem"}, "server.tls_key"),
        ({"GATEWAY_SESSION_IDLE_TIMEOUT_S": "999999"}, "session.idle_timeout_s"),
        ({"GATEWAY_AUDIT_FAIL_CLOSED": '"yes"'}, "audit.fail_closed"),
        ({"GATEWAY_SERVER_BOGUS": "1"}, "server.bogus"),
        ({"GATEWAY_NOSUCH_KEY": "1"}, "GATEWAY_NOSUCH_KEY"),
        ({"GATEWAY_POLICY_DIR": "/nonexistent-dir"}, "policy.dir"),
    ],
)
def test_bad_values_name_their_key(config, env, key):
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ=env)
    assert err.value.key == key


def test_world_readable_key_file_is_refused(config):
    keys = config.parent / "secrets" / "session.keys"
    keys.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert err.value.key == "session.keys_file" and "chmod 600" in err.value.message


def test_missing_key_file_is_refused(config):
    (config.parent / "secrets" / "audit.key").unlink()
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert err.value.key == "audit.key_file"


def test_unknown_section_and_broken_toml(config):
    config.write_text(config.read_text() + "\n[surprise]\nx = 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert err.value.key == "surprise"
    config.write_text("[server\nport = 1")
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert err.value.key == "config"


def test_cli_bad_config_exits_2_with_one_line(config):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        env={"GATEWAY_SERVER_PORT": "70000", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "server.port" in lines[0]
