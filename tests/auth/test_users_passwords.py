"""Password hashing, the users file, and no user enumeration by timing."""

from __future__ import annotations

import os
import stat
import statistics
import time
import tomllib
from pathlib import Path

import pytest

from gateway.auth.keyring import KeyRing, KeyRingError, new_session_key, parse_token_keys, write_private
from gateway.auth.passwords import (
    WeakPasswordError,
    check_strength,
    hash_password,
    parse_hash,
    verify_password,
)
from gateway.auth.users import UserDirectory, UserError, parse_users, render_users

from ._support import ALICE_PASSWORD, Env, Recorder


def test_hash_format_and_verification() -> None:
    h = hash_password("a perfectly fine passphrase")
    assert h.startswith("$scrypt$ln=15,r=8,p=1$")
    params, salt, digest = parse_hash(h)
    assert 2**params.log2_n >= 2**14 and params.r >= 8 and len(salt) >= 16 and len(digest) == 32
    assert verify_password("a perfectly fine passphrase", h)
    assert not verify_password("a perfectly fine passphrasE", h)
    assert hash_password("a perfectly fine passphrase") != h  # per-user salt


@pytest.mark.parametrize(
    "encoded",
    ["", "plain", "$scrypt$ln=30,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "$2b$12$abc"],
)
def test_broken_or_hostile_hashes_never_match(encoded: str) -> None:
    assert verify_password("anything at all", encoded) is False


@pytest.mark.parametrize(
    "password, username",
    [("short", ""), ("elevenchars", ""), ("aaaaaaaaaaaaaaaa", ""), ("xx-alice-xx-1234", "alice"), ("tab\there-123456", "")],
)
def test_weak_passwords_are_refused(password: str, username: str) -> None:
    with pytest.raises(WeakPasswordError):
        check_strength(password, username=username)


def test_users_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "users.toml"
    d = UserDirectory(path, warm=False)
    d.add("Carol", "likes-long-words-7", groups=["employees", "auditors"], email="carol@example.com")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = tomllib.loads(path.read_text())
    entry = data["users"]["carol"]
    assert entry["groups"] == ["employees", "auditors"] and entry["password"].startswith("$scrypt$")
    assert "likes-long-words-7" not in path.read_text()
    with pytest.raises(UserError):
        d.add("carol", "another-long-password-8")
    with pytest.raises(UserError):
        d.add("bad name!", "another-long-password-8")


def test_render_escapes_hostile_strings() -> None:
    from gateway.auth.users import UserRecord, UsersSnapshot

    snap = UsersSnapshot(
        {"eve": UserRecord("eve", '$scrypt$"\\\n\x7f]', email="", groups=("g",))},
        {'x"]\n[users.root]\npassword = "': 1.5},
    )
    back = parse_users(render_users(snap))
    assert set(back.users) == {"eve"} and back.users["eve"].password_hash == '$scrypt$"\\\n\x7f]'
    assert list(back.revoked) == ['x"]\n[users.root]\npassword = "']


def test_directory_reloads_on_change(tmp_path: Path, users_template: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_bytes(users_template.read_bytes())
    reader = UserDirectory(path, check_interval_s=0, warm=False)
    writer = UserDirectory(path, warm=False)
    assert reader.get("alice") is not None and not reader.get("alice").disabled  # type: ignore[union-attr]
    writer.set_disabled("alice", True)
    assert reader.get("alice").disabled  # type: ignore[union-attr]
    # a broken file keeps the last good directory (revocations stay in force)
    path.write_text("[users\n")
    assert reader.get("alice").disabled  # type: ignore[union-attr]
    with pytest.raises(UserError):
        writer.set_disabled("alice", False)  # never overwrite a file we cannot read


def test_verify_refuses_disabled_and_unknown(env: Env) -> None:
    assert env.users.verify("alice", ALICE_PASSWORD) is not None
    assert env.users.verify("alice", "wrong-password-123") is None
    assert env.users.verify("nobody", ALICE_PASSWORD) is None
    env.users.set_disabled("alice", True)
    assert env.users.verify("alice", ALICE_PASSWORD) is None


def test_no_user_enumeration_by_timing(env: Env) -> None:
    """Unknown and disabled users cost a full scrypt, like a wrong password."""
    env.users.set_disabled("bob", True)

    def timed(name: str) -> float:
        samples = []
        for _ in range(3):
            t = time.perf_counter()
            env.users.verify(name, "wrong-password-123")
            samples.append(time.perf_counter() - t)
        return statistics.median(samples)

    known, unknown, disabled = timed("alice"), timed("nobody"), timed("bob")
    assert unknown > 0.5 * known and disabled > 0.5 * known
    assert unknown < 2 * known and disabled < 2 * known


# ---------------------------------------------------------------- key files


def test_session_key_file_rules(tmp_path: Path) -> None:
    p = tmp_path / "k"
    write_private(p, "short\n")
    with pytest.raises(KeyRingError):
        KeyRing(p)
    write_private(p, "# only a comment\n\n")
    with pytest.raises(KeyRingError):
        KeyRing(p)
    write_private(p, f"{new_session_key()}\n# old:\n{new_session_key()}\n")
    assert len(KeyRing(p).keys) == 2


@pytest.mark.parametrize(
    "text",
    ["k1:abcd", "../../etc/passwd:" + "ab" * 32, "k1:" + "zz" * 32, "k1" + "ab" * 32, "k1:" + "ab" * 32 + "\nk1:" + "cd" * 32],
)
def test_token_key_file_rules(tmp_path: Path, text: str) -> None:
    p = tmp_path / "t"
    write_private(p, text + "\n")
    with pytest.raises(KeyRingError):
        KeyRing(p, parser=parse_token_keys)


def test_rotation_is_audited_once(tmp_path: Path) -> None:
    p = tmp_path / "k"
    first, second = new_session_key(), new_session_key()
    write_private(p, first + "\n")
    rec = Recorder()
    ring = KeyRing(p, emit=rec, check_interval_s=0)
    write_private(p, f"{first}\n{second}\n")  # a new verify-only key: no rotation
    ring.refresh()
    assert rec.of("keys.rotated") == []
    write_private(p, f"{second}\n{first}\n")
    ring.refresh()
    ring.refresh()
    events = rec.of("keys.rotated")
    assert len(events) == 1 and events[0]["outcome"] == "success"
    assert second not in repr(events) and first not in repr(events)
