"""The rule index: what a decision reads does not depend on rules that cannot apply."""

from __future__ import annotations

import random

from gateway.policy import Policy, Request, compile_sources

from .conftest import MONDAY_10

N_TOOLS = 10
Spec = tuple[str, str, list[str], str | None]  # id, effect, groups, path prefix (None: no path)


def _rules(specs: list[Spec]) -> str:
    out = []
    for rid, effect, groups, path in specs:
        quoted = ", ".join(f'"{g}"' for g in groups)
        out.append(f'[[rule]]\nid = "{rid}"\neffect = "{effect}"\ngroups = [{quoted}]\n')
        if path is not None:
            out.append(f'paths = ["{path}"]\n')
    return "\n".join(out)


def _related() -> list[Spec]:
    """Three rules per tool /t0../t9, groups g0..g9, a deny among them."""
    rng = random.Random(1)
    return [
        (f"rel{t}-{i}", "deny" if i == 2 and t % 3 == 0 else "allow", [f"g{rng.randrange(10)}"], f"/t{t}/**")
        for t in range(N_TOOLS)
        for i in range(3)
    ]


def _unrelated(k: int) -> list[Spec]:
    """Rules no request below can match, placed where a naive index would still read them:
    under the requests' path prefixes for other groups, and for the requests' groups under
    other prefixes."""
    out: list[Spec] = []
    for i in range(k):
        effect = "deny" if i % 7 == 0 else "allow"
        if i % 2:
            out.append((f"un{i}", effect, [f"other{i % 97}"], f"/t{i % N_TOOLS}/**"))
        else:
            out.append((f"un{i}", effect, [f"g{i // 2 % 10}"], f"/u{i}/**"))
    return out


def _policy(k: int) -> Policy:
    # Unrelated rules first: they also shift the file order (and so every rank) of the related ones.
    return compile_sources({"p.toml": _rules(_unrelated(k) + _related())}, cache_size=0)


def _requests() -> list[Request]:
    rng = random.Random(2)
    return [
        Request(user=f"u{i}", groups=rng.sample([f"g{g}" for g in range(10)], rng.randint(1, 3)),
                path=f"/t{rng.randrange(N_TOOLS)}/page{rng.randrange(5)}", at=MONDAY_10)
        for i in range(300)
    ]


def test_rules_read_per_decision_do_not_grow_with_unrelated_rules() -> None:
    requests = _requests()
    related = {rid for rid, *_ in _related()}
    read: dict[int, list[set[str]]] = {}
    for k in (500, 5000):
        p = _policy(k)
        assert len(p.rules) == len(related) + k
        read[k] = [{c.id for c in p.candidates(r)} for r in requests]
        for r, got in zip(requests, read[k]):
            assert got <= related, r  # an unrelated rule is never even looked at
            for rule in map(p.rule, got):
                # read only through a condition the request meets: its path or one of its groups
                assert rule.groups & r.groups or rule.paths[0].matches(r.path), (r, rule)  # type: ignore[union-attr,operator,index]
            assert p.decide(r) == p.decide_linear(r), r
    # ten times the rules, the very same rules read for every request
    assert read[500] == read[5000]


def test_several_groups_and_buckets_pick_the_first_deny_else_the_first_allow() -> None:
    """Users in several groups reach several entries of one trie node, and group-wide
    rules besides; file order across all of them must still decide."""
    rng = random.Random(3)
    groups = [f"g{g}" for g in range(12)]
    specs: list[Spec] = []
    for i in range(600):
        effect = "deny" if rng.random() < 0.1 else "allow"
        # a few group-wide rules (no path) land in group buckets, next to the path trie
        path = None if rng.random() < 0.03 else f"/t{rng.randrange(40)}/**"
        specs.append((f"r{i}", effect, rng.sample(groups, rng.randint(1, 2)), path))
    p = compile_sources({"p.toml": _rules(specs)}, cache_size=0)
    seen_rule_ids = set()
    for _ in range(1500):
        r = Request(user="u", groups=rng.sample(groups + ["other"], rng.randint(1, 4)),
                    path=f"/t{rng.randrange(42)}/x", at=MONDAY_10)
        expected = p.decide_linear(r)
        assert p.decide(r) == expected, r
        seen_rule_ids.add(expected.rule_id)
    # the sample exercised allows, denies and the default
    assert "default-deny" in seen_rule_ids
    assert {p.rule(i).effect for i in seen_rule_ids if p.rule(i)} == {"allow", "deny"}  # type: ignore[union-attr]
