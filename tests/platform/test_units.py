"""The pure parts: alert rules and cooldowns, the CSRF rule, the metrics counters, the settings."""

from __future__ import annotations

import pytest

from gateway.alerts import AlertRules
from gateway.api.csrf import csrf_problem
from gateway.context import Identity, RequestContext
from gateway.metrics import GatewayMetrics
from gateway.settings import AlertSettings, ConfigError, load_settings
from tests.helpers import make_config_dir, write_secret


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def login_failure(user: str, ip: str = "10.0.0.1") -> dict:
    return {"action": "auth.login", "outcome": "failure", "user": user, "client_ip": ip, "reason": "invalid_credentials"}


def test_signin_failures_alert_once_per_window_and_cooldown():
    clock = Clock()
    rules = AlertRules(AlertSettings(signin_failures=3, window_s=60, cooldown_s=300), clock=clock)
    assert rules.feed(login_failure("bob", "10.0.0.1")) == []
    assert rules.feed(login_failure("bob", "10.0.0.2")) == []
    alerts = rules.feed(login_failure("bob", "10.0.0.3"))
    assert [(a.kind, a.details["scope"]) for a in alerts] == [("signin_failures", "user")]
    assert rules.feed(login_failure("bob")) == []  # cooling down
    clock.t += 301
    assert rules.feed(login_failure("bob")) == []  # the old failures left the window
    assert rules.feed(login_failure("bob")) == []
    assert len(rules.feed(login_failure("bob"))) == 2  # bob again, and now address 10.0.0.1 too (3 within 60 s)


def test_failures_spread_out_do_not_alert():
    clock = Clock()
    rules = AlertRules(AlertSettings(signin_failures=3, window_s=60), clock=clock)
    for _ in range(10):
        assert rules.feed(login_failure("carol", ip="")) == []
        clock.t += 31


def test_denied_burst_counts_denials_of_one_user_only():
    rules = AlertRules(AlertSettings(denied_burst=3, window_s=60), clock=Clock())
    allow = {"action": "http.request", "decision": "allow", "user": "dave"}
    deny = {"action": "http.request", "decision": "deny", "user": "dave", "path": "/audit"}
    anon = {"action": "http.request", "decision": "deny", "path": "/audit"}
    for e in (allow, deny, anon, anon, anon, deny, allow, {"action": "mcp.call", "decision": "deny", "user": "erin"}):
        assert rules.feed(e) == []
    [alert] = rules.feed({"action": "page.denied", "user": "dave", "path": "/policies"})
    assert alert.kind == "denied_burst" and alert.details["denied"] == 3 and alert.details["last_path"] == "/policies"


def test_policy_changes_alert_once_per_version_with_the_author_and_can_be_off():
    rules = AlertRules(AlertSettings(), clock=Clock())
    # An editor save: the store reloads (v2) first, then the editor reports who changed what.
    [held] = rules.feed({"action": "policy.reloaded", "policy_version": "v2", "details": {"old_version": "v1"}})
    assert held.defer_s > 0 and not rules.superseded(held)
    [a] = rules.feed({"action": "policy.changed", "outcome": "success", "user": "sam", "policy_version": "v2",
                      "details": {"file": "10-tools.toml", "new_version": "10-tools.toml@v7"}})  # fmt: skip
    assert a.kind == "policy_change" and "by sam" in a.summary and a.details["file"] == "10-tools.toml"
    assert rules.superseded(held)  # so only the one with the author goes out
    assert rules.feed({"action": "policy.reloaded", "policy_version": "v2"}) == []
    # a refused edit changed nothing
    assert rules.feed({"action": "policy.changed", "outcome": "failure", "user": "alice", "policy_version": "v2"}) == []
    # files edited on disk: the reload alert stands
    [disk] = rules.feed({"action": "policy.reloaded", "policy_version": "v3"})
    assert "on disk" in disk.summary and not rules.superseded(disk)
    [b] = rules.feed({"action": "policy.reload_rejected", "policy_version": "v3", "details": {"rejected_version": "v4"}})
    assert b.severity == "warning" and "v4" in b.summary
    off = AlertRules(AlertSettings(policy_changes=False), clock=Clock())
    assert off.feed({"action": "policy.changed", "outcome": "success", "user": "sam", "policy_version": "v9"}) == []


def _scope(method: str, identity: Identity | None, **headers: str) -> dict:
    ctx = RequestContext(request_id="r", client_ip="127.0.0.1", scheme="https", host="tools.example.com")
    ctx.identity = identity
    return {"type": "http", "method": method, "gateway": ctx,
            "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}  # fmt: skip


@pytest.mark.parametrize(
    ("method", "auth", "headers", "refused"),
    [
        ("GET", "password", {}, False),
        ("POST", "password", {}, True),
        ("POST", "oidc", {"x_requested_with": "x"}, False),
        ("POST", "upstream", {}, True),
        ("POST", "password", {"x_requested_with": "x", "origin": "https://evil.example"}, True),
        ("POST", "password", {"x_requested_with": "x", "origin": "https://tools.example.com"}, False),
        ("POST", "password", {"x_requested_with": "x", "origin": "null"}, False),
        ("DELETE", "password", {"x_requested_with": "x", "sec_fetch_site": "same-site"}, True),
        ("POST", "token", {}, False),
    ],
)
def test_csrf_rule(method, auth, headers, refused):
    identity = Identity(user="u", auth_method=auth)
    assert (csrf_problem(_scope(method, identity, **headers)) is not None) is refused


def test_metrics_counters():
    m = GatewayMetrics()
    m.observe({"action": "http.request", "status": 200, "tool": "sales", "decision": "allow", "rule_id": "r1"})
    m.observe({"action": "http.request", "status": 404, "decision": "not_found"})
    m.observe({"action": "auth.login", "outcome": "failure", "auth_method": "password", "reason": "invalid_credentials"})
    m.observe({"action": "mcp.call", "outcome": "success", "decision": "allow", "rule_id": "r2", "details": {"mcp_tool": "x"}})
    snap = m.snapshot()
    assert snap["requests"] == {("200", "sales"): 1, ("404", "none"): 1}
    assert snap["decisions"] == {("allow", "r1"): 1, ("not_found", "none"): 1, ("allow", "r2"): 1}
    assert snap["signins"] == {("failure", "password", "invalid_credentials"): 1}
    assert snap["mcp_calls"] == {("x", "success"): 1}


def test_settings_sections(tmp_path):
    cfg = make_config_dir(tmp_path, sections_extra='[platform]\ndocs_public = true\nmetrics_networks = ["10.0.0.0/8"]\n'
                          '[alerts]\nwebhook_url = "https://hooks.example.com/x"\n')  # fmt: skip
    s = load_settings(cfg, environ={"GATEWAY_ALERTS_DENIED_BURST": "7"})
    assert s.platform.docs_public and str(s.platform.metrics_networks[0]) == "10.0.0.0/8"
    assert s.alerts.webhook_url == "https://hooks.example.com/x" and s.alerts.denied_burst == 7
    assert load_settings(make_config_dir(tmp_path / "d")).platform.api is True


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('[alerts]\nsmtp_host = "mail"\n', "alerts.email_to"),
        ('[alerts]\nsmtp_security = "ssl3"\n', "alerts.smtp_security"),
        ('[alerts]\nwebhook_url = "ftp://x"\n', "alerts.webhook_url"),
        ('[alerts]\nwebhook_secret_file = "secrets/open.key"\n', "alerts.webhook_secret_file"),
        ('[platform]\nmetrics_networks = ["10.0.0.1/8"]\n', "platform.metrics_networks"),
        ('[platform]\nintegrity_check_interval_s = -1\n', "platform.integrity_check_interval_s"),
        ('[platform]\nmcp_enabled = true\n', "platform.mcp_enabled"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, extra, key):
    open_key = tmp_path / "secrets" / "open.key"
    write_secret(open_key, "k\n")
    open_key.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        load_settings(make_config_dir(tmp_path, sections_extra=extra))
    assert err.value.key == key


async def test_the_session_sweep_forgets_expired_sessions(tmp_path):
    import time

    from gateway.auth.sessions import SessionRecord
    from gateway.background import BackgroundFeature
    from gateway.services import build_services

    services = build_services(load_settings(make_config_dir(tmp_path)))
    store = services.identity.sessions.store
    now = time.time()
    old = SessionRecord("old", "alice", "", ("employees",), "password", now - 50_000, now - 50_000, now - 6_800)
    idle = SessionRecord("idle", "bob", "", (), "password", now - 4_000, now - 4_000, now + 40_000)
    live = SessionRecord("live", "carol", "", (), "password", now - 10, now - 10, now + 43_000)
    for rec in (old, idle, live):
        await store.create(rec)
    job = BackgroundFeature(services)
    await job.sweep_sessions()
    assert await store.count() == 1 and await store.get("live") is not None
    assert job.swept == 2


def test_a_spray_of_user_names_does_not_become_a_spray_of_alerts():
    rules = AlertRules(AlertSettings(signin_failures=2, window_s=60), clock=Clock())
    sent = []
    for i in range(50):
        for _ in range(2):
            sent += rules.feed(login_failure(f"user{i}", ip=""))
    assert len(sent) == 10 and rules.suppressed["signin_failures"] == 40


def test_a_user_name_cannot_break_the_alert_mail():
    from gateway.alerts import SmtpNotifier

    rules = AlertRules(AlertSettings(signin_failures=1), clock=Clock())
    [alert] = rules.feed(login_failure("evil\r\nBcc: victim@example.com", ip=""))
    msg = SmtpNotifier(AlertSettings(smtp_host="mail", email_to=("sec@example.com",))).message(alert, alert.as_dict("http://gw"))
    assert "\n" not in msg["Subject"] and msg["Bcc"] is None
    assert "evil  Bcc: victim@example.com" in msg["Subject"]
