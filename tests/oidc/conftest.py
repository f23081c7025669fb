"""Fixtures for the OIDC tests: the real provider, a fake one, test keys."""

from __future__ import annotations

from typing import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.oidc.harness import FakeIdP, IdPKeys, Provider, jwk_of, serve, start_provider, stop_provider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """oidc-provider with scope claims in the ID token (the common setup)."""
    p = start_provider(tmp_path_factory.mktemp("idp"), conform=False)
    try:
        yield p
    finally:
        stop_provider(p)


@pytest.fixture(scope="module")
def conform_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """oidc-provider in spec-conform mode: scope claims only from userinfo."""
    p = start_provider(tmp_path_factory.mktemp("idp"), conform=True)
    try:
        yield p
    finally:
        stop_provider(p)


@pytest.fixture(scope="session")
def test_keys() -> IdPKeys:
    return IdPKeys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        other_rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture(scope="module")
def fake_idp_server() -> Iterator[FakeIdP]:
    idp = FakeIdP()
    with serve(idp.app()) as url:
        idp.url = url
        yield idp


@pytest.fixture
def fake_idp(fake_idp_server: FakeIdP, test_keys: IdPKeys) -> FakeIdP:
    fake_idp_server.issuer = fake_idp_server.url
    fake_idp_server.keys = [jwk_of(test_keys.rsa, "rsa-1", "RS256"), jwk_of(test_keys.ec, "ec-1", "ES256")]
    fake_idp_server.extra = {}
    return fake_idp_server
