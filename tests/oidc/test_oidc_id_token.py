"""ID-token and discovery checks with our own keys and a JWKS on a real port."""

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

from gateway.auth import oidc
from gateway.auth.oidc import OIDCClient, OIDCError
from gateway.settings import OIDCSettings
from tests.oidc.harness import REDIRECT_URI, FakeIdP, IdPKeys

CLIENT_ID = "toolgate"
NONCE = "n-0S6_WzA2Mj"


def client_for(idp: FakeIdP, **kw: Any) -> OIDCClient:
    settings = OIDCSettings(issuer=idp.url, client_id=CLIENT_ID, **kw)
    return OIDCClient(settings, redirect_uri=REDIRECT_URI)


def claims(idp: FakeIdP, **kw: Any) -> dict[str, Any]:
    now = int(time.time())
    out = {"iss": idp.url, "aud": CLIENT_ID, "sub": "u-1", "iat": now, "exp": now + 300, "nonce": NONCE}
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


def sign(key: Any, payload: dict[str, Any], alg: str = "RS256", kid: str = "rsa-1") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def reason(client: OIDCClient, token: str, nonce: str = NONCE) -> str:
    with pytest.raises(OIDCError) as info:
        await client.verify_id_token(token, nonce=nonce)
    return info.value.reason


# ---------------------------------------------------------------- accepted


async def test_valid_rs256_and_es256_tokens(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    client = client_for(fake_idp)
    got = await client.verify_id_token(sign(test_keys.rsa, claims(fake_idp)), nonce=NONCE)
    assert got["sub"] == "u-1"
    got = await client.verify_id_token(sign(test_keys.ec, claims(fake_idp), "ES256", "ec-1"), nonce=NONCE)
    assert got["sub"] == "u-1"


async def test_multiple_audiences_with_our_azp(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    client = client_for(fake_idp)
    token = sign(test_keys.rsa, claims(fake_idp, aud=[CLIENT_ID, "other"], azp=CLIENT_ID))
    assert (await client.verify_id_token(token, nonce=NONCE))["azp"] == CLIENT_ID


# ---------------------------------------------------------------- refused


async def test_algorithm_outside_the_configured_list(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    client = client_for(fake_idp, algorithms=("ES256",))
    assert await reason(client, sign(test_keys.rsa, claims(fake_idp))) == oidc.BAD_TOKEN


async def test_hs256_signed_with_the_public_key(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    client = client_for(fake_idp)
    pem = test_keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64(claims(fake_idp))}"
    sig = base64.urlsafe_b64encode(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    assert await reason(client, signing_input + "." + sig.rstrip(b"=").decode()) == oidc.BAD_TOKEN


async def test_alg_none(fake_idp: FakeIdP) -> None:
    client = client_for(fake_idp)
    token = f"{b64({'alg': 'none', 'kid': 'rsa-1'})}.{b64(claims(fake_idp))}."
    assert await reason(client, token) == oidc.BAD_TOKEN


async def test_token_alg_differs_from_the_key(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    """ES256 named for the RSA key's kid (both algorithms allowed) is refused."""
    client = client_for(fake_idp)
    assert await reason(client, sign(test_keys.ec, claims(fake_idp), "ES256", "rsa-1")) == oidc.BAD_TOKEN


async def test_signed_by_another_key(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    client = client_for(fake_idp)
    assert await reason(client, sign(test_keys.other_rsa, claims(fake_idp))) == oidc.BAD_TOKEN


async def test_unknown_kid(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    client = client_for(fake_idp)
    assert await reason(client, sign(test_keys.rsa, claims(fake_idp), kid="nope")) == oidc.BAD_TOKEN


async def test_tampered_payload(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    client = client_for(fake_idp)
    header, _, sig = sign(test_keys.rsa, claims(fake_idp)).split(".")
    forged = b64(claims(fake_idp, sub="admin"))
    assert await reason(client, f"{header}.{forged}.{sig}") == oidc.BAD_TOKEN


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "https://evil.example"},
        {"aud": "another-client"},
        {"exp": int(time.time()) - 3600},
        {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200},
        {"exp": None},
        {"iat": None},
        {"sub": None},
        {"aud": [CLIENT_ID, "other"]},  # several audiences and no azp
        {"azp": "another-client"},
    ],
    ids=["iss", "aud", "expired", "iat-future", "no-exp", "no-iat", "no-sub", "multi-aud-no-azp", "azp"],
)
async def test_claim_checks(fake_idp: FakeIdP, test_keys: IdPKeys, change: dict[str, Any]) -> None:
    client = client_for(fake_idp)
    assert await reason(client, sign(test_keys.rsa, claims(fake_idp, **change))) == oidc.BAD_TOKEN


@pytest.mark.parametrize("nonce", ["another-flow", None])
async def test_nonce_must_match(fake_idp: FakeIdP, test_keys: IdPKeys, nonce: str | None) -> None:
    client = client_for(fake_idp)
    assert await reason(client, sign(test_keys.rsa, claims(fake_idp, nonce=nonce))) == oidc.BAD_NONCE


def test_symmetric_algorithms_refused_at_construction(fake_idp: FakeIdP) -> None:
    with pytest.raises(ValueError):
        client_for(fake_idp, algorithms=("RS256", "HS256"))


# ---------------------------------------------------------------- discovery


async def test_issuer_mismatch_in_discovery(fake_idp: FakeIdP) -> None:
    fake_idp.issuer = "https://evil.example"
    with pytest.raises(OIDCError) as info:
        await client_for(fake_idp).metadata()
    assert info.value.reason == oidc.BAD_ISSUER


async def test_issuer_with_a_trailing_slash_is_the_same_issuer(fake_idp: FakeIdP, test_keys: IdPKeys) -> None:
    fake_idp.issuer = fake_idp.url + "/"
    client = client_for(fake_idp)
    assert (await client.metadata()).issuer == fake_idp.url + "/"
    # `iss` must then be the provider's exact spelling.
    ok = sign(test_keys.rsa, claims(fake_idp, iss=fake_idp.url + "/"))
    assert (await client.verify_id_token(ok, nonce=NONCE))["sub"] == "u-1"
    assert await reason(client, sign(test_keys.rsa, claims(fake_idp))) == oidc.BAD_TOKEN


async def test_provider_without_pkce_s256_is_refused(fake_idp: FakeIdP) -> None:
    fake_idp.extra = {"code_challenge_methods_supported": ["plain"]}
    with pytest.raises(OIDCError) as info:
        await client_for(fake_idp).metadata()
    assert info.value.reason == oidc.PROVIDER_UNREACHABLE


async def test_unreachable_provider() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OIDCClient(OIDCSettings(issuer=f"http://127.0.0.1:{port}", client_id="x"), redirect_uri=REDIRECT_URI)
    with pytest.raises(OIDCError) as info:
        await client.metadata()
    assert info.value.reason == oidc.PROVIDER_UNREACHABLE


async def test_discovery_is_cached(fake_idp: FakeIdP) -> None:
    client = client_for(fake_idp)
    first = await client.metadata()
    fake_idp.issuer = "https://evil.example"  # would fail if fetched again
    assert await client.metadata() is first


async def test_authorization_url_carries_pkce_state_and_nonce(fake_idp: FakeIdP) -> None:
    from urllib.parse import parse_qs, urlsplit

    url = await client_for(fake_idp).authorization_url(state="st", nonce="nn", code_challenge="cc")
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(fake_idp.url + "/auth?")
    assert q == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": "st",
        "nonce": "nn",
        "code_challenge": "cc",
        "code_challenge_method": "S256",
    }


# ---------------------------------------------------------------- helpers


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = oidc.pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == digest
    assert oidc.pkce_pair()[0] != verifier


@pytest.mark.parametrize(
    "raw",
    [
        "//evil.example",
        "//evil.example/path",
        "/\\evil.example",
        "/\\/evil.example",
        "/foo\\..\\..\\evil",
        "https://evil.example/",
        "http:/evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "/\x00",
        "",
        None,
        "/" + "a" * 3000,
    ],
)
def test_safe_next_refuses_off_site_targets(raw: str | None) -> None:
    assert oidc.safe_next(raw) == "/"


@pytest.mark.parametrize("raw", ["/", "/sales", "/ops?tab=2#x", "/a/b%2F%2Fc", "/search?q=//x"])
def test_safe_next_keeps_on_site_paths(raw: str) -> None:
    assert oidc.safe_next(raw) == raw


@pytest.mark.parametrize(
    "value, expected",
    [
        (["employees", "ops"], ("employees", "ops")),
        ("employees, ops  security", ("employees", "ops", "security")),
        (["a", "a", 3, None, "", "b\x00"], ("a",)),
        ({"employees": True}, ()),
        (None, ()),
    ],
)
def test_parse_groups(value: Any, expected: tuple[str, ...]) -> None:
    assert oidc.parse_groups(value) == expected


@pytest.mark.parametrize(
    "claims_, expected",
    [
        ({"email": "a@example.com", "email_verified": True}, "a@example.com"),
        ({"email": "a@example.com"}, "a@example.com"),
        ({"email": "a@example.com", "email_verified": False}, ""),
        ({"email": "a@example.com", "email_verified": "false"}, ""),
        ({"email": "not-an-address"}, ""),
        ({"email": ["a@example.com"]}, ""),
    ],
)
def test_verified_email(claims_: dict[str, Any], expected: str) -> None:
    assert oidc.verified_email(claims_) == expected
