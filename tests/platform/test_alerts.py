"""Alerts through a real gateway to a real local SMTP server (aiosmtpd) and a local webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import re

from tests.platform.conftest import WEBHOOK_SECRET


def failed_sign_in(platform_gw, user: str) -> None:
    c = platform_gw.client()
    form = c.get("/auth/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    r = c.post("/auth/login", data={"username": user, "password": "wrong-password", "csrf_token": token, "next": "/"})
    # 401, or 429 once the sign-in limiter slows the guesser down: a failure either way
    assert r.status_code in (401, 429)


def test_repeated_sign_in_failures_send_an_email(platform_gw, mailbox, hooks):
    for _ in range(3):  # alerts.signin_failures = 3 in this gateway
        failed_sign_in(platform_gw, "mallory")
    mail = mailbox.wait_for(lambda m: "failed sign-ins for user mallory" in m["subject"])
    assert mail["to"] == ["security@example.com"] and mail["from"] == "toolgate@example.com"
    assert mail["subject"].startswith("[Toolgate] warning:")
    assert "failures: 3" in mail["body"] and "wrong-password" not in mail["body"]
    assert mail["headers"]["X-Toolgate-Alert"] == "signin_failures"
    hook = hooks.wait_for(lambda h: h["json"]["kind"] == "signin_failures" and h["json"]["details"]["scope"] == "user"
                          and h["json"]["details"]["user"] == "mallory")  # fmt: skip
    assert hook["json"]["details"]["failures"] == 3
    # and the delivery itself is on the record
    platform_gw.wait_audit(lambda e: e["event"]["action"] == "alert.sent" and e["event"]["outcome"] == "success"
                           and e["gateway"]["details"]["channel"] == "email" and e["gateway"]["details"]["kind"] == "signin_failures")  # fmt: skip


def test_webhook_alerts_are_signed(platform_gw, hooks):
    failed_sign_in(platform_gw, "mallory")  # inside the cooldown: no second alert for mallory
    hook = hooks.wait_for(lambda h: h["json"]["kind"] == "signin_failures")
    ts, sig = hook["headers"]["x-toolgate-timestamp"], hook["headers"]["x-toolgate-signature"]
    expected = hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + hook["body"], hashlib.sha256).hexdigest()
    assert sig == f"sha256={expected}"
    for_mallory = [h for h in hooks.calls if h["json"]["kind"] == "signin_failures" and h["json"]["details"]["scope"] == "user"
                   and h["json"]["details"]["user"] == "mallory"]  # fmt: skip
    assert len(for_mallory) == 1


def test_a_denied_burst_from_one_user_alerts(platform_gw, hooks, mailbox):
    c = platform_gw.client(headers=platform_gw.bearer("burst-user", ["employees"]))
    for _ in range(5):  # alerts.denied_burst = 5
        assert c.get("/audit").status_code == 403
    hook = hooks.wait_for(lambda h: h["json"]["kind"] == "denied_burst" and h["json"]["details"]["user"] == "burst-user")
    assert hook["json"]["details"]["denied"] == 5 and hook["json"]["details"]["last_path"] == "/audit"
    mailbox.wait_for(lambda m: "denied requests from user burst-user" in m["subject"])


def test_a_policy_change_alerts(platform_gw, hooks):
    policy_dir = platform_gw.config.parent / "policies"
    (policy_dir / "95-alert-test.toml").write_text(
        '[[rule]]\nid = "alert-test-rule"\neffect = "deny"\ndescription = "test"\npaths = ["/api/v1/nothing-here"]\n'
    )
    hook = hooks.wait_for(lambda h: h["json"]["kind"] == "policy_change" and h["json"]["details"]["action"] == "policy.reloaded",
                          timeout=15)  # fmt: skip
    assert hook["json"]["details"]["policy_version"] in hook["json"]["summary"]
    # a broken change is rejected, and that is alerted too
    (policy_dir / "96-broken.toml").write_text("[[rule]]\nid = \n")
    try:
        hook = hooks.wait_for(lambda h: h["json"]["kind"] == "policy_change" and "rejected" in h["json"]["summary"], timeout=15)
        assert hook["json"]["severity"] == "warning"
    finally:
        (policy_dir / "96-broken.toml").unlink()
