"""Secrets never reach the audit file, whoever passes them to emit()."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit import verify_paths
from gateway.audit.redact import REDACTED, Redactor, is_secret_key, redact_text

from .audit_helpers import records_of

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"


@pytest.mark.parametrize(
    "name",
    ["password", "Password", "new_password", "token", "access_token", "id-token", "secret", "client_secret",
     "cookie", "Set-Cookie", "set_cookie", "authorization", "Proxy-Authorization", "csrf", "csrf_token",
     "X-CSRF-Token", "api_key", "apiKey", "private_key", "credentials", "passphrase"],
)  # fmt: skip
def test_secret_key_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize("name", ["user", "path", "rule_id", "auth_method", "session_id", "previous_chain", "method", "keyboard"])
def test_ordinary_key_names(name: str) -> None:
    assert not is_secret_key(name)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {JWT}", JWT),
        ("bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
        ("Basic YWxpY2U6aHVudGVyMg==", "YWxpY2U6aHVudGVyMg=="),
        (f"/reset/{JWT}", JWT),
        ("/login?next=/&password=hunter2&x=1", "hunter2"),
        ("callback?code=abc&access_token=tok-123456&state=s", "tok-123456"),
        ("Cookie: session=abcdef; theme=dark", "abcdef"),
        ("set-cookie: __Host-toolgate=signedvalue.abc; HttpOnly", "signedvalue"),
        ("csrf_token=8f14e45fceea167a5a36dedd4bea2543", "8f14e45fceea167a5a36dedd4bea2543"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("aws AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
    ],
)
def test_secret_looking_text_is_masked(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert "REDACTED" in out


@pytest.mark.parametrize(
    "text",
    [
        "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/121.0",
        "/sales/region_emea",
        "invalid password",
        "token expired",
        "matched rule sales-employees",
        "alice@example.com",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_processor_masks_nested_details_and_free_text() -> None:
    r = Redactor()
    rec = {
        "event": {"action": "auth.login", "reason": f"upstream said Bearer {JWT}"},
        "url": {"path": f"/x/{JWT}"},
        "user_agent": {"original": "curl/8 token=abcdefgh12345"},
        "user": {"name": "bob", "email": "bob@example.com"},
        "gateway": {
            "details": {
                "headers": {"Authorization": "Bearer x", "Cookie": "a=b", "accept": "text/html"},
                "form": [{"username": "bob", "password": "hunter2"}, {"csrf_token": "t0k"}],
                "note": "fine",
                "secret": {"nested": "whole value masked"},
            }
        },
    }
    out = r(None, "emit", rec)
    d = out["gateway"]["details"]
    assert d["headers"] == {"Authorization": REDACTED, "Cookie": REDACTED, "accept": "text/html"}
    assert d["form"] == [{"username": "bob", "password": REDACTED}, {"csrf_token": REDACTED}]
    assert d["secret"] == REDACTED
    assert d["note"] == "fine"
    assert JWT not in out["event"]["reason"] and JWT not in out["url"]["path"]
    assert "abcdefgh12345" not in out["user_agent"]["original"]
    assert out["user"] == {"name": "bob", "email": "bob@example.com"}


def test_no_secret_reaches_the_file(make_trail, audit_dir: Path, key: bytes) -> None:
    """End to end: secrets passed by mistake, in every way a caller could, are not on disk."""
    t = make_trail()
    t.emit(
        "auth.login",
        outcome="failure",
        user="bob",
        reason=f"rejected Authorization: Bearer {JWT}",
        path="/auth/login?password=hunter2",
        password="hunter2",  # not a conventions field: lands in details, masked by name
        token="tok_live_0123456789",
        details={"cookie": "session=s3cr3t-cookie", "headers": {"x-csrf-token": "csrf-abcdef"}},
    )
    assert t.close()
    raw = (audit_dir / "audit.jsonl").read_bytes()
    for secret in (b"hunter2", JWT.encode(), b"tok_live_0123456789", b"s3cr3t-cookie", b"csrf-abcdef"):
        assert secret not in raw, secret
    rec = records_of(audit_dir / "audit.jsonl")[0]
    assert rec["gateway"]["details"]["password"] == REDACTED
    # redaction happens before the chain: the file still verifies
    assert verify_paths([audit_dir], key).ok
