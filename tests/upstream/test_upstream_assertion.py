"""UpstreamVerifier against a real JWKS endpoint with our own EC and RSA keys."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.auth.upstream import JWKSCache, UpstreamAssertionError, UpstreamUnavailable, UpstreamVerifier
from gateway.settings import UpstreamSettings

AUD = "/projects/123/global/backendServices/456"
ISS = "https://cloud.google.com/iap"


def settings(url: str, **kw: Any) -> UpstreamSettings:
    base = dict(header="X-Goog-IAP-JWT-Assertion", jwks_url=url, audience=AUD, issuer=ISS)
    base.update(kw)
    return UpstreamSettings(**base)


def claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    out = {
        "iss": ISS,
        "aud": AUD,
        "sub": "accounts.google.com:1234",
        "email": "alice@example.com",
        "groups": ["employees", "ops"],
        "iat": now,
        "exp": now + 600,
    }
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


def sign(key: Any, alg: str = "ES256", kid: str | None = "ec-1", **kw: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**kw), key, algorithm=alg, headers=headers)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


async def refused(verifier: UpstreamVerifier, token: str) -> str:
    with pytest.raises(UpstreamAssertionError) as info:
        await verifier.verify(token)
    return info.value.reason


# ---------------------------------------------------------------- accepted


async def test_valid_es256_assertion(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert verifier.header == "x-goog-iap-jwt-assertion"
    ident = await verifier.verify(sign(keys.ec))
    assert ident.user == "alice@example.com"
    assert ident.email == "alice@example.com"
    assert ident.groups == frozenset({"employees", "ops"})
    assert ident.auth_method == "upstream"
    assert ident.expires_at is not None and ident.expires_at > time.time()


async def test_valid_rs256_assertion_with_key_lacking_alg(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    ident = await verifier.verify(sign(keys.rsa, "RS256", "rsa-1", aud=["other", AUD]))
    assert ident.user == "alice@example.com"


async def test_username_falls_back_to_sub(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url, username_claim="preferred_username"))
    ident = await verifier.verify(sign(keys.ec))
    assert ident.user == "accounts.google.com:1234"


async def test_issuer_not_checked_when_not_configured(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url, issuer=""))
    assert (await verifier.verify(sign(keys.ec, iss="https://team.cloudflareaccess.com"))).user


# ---------------------------------------------------------------- refused


async def test_wrong_audience(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.ec, aud="/projects/999/other")) == "bad_audience"


async def test_missing_audience(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.ec, aud=None)) == "missing_claim"


async def test_wrong_issuer(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.ec, iss="https://evil.example")) == "bad_issuer"


async def test_missing_issuer_when_configured(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.ec, iss=None)) == "missing_claim"


async def test_expired(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    now = int(time.time())
    assert await refused(verifier, sign(keys.ec, iat=now - 3600, exp=now - 120)) == "expired"


async def test_issued_in_the_future(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    now = int(time.time())
    assert await refused(verifier, sign(keys.ec, iat=now + 600, exp=now + 1200)) == "not_yet_valid"


@pytest.mark.parametrize("claim", ["exp", "iat"])
async def test_exp_and_iat_required(published, keys, claim) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.ec, **{claim: None})) == "missing_claim"


async def test_alg_none(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    token = b64({"alg": "none", "kid": "ec-1", "typ": "JWT"}) + "." + b64(claims()) + "."
    assert await refused(verifier, token) == "bad_algorithm"


async def test_hs256_signed_with_the_public_key(published, keys) -> None:
    """Key confusion: the published public key used as an HMAC secret."""
    verifier = UpstreamVerifier(settings(published.url, algorithms=("ES256", "RS256")))
    pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"})
    payload = b64(claims())
    sig = base64.urlsafe_b64encode(
        hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    ).rstrip(b"=").decode()
    assert await refused(verifier, f"{header}.{payload}.{sig}") == "bad_algorithm"


async def test_algorithm_not_matching_the_key(published, keys) -> None:
    """An RS256 token naming the EC key's kid is refused before any signature check."""
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.rsa, "RS256", "ec-1")) == "bad_algorithm"


async def test_algorithm_outside_the_configured_list(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url, algorithms=("ES256",)))
    assert await refused(verifier, sign(keys.rsa, "RS256", "rsa-1")) == "bad_algorithm"


async def test_unknown_kid(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.ec, kid="nope")) == "unknown_key"


async def test_missing_kid(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.ec, kid=None)) == "unknown_key"


async def test_signed_by_another_key_with_a_published_kid(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, sign(keys.other_ec)) == "bad_signature"


async def test_tampered_payload(published, keys) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    header, _, sig = sign(keys.ec).split(".")
    forged = b64(claims(email="mallory@example.com", groups=["security"]))
    assert await refused(verifier, f"{header}.{forged}.{sig}") == "bad_signature"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20000])
async def test_garbage(published, token) -> None:
    verifier = UpstreamVerifier(settings(published.url))
    assert await refused(verifier, token) == "malformed"


def test_symmetric_algorithms_are_refused_at_construction(published) -> None:
    with pytest.raises(ValueError):
        UpstreamVerifier(settings(published.url, algorithms=("ES256", "HS256")))


# ---------------------------------------------------------------- JWKS handling


async def test_unknown_kid_refetch_is_throttled(published, keys) -> None:
    jwks = JWKSCache(published.url, cooldown_s=0.3)
    verifier = UpstreamVerifier(settings(published.url), jwks=jwks)
    await verifier.verify(sign(keys.ec))
    assert published.state.hits == 1
    for i in range(5):  # within the cool-down of the first fetch: no fetch at all
        assert await refused(verifier, sign(keys.ec, kid=f"random-{i}")) == "unknown_key"
    assert published.state.hits == 1
    await asyncio.sleep(0.35)
    for i in range(5):  # after it: one fetch for the first unknown kid, then quiet again
        assert await refused(verifier, sign(keys.ec, kid=f"again-{i}")) == "unknown_key"
    assert published.state.hits == 2


async def test_rotated_key_is_picked_up(published, keys, make_jwk) -> None:
    verifier = UpstreamVerifier(settings(published.url), jwks=JWKSCache(published.url, cooldown_s=0.0))
    await verifier.verify(sign(keys.ec))
    assert await refused(verifier, sign(keys.other_ec, kid="ec-2")) == "unknown_key"
    published.state.keys.append(make_jwk(keys.other_ec, "ec-2", "ES256"))
    assert (await verifier.verify(sign(keys.other_ec, kid="ec-2"))).user == "alice@example.com"


async def test_jwks_unreachable(published, keys) -> None:
    published.state.status = 503
    verifier = UpstreamVerifier(settings(published.url))
    with pytest.raises(UpstreamUnavailable):
        await verifier.verify(sign(keys.ec))


async def test_stale_jwks_serves_briefly_then_fails_closed(published, keys) -> None:
    jwks = JWKSCache(published.url, ttl_s=0.05, max_stale_s=0.3)
    verifier = UpstreamVerifier(settings(published.url), jwks=jwks)
    await verifier.verify(sign(keys.ec))
    published.state.status = 503
    await asyncio.sleep(0.1)  # past the TTL: the refresh fails, the stale set still serves
    assert (await verifier.verify(sign(keys.ec))).user == "alice@example.com"
    await asyncio.sleep(1.1)  # past TTL + max_stale (and the 1 s retry spacing)
    with pytest.raises(UpstreamUnavailable):
        await verifier.verify(sign(keys.ec))


async def test_jwks_without_signing_keys_is_unusable(published, keys) -> None:
    published.state.keys = [{"kty": "oct", "kid": "ec-1", "k": "c2VjcmV0"}]
    verifier = UpstreamVerifier(settings(published.url))
    with pytest.raises(UpstreamUnavailable):
        await verifier.verify(sign(keys.ec))


async def test_fetch_does_not_block_the_event_loop(published, keys) -> None:
    published.state.delay_s = 0.4
    verifier = UpstreamVerifier(settings(published.url))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await verifier.verify(sign(keys.ec))
    finally:
        task.cancel()
    assert ticks >= 10


async def test_concurrent_first_requests_share_one_fetch(published, keys) -> None:
    published.state.delay_s = 0.2
    verifier = UpstreamVerifier(settings(published.url))
    results = await asyncio.gather(*(verifier.verify(sign(keys.ec)) for _ in range(10)))
    assert {r.user for r in results} == {"alice@example.com"}
    assert published.state.hits == 1
