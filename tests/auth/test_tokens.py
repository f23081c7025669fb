"""API tokens: the classic JWT attacks all fail; bearer requests never fall back to the cookie."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.keyring import new_token_key_line, write_private
from gateway.auth.tokens import TokenError, mint_token

from ._support import ALICE_PASSWORD, Env, header_values, login


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def raw_jwt(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """Build a JWT by hand (pyjwt refuses to make the malicious ones)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def mint(env: Env, **over: Any) -> tuple[str, dict[str, Any]]:
    kw: dict[str, Any] = dict(
        subject="svc-report",
        groups=["employees"],
        ttl_s=600,
        issuer="toolgate",
        audience="toolgate-api",
        max_ttl_s=env.settings.auth.token_max_ttl_s,
        email="svc@example.com",
    )
    kw.update(over)
    return mint_token(env.token_keys, **kw)


def good_claims(env: Env) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "toolgate",
        "aud": "toolgate-api",
        "sub": "svc-report",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "abc",
        "groups": ["security"],
    }


def test_minted_token_verifies(env: Env) -> None:
    token, claims = mint(env)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256" and header["kid"] == "k1"
    assert set(claims) >= {"iss", "aud", "sub", "iat", "nbf", "exp", "jti"}
    ident = env.tokens.verify(token)
    assert ident.user == "svc-report" and ident.auth_method == "token"
    assert ident.groups == frozenset({"employees"}) and ident.email == "svc@example.com"
    assert ident.expires_at == claims["exp"]


def test_ttl_is_capped(env: Env) -> None:
    _, claims = mint(env, ttl_s=10**9, max_ttl_s=3600)
    assert claims["exp"] - claims["iat"] == 3600


def test_hand_built_token_with_the_real_key_verifies(env: Env) -> None:
    # Proves raw_jwt is right, so the attacks below fail for their own reason.
    token = raw_jwt({"alg": "HS256", "kid": "k1", "typ": "JWT"}, good_claims(env), env.token_keys.by_id["k1"])
    assert env.tokens.verify(token).user == "svc-report"


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _attacks(env: Env) -> dict[str, str]:
    key = env.token_keys.by_id["k1"]
    c = good_claims(env)
    rsa_key = RSA_KEY
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = raw_jwt({"alg": "HS256", "kid": "k1"}, c, key)
    h, p, s = good.split(".")
    altered_payload = b64(json.dumps({**c, "sub": "admin", "groups": ["security", "admins"]}).encode())
    now = int(time.time())
    return {
        "alg_none": raw_jwt({"alg": "none", "kid": "k1"}, c, None),
        "alg_None_with_sig": raw_jwt({"alg": "None", "kid": "k1"}, c, key),
        # HS/RS confusion: the RSA public key used as the HMAC secret
        "hs_with_rsa_public_key": raw_jwt({"alg": "HS256", "kid": "k1"}, c, public_pem),
        "rs256_signed": jwt.encode(c, rsa_key, algorithm="RS256", headers={"kid": "k1"}),
        "altered_payload": f"{h}.{altered_payload}.{s}",
        "wrong_aud": raw_jwt({"alg": "HS256", "kid": "k1"}, {**c, "aud": "another-api"}, key),
        "aud_list": raw_jwt({"alg": "HS256", "kid": "k1"}, {**c, "aud": ["toolgate-api", "x"]}, key),
        "wrong_iss": raw_jwt({"alg": "HS256", "kid": "k1"}, {**c, "iss": "evil"}, key),
        "expired": raw_jwt({"alg": "HS256", "kid": "k1"}, {**c, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, key),
        "not_yet_valid": raw_jwt({"alg": "HS256", "kid": "k1"}, {**c, "nbf": now + 3600}, key),
        "no_exp": raw_jwt({"alg": "HS256", "kid": "k1"}, {k: v for k, v in c.items() if k != "exp"}, key),
        "no_sub": raw_jwt({"alg": "HS256", "kid": "k1"}, {k: v for k, v in c.items() if k != "sub"}, key),
        "no_iat": raw_jwt({"alg": "HS256", "kid": "k1"}, {k: v for k, v in c.items() if k != "iat"}, key),
        "no_aud": raw_jwt({"alg": "HS256", "kid": "k1"}, {k: v for k, v in c.items() if k != "aud"}, key),
        "kid_path": raw_jwt({"alg": "HS256", "kid": "../../etc/passwd"}, c, key),
        "kid_dev_null": raw_jwt({"alg": "HS256", "kid": "/dev/null"}, c, b""),
        "kid_unknown": raw_jwt({"alg": "HS256", "kid": "k9"}, c, key),
        "kid_missing": raw_jwt({"alg": "HS256"}, c, key),
        "kid_not_string": raw_jwt({"alg": "HS256", "kid": ["k1"]}, c, key),
        "kid_sql": raw_jwt({"alg": "HS256", "kid": "x' UNION SELECT 'key"}, c, b"key"),
        "jwk_embedded": raw_jwt({"alg": "HS256", "kid": "k1", "jwk": {"kty": "oct", "k": b64(b"x" * 32)}}, c, key),
        "crit_header": raw_jwt({"alg": "HS256", "kid": "k1", "crit": ["exp"]}, c, key),
        "ttl_too_long": raw_jwt({"alg": "HS256", "kid": "k1"}, {**c, "exp": now + 10**9}, key),
        "groups_not_list": raw_jwt({"alg": "HS256", "kid": "k1"}, {**c, "groups": "security"}, key),
        "sub_not_string": raw_jwt({"alg": "HS256", "kid": "k1"}, {**c, "sub": 42}, key),
        "garbage": "not.a.jwt",
        "empty": "",
        "huge": "a" * 10_000,
    }


ATTACKS = [
    "alg_none", "alg_None_with_sig", "hs_with_rsa_public_key", "rs256_signed", "altered_payload", "wrong_aud",
    "aud_list", "wrong_iss", "expired", "not_yet_valid", "no_exp", "no_sub", "no_iat", "no_aud", "kid_path",
    "kid_dev_null", "kid_unknown", "kid_missing", "kid_not_string", "kid_sql", "jwk_embedded", "crit_header",
    "ttl_too_long", "groups_not_list", "sub_not_string", "garbage", "empty", "huge",
]  # fmt: skip


@pytest.mark.parametrize("attack", ATTACKS)
def test_jwt_attacks_fail(env: Env, attack: str) -> None:
    token = _attacks(env)[attack]
    with pytest.raises(TokenError):
        env.tokens.verify(token)


def test_token_key_rotation(env: Env) -> None:
    old, _ = mint(env)
    line = new_token_key_line("k2")
    write_private(env.settings.auth.token_key_file, line + "\n" + "k1:" + env.token_keys.by_id["k1"].hex() + "\n")
    new, _ = mint(env)
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    assert env.tokens.verify(old).user == env.tokens.verify(new).user == "svc-report"
    write_private(env.settings.auth.token_key_file, line + "\n")
    with pytest.raises(TokenError) as exc:
        env.tokens.verify(old)
    assert exc.value.reason == "unknown_key"


# ---------------------------------------------------------------- the subject's state


def _refused(env: Env, token: str) -> str:
    with pytest.raises(TokenError) as exc:
        env.tokens.verify(token)
    return exc.value.reason


def test_a_disabled_users_tokens_stop_working_and_enabling_does_not_revive_them(env: Env) -> None:
    token, _ = mint(env, subject="bob", clock=env.clock)
    assert env.tokens.verify(token).user == "bob"
    env.users.set_disabled("bob", True)
    assert _refused(env, token) == "subject_disabled"
    env.clock.advance(5)
    env.users.set_disabled("bob", False)
    assert _refused(env, token) == "revoked"  # disabling ended every credential issued until then
    env.clock.advance(1)
    fresh, _ = mint(env, subject="bob", clock=env.clock)
    assert env.tokens.verify(fresh).user == "bob"


def test_revoking_a_subject_kills_its_tokens_local_user_or_not(env: Env) -> None:
    svc, _ = mint(env, clock=env.clock)  # svc-report is not a local user
    alice, _ = mint(env, subject="alice", clock=env.clock)
    env.clock.advance(10)
    env.users.revoke_sessions("svc-report")
    assert _refused(env, svc) == "revoked"
    assert env.tokens.verify(alice).user == "alice"  # only that subject
    env.users.set_password("alice", "another long passphrase 2")
    assert _refused(env, alice) == "revoked"
    # Minted in the very second of the revocation: refused too (whole-second iat).
    same_second, _ = mint(env, clock=env.clock)
    assert _refused(env, same_second) == "revoked"
    env.clock.advance(1)
    assert env.tokens.verify(mint(env, clock=env.clock)[0]).user == "svc-report"


def test_one_token_is_revoked_by_its_id_and_the_subjects_others_keep_working(env: Env) -> None:
    leaked, claims = mint(env, clock=env.clock)
    other, _ = mint(env, clock=env.clock)
    env.users.revoke_token(claims["jti"], until=claims["exp"])
    assert _refused(env, leaked) == "revoked"
    assert env.tokens.verify(other).user == "svc-report"
    env.clock.advance(10)
    assert env.tokens.verify(mint(env, clock=env.clock)[0]).user == "svc-report"


def test_the_revoked_token_list_drops_expired_entries_and_refuses_junk_ids(env: Env) -> None:
    from gateway.auth.users import UserError

    env.users.revoke_token("old-token", until=env.clock() + 5)
    env.users.revoke_token("live-token", until=env.clock() + 3600)
    env.clock.advance(10)
    env.users.revoke_token("another", until=env.clock() + 3600)
    assert set(env.users.snapshot().revoked_tokens) == {"live-token", "another"}
    for bad in ("", "a b", "x" * 129, "../x/\n", "tok\u00e9n"):
        with pytest.raises(UserError):
            env.users.revoke_token(bad, until=env.clock() + 60)
    # A hand-edited entry that is not a token id is ignored, not fatal.
    path = env.settings.auth.users_file
    path.write_text(path.read_text() + '"bad id" = 1e12\n')
    assert set(env.users.snapshot().revoked_tokens) == {"live-token", "another"}


async def test_a_revoked_token_is_401_over_http_and_audited_with_the_reason(env: Env) -> None:
    token, _ = mint(env, clock=env.clock)
    env.clock.advance(10)
    env.users.revoke_sessions("svc-report")
    async with env.client() as c:
        resp = await c.get("/api/whoami", headers={"authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# ---------------------------------------------------------------- over HTTP


async def test_bearer_token_over_http(env: Env) -> None:
    token, _ = mint(env)
    async with env.client() as c:
        resp = await c.get("/api/whoami", headers={"authorization": f"Bearer {token}"})
        assert resp.status_code == 200
        assert resp.json()["user"] == "svc-report" and resp.json()["auth_method"] == "token"
        inner = (await c.get("/x", headers={"authorization": f"Bearer {token}", "x-gateway-user": "admin"})).json()
        assert header_values(inner, "x-gateway-user") == ["svc-report"]
        assert header_values(inner, "authorization") == []  # the secret is not passed to the tools


@pytest.mark.parametrize("attack", ["alg_none", "hs_with_rsa_public_key", "altered_payload", "expired", "kid_path"])
async def test_bad_bearer_is_401_and_never_falls_back_to_cookie(env: Env, attack: str) -> None:
    async with env.client() as c:
        await login(c, "alice", ALICE_PASSWORD)
        assert (await c.get("/api/whoami")).json()["user"] == "alice"
        resp = await c.get("/x", headers={"authorization": f"Bearer {_attacks(env)[attack]}"})
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert resp.headers["content-type"] == "application/json"
        assert resp.json()["error"]["code"] == "invalid_token"
        assert "user" not in resp.json()


async def test_duplicate_authorization_headers_are_refused(env: Env) -> None:
    token, _ = mint(env)
    async with env.client() as c:
        resp = await c.get("/x", headers=[("authorization", f"Bearer {token}"), ("authorization", "Bearer junk")])
        assert resp.status_code == 401
