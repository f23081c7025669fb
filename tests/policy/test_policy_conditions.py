"""Each condition type, AND/OR semantics, deny-overrides and default deny."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from gateway.policy import DEFAULT_DENY, Policy, Request, compile_sources
from gateway.policy.model import parse_ip

from .conftest import MONDAY_10, policy_of, req


def allow_rule(cond: str) -> Policy:
    return policy_of(f'[[rule]]\nid = "r"\neffect = "allow"\n{cond}\n')


CASES = [
    # (condition TOML, request kwargs, expected match)
    ('tools = ["sales"]', dict(user="u", path="/sales"), True),
    ('tools = ["sales"]', dict(user="u", tool="sales"), True),
    ('tools = ["sales"]', dict(user="u", path="/ops"), False),
    ('tools = ["sales"]', dict(user="u", path="/sales/x"), False),
    ('tools = ["sales", "ops"]', dict(user="u", path="/OPS/"), True),
    ('tools = ["*"]', dict(user="u", path="/live"), True),
    ('tools = ["*"]', dict(user="u", path="/api/whoami"), False),
    ('paths = ["/api/v1/**"]', dict(user="u", path="/api/v1/a/b"), True),
    ('paths = ["/api/v1/**"]', dict(user="u", path="/api/v1"), True),
    ('paths = ["/api/v1/**"]', dict(user="u", path="/api/v10"), False),
    ('paths = ["/docs/*", "/x"]', dict(user="u", path="/docs/a"), True),
    ('paths = ["/docs/*", "/x"]', dict(user="u", path="/x"), True),
    ('paths = ["/docs/*", "/x"]', dict(user="u", path="/docs/a/b"), False),
    ('paths = ["/Docs/**"]', dict(user="u", path="/DOCS/A"), True),
    ('methods = ["GET", "head"]', dict(user="u", method="head"), True),
    ('methods = ["GET"]', dict(user="u", method="POST"), False),
    ('users = ["Alice"]', dict(user="alice"), True),
    ('users = ["alice"]', dict(user="ALICE"), True),
    ('users = ["alice"]', dict(user="bob"), False),
    ('groups = ["a", "b"]', dict(user="u", groups=["x", "b"]), True),
    ('groups = ["a"]', dict(user="u", groups=["A"]), True),
    ('groups = ["a"]', dict(user="u", groups=["x"]), False),
    ('groups = ["a"]', dict(user="u"), False),
    ('email_domains = ["example.com"]', dict(user="u", email="U@Example.COM"), True),
    ('email_domains = ["example.com"]', dict(user="u", email="u@eu.example.com"), False),
    ('email_domains = ["example.com"]', dict(user="u", email="u@example.com.evil.net"), False),
    ('email_domains = ["example.com"]', dict(user="u", email="u@evil@example.com"), False),
    ('email_domains = ["example.com"]', dict(user="u"), False),
    ('email_domains = ["*.example.com"]', dict(user="u", email="u@eu.example.com"), True),
    ('email_domains = ["*.example.com"]', dict(user="u", email="u@example.com"), False),
    ('email_domains = ["*.example.com"]', dict(user="u", email="u@badexample.com"), False),
    ('networks = ["10.0.0.0/8"]', dict(user="u", ip="10.2.3.4"), True),
    ('networks = ["10.0.0.0/8"]', dict(user="u", ip="::ffff:10.2.3.4"), True),
    ('networks = ["10.0.0.0/8"]', dict(user="u", ip="11.0.0.1"), False),
    ('networks = ["10.0.0.0/8"]', dict(user="u"), False),
    ('networks = ["10.0.0.0/8", "2001:db8::/32"]', dict(user="u", ip="2001:db8::1"), True),
    ('time = { days = ["mon-fri"] }', dict(user="u"), True),
    ('time = { days = ["sat-sun"] }', dict(user="u"), False),
    ('time = { days = ["fri-mon"] }', dict(user="u"), True),  # wrapping range includes monday
    ('time = { hours = "09:00-17:00" }', dict(user="u"), True),
    ('time = { hours = "10:01-17:00" }', dict(user="u"), False),
    ('time = { hours = "08:00-10:00" }', dict(user="u"), False),  # end exclusive
    ('time = { hours = "22:00-11:00" }', dict(user="u"), True),   # wraps midnight
    ('time = { hours = "22:00-06:00" }', dict(user="u"), False),
    # 10:00 UTC is 11:00 in Berlin and 05:00 in New York (January)
    ('time = { hours = "11:00-12:00", tz = "Europe/Berlin" }', dict(user="u"), True),
    ('time = { hours = "10:00-11:00", tz = "Europe/Berlin" }', dict(user="u"), False),
    ('time = { days = ["mon"], hours = "00:00-06:00", tz = "America/New_York" }', dict(user="u"), True),
    ('time = { hours = "00:00-24:00" }', dict(user="u"), True),
    ('authenticated = false\npaths = ["/pub/**"]', dict(path="/pub/a"), True),
    ('authenticated = false\npaths = ["/pub/**"]', dict(user="u", path="/pub/a"), True),
    ('paths = ["/pub/**"]', dict(path="/pub/a"), False),  # default: signed-in only
    ('', dict(path="/x"), False),                          # anonymous, unconditional allow
    ('', dict(user="u", path="/x"), True),
]


@pytest.mark.parametrize(("cond", "kw", "expected"), CASES)
def test_condition(cond: str, kw: dict, expected: bool) -> None:
    policy = allow_rule(cond)
    r = req(**kw)
    d = policy.decide(r)
    assert d.allowed is expected
    assert d.rule_id == ("r" if expected else DEFAULT_DENY)
    assert policy.decide_linear(r) == d
    assert (policy.rules[0].why_not(r) is None) is expected


def test_conditions_and_together_list_items_or() -> None:
    p = allow_rule('tools = ["sales"]\ngroups = ["a", "b"]\nmethods = ["GET"]')
    assert p.decide(req(user="u", groups=["b"], tool="sales")).allowed
    assert not p.decide(req(user="u", groups=["b"], tool="sales", method="POST")).allowed
    assert not p.decide(req(user="u", groups=["c"], tool="sales")).allowed
    assert not p.decide(req(user="u", groups=["a"], tool="ops")).allowed


def test_users_and_groups_both_must_hold() -> None:
    p = allow_rule('users = ["alice"]\ngroups = ["admins"]')
    assert p.decide(req(user="alice", groups=["admins"])).allowed
    assert not p.decide(req(user="alice")).allowed
    assert not p.decide(req(user="bob", groups=["admins"])).allowed


def test_default_deny() -> None:
    p = allow_rule('tools = ["sales"]')
    d = p.decide(req(user="u", path="/ops"))
    assert (d.allowed, d.effect, d.rule_id) == (False, "deny", DEFAULT_DENY)
    assert d.policy_version == p.version
    assert "default deny" in d.reason


def test_deny_overrides_allow_in_any_order_and_file() -> None:
    deny = '[[rule]]\nid = "d"\neffect = "deny"\ntools = ["sales"]\nnetworks = ["10.0.0.0/8"]\n'
    allow = '[[rule]]\nid = "a"\neffect = "allow"\ntools = ["sales"]\n'
    for files in ({"a_first": allow, "b_second": deny}, {"a_first": deny, "b_second": allow}):
        p = policy_of(**files)
        d = p.decide(req(user="u", tool="sales", ip="10.0.0.1"))
        assert (d.allowed, d.rule_id, d.effect) == (False, "d", "deny")
        d = p.decide(req(user="u", tool="sales", ip="192.0.2.1"))
        assert (d.allowed, d.rule_id) == (True, "a")


def test_first_matching_rule_is_named() -> None:
    p = policy_of(
        '[[rule]]\nid = "a1"\neffect = "allow"\ngroups = ["g"]\n',
        '[[rule]]\nid = "a2"\neffect = "allow"\nusers = ["u"]\n',
        '[[rule]]\nid = "d1"\neffect = "deny"\nmethods = ["POST"]\n',
        '[[rule]]\nid = "d2"\neffect = "deny"\nusers = ["u"]\nmethods = ["POST"]\n',
    )
    assert p.decide(req(user="u", groups=["g"])).rule_id == "a1"
    assert p.decide(req(user="u", groups=["g"], method="POST")).rule_id == "d1"


def test_every_spelling_is_decided_as_the_same_page() -> None:
    p = policy_of('[[rule]]\nid = "aud"\neffect = "allow"\ntools = ["audit"]\ngroups = ["auditors"]\n')
    for raw in ["/AUDIT", "//audit", "/%61udit", "/sales/../audit", "/./audit/", "\\audit"]:
        assert p.decide(req(user="x", groups=["auditors"], path=raw)).rule_id == "aud"
        assert not p.decide(req(user="x", groups=["employees"], path=raw)).allowed


def test_request_tool_must_match_path() -> None:
    with pytest.raises(ValueError):
        Request(user="u", tool="audit", path="/_stcore/stream")
    with pytest.raises(ValueError):
        Request(user="u", tool="nope")
    with pytest.raises(ValueError):
        Request(user="u")
    with pytest.raises(ValueError):
        Request(user="u", path="/", at=datetime(2025, 1, 1))  # naive time
    with pytest.raises(ValueError):
        Request(user="u", path="/", ip="not-an-ip")
    with pytest.raises(TypeError):
        Request(user="u", path="/", groups="admins")


def test_parse_ip_unwraps_mapped() -> None:
    assert str(parse_ip("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_ip("") is None


def test_cache_is_keyed_on_every_field_and_minute() -> None:
    src = {"p.toml": '[[rule]]\nid = "t"\neffect = "allow"\ntime = { hours = "10:00-10:01" }\n'
                     '[[rule]]\nid = "n"\neffect = "deny"\nnetworks = ["10.0.0.0/8"]\n'}
    p = compile_sources(src, cache_size=64)
    at = MONDAY_10
    assert p.decide(req(user="u", at=at)).allowed
    assert not p.decide(req(user="u", at=at + timedelta(minutes=1))).allowed  # not served from cache
    assert not p.decide(req(user="u", at=at, ip="10.0.0.1")).allowed
    assert p.decide(req(user="u", at=at, ip="192.0.2.1")).allowed
    assert not p.decide(req(at=at)).allowed  # anonymous differs from signed-in


def test_cache_is_bounded() -> None:
    p = compile_sources({"p.toml": '[[rule]]\nid = "a"\neffect = "allow"\n'}, cache_size=8)
    for i in range(50):
        p.decide(req(user=f"u{i}"))
    assert len(p._cache) <= 8  # type: ignore[arg-type]


# ---------------------------------------------------------------- index == reference scan

def _q(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


GROUPS = [f"g{i}" for i in range(6)]
USERS = [f"u{i}" for i in range(5)]
TOOL_IDS = ["home", "sales", "ops", "policies", "audit", "live"]
PREFIXES = ["/api", "/api/a", "/docs", "/_stcore", "/x/y", "/sales"]


def _random_policy(rng: random.Random, n: int) -> tuple[Policy, list[str]]:
    """Rules drawn from a small vocabulary so that buckets overlap, split and repeat."""
    lines = []
    for i in range(n):
        anon = rng.random() < 0.08
        lines.append(f'[[rule]]\nid = "r{i}"\neffect = "{"deny" if rng.random() < 0.3 else "allow"}"')
        if anon:
            lines.append("authenticated = false")
        else:
            if rng.random() < 0.5:
                lines.append(f"groups = {_q(rng.sample(GROUPS, rng.randint(1, 3)))}")
            if rng.random() < 0.25:
                lines.append(f"users = {_q(rng.sample(USERS, rng.randint(1, 2)))}")
            if rng.random() < 0.1:
                lines.append('email_domains = ["example.com", "*.corp.example"]')
        choice = rng.random()
        if choice < 0.3 or (anon and choice < 0.5):
            lines.append(f"tools = {_q(rng.sample(TOOL_IDS, rng.randint(1, 2)))}")
        elif choice < 0.38:
            lines.append('tools = ["*"]')
        if rng.random() < 0.6 or (anon and "tools" not in lines[-1]):
            pats = set()
            for _ in range(rng.randint(1, 3)):
                pre = rng.choice(PREFIXES)
                pats.add(pre + rng.choice(["/**", "", "/*", "/q/*/r", "/**/deep"]))
            if rng.random() < 0.05:
                pats.add("/**")
            lines.append(f"paths = {_q(sorted(pats))}")
        if rng.random() < 0.2:
            lines.append(f"methods = {_q(rng.sample(['GET', 'POST', 'DELETE'], rng.randint(1, 2)))}")
        if rng.random() < 0.12:
            lines.append('networks = ["10.0.0.0/8"]')
        if rng.random() < 0.08:
            lines.append('time = { hours = "09:00-12:00" }')
        lines.append("")
    p = compile_sources({"rand.toml": "\n".join(lines)}, cache_size=0)
    paths = [pre + suf for pre in PREFIXES for suf in ["", "/q", "/q/k/r", "/deep", "/a/deep", "/z"]]
    paths += ["/", "/sales", "/ops", "/audit", "/live", "/policies", "/nowhere", "/api/a/b/c"]
    return p, paths


@pytest.mark.parametrize("seed", range(10))
def test_index_agrees_with_full_scan(seed: int) -> None:
    rng = random.Random(seed)
    p, paths = _random_policy(rng, [8, 30, 60, 150, 300][seed % 5])
    for _ in range(1500):
        r = Request(
            user=rng.choice([None, "u0", "u1", "u3", "zed", "u4"]),
            groups=rng.sample(GROUPS + ["other"], rng.randint(0, 3)),
            email=rng.choice([None, "a@example.com", "b@eu.corp.example", "c@else.org"]),
            path=rng.choice(paths),
            method=rng.choice(["GET", "POST", "DELETE"]),
            ip=rng.choice([None, "10.1.1.1", "192.0.2.1"]),
            at=MONDAY_10 + timedelta(hours=rng.randint(-3, 3)),
        )
        expected = p.decide_linear(r)
        assert p.decide(r) == expected, r
        # every rule that matches must be among the index's candidates
        cands = {c.id for c in p.candidates(r)}
        assert {x.id for x in p.rules if x.matches(r)} <= cands, r


def test_fused_matcher_agrees_with_condition_list() -> None:
    rng = random.Random(99)
    p, paths = _random_policy(rng, 120)
    for _ in range(2000):
        r = Request(user=rng.choice([None, "u1", "u2"]), groups=rng.sample(GROUPS, 2), path=rng.choice(paths),
                    method=rng.choice(["GET", "POST"]), ip=rng.choice([None, "10.0.0.1"]), at=MONDAY_10, email="a@example.com")
        for rule in p.rules:
            assert rule.match(r) is (rule.first_failure(r) is None)


def test_index_places_rules_in_narrow_buckets() -> None:
    lines = []
    for i in range(500):
        lines.append(f'[[rule]]\nid = "r{i}"\neffect = "allow"\ngroups = ["g{i % 50}"]\npaths = ["/t{i // 5}/**"]\n')
    p = compile_sources({"big.toml": "\n".join(lines)}, cache_size=0)
    assert p.index_stats["by_path"] == 500
    # /t7/** holds r35..r39 (groups g35..g39): only the group's rule is read
    r = Request(user="u", groups=["g36"], path="/t7/page", at=MONDAY_10)
    assert [c.id for c in p.candidates(r)] == ["r36"]
    assert p.decide(r).rule_id == "r36"
    assert p.candidates(Request(user="u", groups=["g3"], path="/t7/page", at=MONDAY_10)) == []


def test_cached_decisions_equal_uncached_for_every_field() -> None:
    rng = random.Random(5)
    cached_src = _random_policy(random.Random(3), 120)[0].sources
    cached = compile_sources(cached_src, cache_size=50)  # small: exercises eviction too
    plain = compile_sources(cached_src, cache_size=0)
    _, paths = _random_policy(random.Random(3), 1)
    for _ in range(3000):
        r = Request(
            user=rng.choice([None, "u0", "u1"]),
            groups=rng.sample(GROUPS, rng.randint(0, 2)),
            email=rng.choice([None, "a@example.com", "b@else.org"]),
            path=rng.choice(paths),
            method=rng.choice(["GET", "POST", "DELETE"]),
            ip=rng.choice([None, "10.1.1.1", "192.0.2.1"]),
            at=MONDAY_10 + timedelta(minutes=rng.choice([0, 1, 90, 150])),
        )
        assert cached.decide(r) == plain.decide(r), r


def test_from_identity() -> None:
    from gateway.context import Identity

    ident = Identity(user="Alice", email="Alice@Example.com", groups=frozenset({"Employees"}))
    r = Request.from_identity(ident, path="/Sales/", method="get", ip="::ffff:10.0.0.1", at=MONDAY_10)
    assert (r.user, r.email, r.groups, r.path, r.tool, r.method, str(r.ip)) == (
        "alice", "alice@example.com", frozenset({"employees"}), "/sales", "sales", "GET", "10.0.0.1")
    anon = Request.from_identity(None, tool="audit", at=MONDAY_10)
    assert anon.user is None and not anon.authenticated and anon.path == "/audit"


def test_decision_reason_names_rule_and_description() -> None:
    p = policy_of('[[rule]]\nid = "x"\neffect = "allow"\ndescription = "Because"\ntools = ["home"]\n')
    d = p.decide(req(user="u", tool="home"))
    assert d == type(d)(True, "allow", "x", "allowed by rule x: Because", p.version)
