"""``gateway users|token|keys`` through argparse, against a real config file."""

from __future__ import annotations

import argparse
import io
import os
import stat
import sys
from pathlib import Path

import pytest
from starlette.responses import Response

from gateway.auth.cli import register

from ._support import ALICE_PASSWORD, Env, write_config

NEW_PASSWORD = "a-fresh-long-passphrase-42"


@pytest.fixture
def config(env: Env) -> Path:
    return write_config(env)


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub, common)
    args = parser.parse_args(argv)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return args.func(args)


def test_users_add_reads_stdin_and_writes_0600(
    env: Env, config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    users_file = env.settings.auth.users_file
    users_file.chmod(0o644)  # even a loosened file comes back private
    code = run(
        ["users", "add", "dave", "--groups", "employees,ops", "--email", "dave@example.com", "--password-stdin", "--config", str(config)],
        monkeypatch,
        stdin=NEW_PASSWORD + "\n",
    )
    assert code == 0
    assert stat.S_IMODE(os.stat(users_file).st_mode) == 0o600
    assert NEW_PASSWORD not in users_file.read_text()
    assert NEW_PASSWORD not in capsys.readouterr().out
    user = env.users.verify("dave", NEW_PASSWORD)
    assert user is not None and user.groups == ("employees", "ops") and user.email == "dave@example.com"
    assert env.users.verify("alice", ALICE_PASSWORD) is not None  # others untouched


def test_password_is_never_an_argument(env: Env, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        run(["users", "add", "dave", "--password", NEW_PASSWORD, "--config", str(config)], monkeypatch)
    # without --password-stdin nothing is read or written
    assert run(["users", "add", "dave", "--config", str(config)], monkeypatch, stdin=NEW_PASSWORD + "\n") == 1
    assert env.users.get("dave") is None


def test_weak_password_is_refused(env: Env, config: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code = run(["users", "add", "dave", "--password-stdin", "--config", str(config)], monkeypatch, stdin="short\n")
    assert code == 1 and "at least 12" in capsys.readouterr().err
    assert env.users.get("dave") is None


async def _session_cookie(env: Env) -> str:
    resp = Response()
    await env.sessions.start(resp, user="alice", email="", groups=[], auth_method="password", https=False)
    return resp.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]


async def test_passwd_ends_existing_sessions(env: Env, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cookie = await _session_cookie(env)
    assert (await env.sessions.resolve(cookie, https=False))[1] == "ok"
    code = run(["users", "passwd", "alice", "--password-stdin", "--config", str(config)], monkeypatch, stdin=NEW_PASSWORD + "\n")
    assert code == 0
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")
    assert env.users.verify("alice", NEW_PASSWORD) is not None
    assert env.users.verify("alice", ALICE_PASSWORD) is None


async def test_disable_ends_sessions_and_sign_in(env: Env, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cookie = await _session_cookie(env)
    assert run(["users", "disable", "alice", "--config", str(config)], monkeypatch) == 0
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")
    assert env.users.verify("alice", ALICE_PASSWORD) is None
    assert run(["users", "enable", "alice", "--config", str(config)], monkeypatch) == 0
    assert env.users.verify("alice", ALICE_PASSWORD) is not None
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")  # enabling revives nothing


def test_users_list(env: Env, config: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["users", "list", "--config", str(config)], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "employees,security" in out and "$scrypt$" not in out


def test_bad_config_is_exit_2(env: Env, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = env.dir / "bad.toml"
    bad.write_text("[session]\nidle_timeout_s = 'soon'\n")
    assert run(["users", "list", "--config", str(bad)], monkeypatch) == 2
    assert "session.idle_timeout_s" in capsys.readouterr().err


def test_token_create(env: Env, config: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code = run(
        ["token", "create", "--sub", "ci-bot", "--groups", "employees", "--ttl", "3600", "--config", str(config)], monkeypatch
    )
    assert code == 0
    token = capsys.readouterr().out.strip()
    ident = env.tokens.verify(token)
    assert ident.user == "ci-bot" and ident.groups == frozenset({"employees"}) and ident.auth_method == "token"


async def test_keys_rotate(env: Env, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cookie = await _session_cookie(env)
    token_before = env.settings.auth.token_key_file.read_text()
    old_first = env.session_keys.signing
    assert run(["keys", "rotate", "--ring", "all", "--config", str(config)], monkeypatch) == 0
    for path in (env.settings.session.keys_file, env.settings.auth.token_key_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert (await env.sessions.resolve(cookie, https=False))[1] == "ok"  # old key still verifies
    assert env.session_keys.signing != old_first and old_first in env.session_keys.entries
    assert token_before.strip().splitlines()[-1] in env.settings.auth.token_key_file.read_text()
    assert [e["details"]["ring"] for e in env.emit.of("keys.rotated")] == ["session"]
    env.tokens.keyring.refresh()
    assert [e["details"]["ring"] for e in env.emit.of("keys.rotated")] == ["session", "token"]
    # --keep 0 retires every old key: the old cookie is dead
    assert run(["keys", "rotate", "--ring", "session", "--keep", "0", "--config", str(config)], monkeypatch) == 0
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "bad_signature")
