"""explain(): the decision, the deciding rule, and why every other rule did not count."""

from __future__ import annotations

from gateway.policy import DEFAULT_DENY, compile_sources, explain
from gateway.policy.lint import lint

from .conftest import MONDAY_10, policy_of, req

POLICY = """
[meta]
contact = { sales = "sales-ops@example.com" }

[[rule]]
id = "sales-emp"
effect = "allow"
description = "Sales for employees"
tools = ["sales"]
groups = ["employees"]

[[rule]]
id = "sales-any"
effect = "allow"
tools = ["sales"]
email_domains = ["example.com"]

[[rule]]
id = "guest-deny"
effect = "deny"
tools = ["*"]
networks = ["10.99.0.0/16"]

[[rule]]
id = "weekend"
effect = "deny"
paths = ["/api/**"]
time = { days = ["sat-sun"], tz = "Europe/Berlin" }

[[rule]]
id = "writes"
effect = "allow"
paths = ["/api/**"]
methods = ["POST"]
"""


def test_explain_allow_lists_every_rule() -> None:
    p = policy_of(POLICY)
    r = req(user="alice", groups=["employees"], email="alice@example.com", tool="sales", ip="10.1.1.1")
    e = explain(p, r)
    assert e.decision == p.decide(r)
    assert e.decision.allowed and e.decision.rule_id == "sales-emp"
    assert e.deciding_rule is not None and e.deciding_rule.rule_id == "sales-emp" and e.deciding_rule.line == 5
    by_id = {v.rule_id: v for v in e.rules}
    assert [v.rule_id for v in e.rules] == ["sales-emp", "sales-any", "guest-deny", "weekend", "writes"]
    assert by_id["sales-any"].matched and "earlier allow rule sales-emp" in by_id["sales-any"].reason
    assert by_id["guest-deny"].reason == "no match: client address 10.1.1.1 is in none of 10.99.0.0/16"
    assert by_id["weekend"].reason == "no match: path /sales matches none of /api/**"
    assert by_id["writes"].reason == "no match: path /sales matches none of /api/**"
    text = e.to_text()
    assert "decision: ALLOW" in text and "sales-emp (main.toml:5)" in text


def test_explain_deny_names_the_override_and_first_failing_condition() -> None:
    p = policy_of(POLICY)
    r = req(user="bob", groups=["contractors"], tool="sales", ip="10.99.0.5")
    e = explain(p, r)
    assert not e.decision.allowed and e.decision.rule_id == "guest-deny"
    by_id = {v.rule_id: v for v in e.rules}
    assert by_id["sales-emp"].reason == "no match: user is in none of the groups employees (has contractors)"
    assert by_id["sales-any"].reason == "no match: request has no email address; the rule needs a domain in example.com"
    assert by_id["guest-deny"].deciding and "explicit deny" in by_id["guest-deny"].reason


def test_explain_matched_allow_overridden() -> None:
    p = policy_of(POLICY)
    r = req(user="alice", groups=["employees"], tool="sales", ip="10.99.0.5")
    by_id = {v.rule_id: v for v in explain(p, r).rules}
    assert by_id["sales-emp"].matched and by_id["sales-emp"].reason == "matches, but deny rule guest-deny overrides it"


def test_explain_time_and_method_reasons() -> None:
    p = policy_of(POLICY)
    from datetime import datetime, timezone

    sat = datetime(2025, 1, 11, 9, 0, tzinfo=timezone.utc)
    e = explain(p, req(user="a", path="/api/x", method="POST", at=sat))
    assert e.decision.rule_id == "weekend"
    e = explain(p, req(user="a", path="/api/x", method="GET", at=MONDAY_10))
    by_id = {v.rule_id: v for v in e.rules}
    assert by_id["weekend"].reason == "no match: mon 2025-01-06 11:00 Europe/Berlin is not on sat-sun"
    assert by_id["writes"].reason == "no match: method GET is not one of POST"
    assert e.decision.rule_id == DEFAULT_DENY and e.deciding_rule is None
    assert "(no rule matched)" in e.to_text()


def test_explain_anonymous_and_to_dict() -> None:
    p = policy_of(POLICY)
    e = explain(p, req(tool="sales"))
    assert all(v.reason.startswith("no match: request is anonymous") for v in e.rules)
    d = e.to_dict()
    assert d["allowed"] is False and d["rule_id"] == DEFAULT_DENY and len(d["rules"]) == 5


def test_denial_message_names_tool_and_contact_only() -> None:
    p = policy_of(POLICY)
    msg = p.denial_message(req(user="bob", groups=["contractors"], tool="sales"))
    assert msg == "You have not been granted access to Sales. To request access, contact sales-ops@example.com."
    assert "guest" not in msg and "employees" not in msg and "rule" not in msg
    # no [meta] contact: the tool registry's contact
    assert "sre@example.com" in p.denial_message(req(user="bob", tool="ops"))
    # not a tool page: the caller's default
    assert p.denial_message(req(user="bob", path="/api/x"), default_contact="it@example.com").endswith("contact it@example.com.")


def test_meta_star_contact_is_the_fallback() -> None:
    p = compile_sources({"a.toml": '[meta]\ncontact = { "*" = "helpdesk@example.com" }\n[[rule]]\nid = "x"\neffect = "deny"\nusers = ["z"]\n'})
    assert "helpdesk@example.com" in p.denial_message(req(user="bob", path="/nowhere"))
    assert "it-helpdesk" not in p.denial_message(req(user="bob", tool="home"))  # home has no registry contact -> "*"
    assert "helpdesk@example.com" in p.denial_message(req(user="bob", tool="home"))


def test_allowed_tools() -> None:
    p = policy_of(POLICY)
    assert [t.id for t in p.allowed_tools(user="alice", groups=["employees"], at=MONDAY_10)] == ["sales"]
    assert p.allowed_tools(user="alice", groups=["employees"], ip="10.99.1.1", at=MONDAY_10) == []


# ---------------------------------------------------------------- lint

def _lint(text: str) -> list[str]:
    return [p.message for p in lint(policy_of(text))]


def test_lint_allow_without_conditions() -> None:
    msgs = _lint('[[rule]]\nid = "open"\neffect = "allow"\n')
    assert msgs == ["allow rule 'open' has no conditions: it lets every signed-in user open every path"]


def test_lint_shadowed_by_broader_deny() -> None:
    msgs = _lint(
        '[[rule]]\nid = "a"\neffect = "allow"\ntools = ["audit"]\ngroups = ["auditors"]\n'
        '[[rule]]\nid = "d"\neffect = "deny"\ntools = ["audit", "live"]\n'
    )
    assert msgs == ["allow rule 'a' never takes effect: deny rule 'd' (main.toml:6) matches every request it matches"]


def test_lint_deny_everything_makes_everything_unreachable() -> None:
    msgs = _lint('[[rule]]\nid = "stop"\neffect = "deny"\n[[rule]]\nid = "a"\neffect = "allow"\ntools = ["sales"]\n[[rule]]\nid = "d2"\neffect = "deny"\npaths = ["/x"]\n')
    assert any("deny rule 'stop' has no conditions" in m for m in msgs)
    assert any(m.startswith("allow rule 'a' never takes effect: deny rule 'stop'") for m in msgs)
    assert any(m.startswith("deny rule 'd2' is unreachable: the earlier deny 'stop'") for m in msgs)


def test_lint_redundant_allow_and_no_false_alarms() -> None:
    msgs = _lint(
        '[[rule]]\nid = "broad"\neffect = "allow"\npaths = ["/api/**"]\ngroups = ["g"]\n'
        '[[rule]]\nid = "narrow"\neffect = "allow"\npaths = ["/api/v1/*"]\ngroups = ["g"]\nmethods = ["GET"]\n'
        '[[rule]]\nid = "other"\neffect = "allow"\npaths = ["/api/**"]\ngroups = ["h"]\n'
        '[[rule]]\nid = "netdeny"\neffect = "deny"\npaths = ["/api/**"]\nnetworks = ["10.0.0.0/8"]\n'
    )
    assert msgs == ["allow rule 'narrow' is redundant: 'broad' (main.toml:1) already allows every request it matches"]
