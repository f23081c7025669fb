"""``[state]``: backend selection, Redis URL, password and TLS files, checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import ConfigError, load_settings
from tests.helpers import make_config_dir, write_secret


def config(tmp_path: Path, state: str) -> Path:
    return make_config_dir(tmp_path / "cfg", sections_extra=f"[state]\n{state}\n")


def error_key(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(path, environ=env or {})
    return exc.value.key


def test_default_is_the_memory_backend(tmp_path: Path) -> None:
    s = load_settings(make_config_dir(tmp_path / "cfg"), environ={})
    assert s.state.backend == "memory"
    assert s.state.key_prefix == "toolgate:"


def test_redis_with_password_file_and_tls(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "cfg"
    write_secret(cfg_dir / "secrets" / "redis.password", "s3cret\n")
    (cfg_dir / "ca.pem").parent.mkdir(parents=True, exist_ok=True)
    (cfg_dir / "ca.pem").write_text("not parsed here\n")
    path = config(
        tmp_path,
        'backend = "redis"\nredis_url = "rediss://redis.internal:6380/2"\npassword_file = "secrets/redis.password"\n'
        'tls_ca_file = "ca.pem"\nkey_prefix = "tg:"\nreplica_id = "gw-1"',
    )
    s = load_settings(path, environ={})
    assert s.state.backend == "redis"
    assert s.state.password_file == cfg_dir / "secrets" / "redis.password"
    assert s.state.tls_ca_file == cfg_dir / "ca.pem"
    assert (s.state.key_prefix, s.state.replica_id) == ("tg:", "gw-1")


@pytest.mark.parametrize(
    ("state", "key"),
    [
        ('backend = "memcached"', "state.backend"),
        ('backend = "redis"\nredis_url = "http://redis:6379"', "state.redis_url"),
        ('backend = "redis"\nredis_url = "redis://"', "state.redis_url"),
        ('backend = "redis"\nredis_url = "redis://r:6379"\ntls_ca_file = "ca.pem"', "state.tls_ca_file"),
        ('backend = "redis"\nredis_url = "rediss://r:6379"\ntls_cert_file = "c.pem"', "state.tls_key_file"),
        ('backend = "redis"\npassword_file = "missing.txt"', "state.password_file"),
        ('replica_id = "../../etc"', "state.replica_id"),
        ('key_prefix = "has space"', "state.key_prefix"),
        ("timeout_s = 0", "state.timeout_s"),
        ('redis_password = "inline"', "state.redis_password"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, state: str, key: str) -> None:
    assert error_key(config(tmp_path, state)) == key


def test_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, 'backend = "redis"\npassword_file = "pw.txt"')
    (path.parent / "pw.txt").write_text("s3cret\n")
    (path.parent / "pw.txt").chmod(0o644)
    assert error_key(path) == "state.password_file"


def test_environment_overrides_state_keys(tmp_path: Path) -> None:
    path = make_config_dir(tmp_path / "cfg")
    s = load_settings(path, environ={"GATEWAY_STATE_BACKEND": "redis", "GATEWAY_STATE_REPLICA_ID": "gw-b",
                                     "GATEWAY_STATE_REDIS_URL": "redis://10.0.0.5:6379/1"})  # fmt: skip
    assert (s.state.backend, s.state.replica_id, s.state.redis_url) == ("redis", "gw-b", "redis://10.0.0.5:6379/1")


def test_memory_backend_needs_no_redis_package_and_redis_backend_says_what_is_missing(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    memory = make_config_dir(tmp_path / "m")
    redis_cfg = config(tmp_path, 'backend = "redis"')
    probe = (
        "import sys; sys.modules['redis'] = None\n"  # as if the package were not installed
        "from gateway.settings import load_settings, ConfigError\n"
        "from gateway.services import build_services\n"
        "build_services(load_settings(sys.argv[1])).state.release()\n"
        "try:\n    build_services(load_settings(sys.argv[2]))\n"
        "except ConfigError as e:\n    print(e.key, '|', e.message)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe, str(memory), str(redis_cfg)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == 'state.backend | needs the redis package: pip install "toolgate[redis]"'
