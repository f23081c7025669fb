"""Impact preview: recorded decisions replayed against a draft, flips grouped by (user, tool)."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Callable

from gateway.audit import AuditTrail
from gateway.policy import Policy, PolicyStore, compile_sources
from gateway.policy.impact import ALLOW_TO_DENY, ANONYMOUS, DENY_TO_ALLOW, replay

from .conftest import Clock


def draft_of(store: PolicyStore, pdir: Path, **replace: tuple[str, str]) -> Policy:
    sources = {p.name: p.read_text() for p in sorted(pdir.glob("*.toml"))}
    for file, (old, new) in replace.items():
        name = file.replace("_", "-") + ".toml"
        assert old in sources[name]
        sources[name] = sources[name].replace(old, new)
    return compile_sources(sources)


def request(trail: AuditTrail, user: str | None, path: str, *, groups=("employees",), tool=None, decision="allow", ip="10.1.2.3", method="GET") -> None:  # type: ignore[no-untyped-def]
    trail.emit("http.request", user=user, groups=list(groups) if user else None, path=path, tool=tool, method=method,
               status=200 if decision == "allow" else 403, decision=decision, client_ip=ip)  # fmt: skip


def closed(trail: AuditTrail) -> None:
    assert trail.close(timeout=5.0)


def test_losing_and_gaining_access_are_counted_per_user_and_tool(make_trail: Callable[..., AuditTrail], store: PolicyStore, pdir: Path, audit_path: Path) -> None:
    trail = make_trail()
    for _ in range(3):
        request(trail, "alice", "/ops", tool="ops")
    request(trail, "alice", "/sales", tool="sales")
    request(trail, "sam", "/ops", groups=("employees", "security"), tool="ops")
    trail.emit("page.denied", outcome="failure", user="alice", groups=["employees"], tool="audit", path="/audit", decision="deny", rule_id="default-deny")
    trail.emit("page.denied", outcome="failure", user="alice", groups=["employees"], tool="audit", path="/audit", decision="deny", rule_id="default-deny")
    closed(trail)

    # Draft: ops for security only; the audit viewer for employees too.
    draft = draft_of(
        store, pdir,
        **{"10_tools": ('tools = ["sales", "ops"]\ngroups = ["employees"]', 'tools = ["sales"]\ngroups = ["employees"]\n\n[[rule]]\nid = "ops-security"\neffect = "allow"\ntools = ["ops"]\ngroups = ["security"]')},
    )  # fmt: skip
    draft = compile_sources({**draft.sources, "10-tools.toml": draft.sources["10-tools.toml"].replace('groups = ["auditors", "security"]', 'groups = ["auditors", "security", "employees"]')})
    rep = replay(draft, store.current, [audit_path.parent], days=1)

    flips = {(f.user, f.target, f.change): f for f in rep.flips}
    assert set(flips) == {("alice", "ops", ALLOW_TO_DENY), ("alice", "audit", DENY_TO_ALLOW)}
    lose = flips[("alice", "ops", ALLOW_TO_DENY)]
    assert lose.count == 3 and lose.rule_now == "dashboards-employees" and lose.rule_draft == "default-deny"
    assert flips[("alice", "audit", DENY_TO_ALLOW)].count == 2
    assert rep.flipped == 5 and rep.replayed == 7 and rep.skipped == 0
    assert rep.flips[0].change == ALLOW_TO_DENY  # losses first: they are what breaks someone's day


def test_an_unchanged_draft_flips_nothing(make_trail: Callable[..., AuditTrail], store: PolicyStore, audit_path: Path) -> None:
    trail = make_trail()
    request(trail, "alice", "/ops", tool="ops")
    request(trail, None, "/", decision="deny")
    closed(trail)
    rep = replay(store.current, store.current, [audit_path.parent], days=1)
    assert rep.flips == [] and rep.replayed == 2


def test_only_the_window_is_replayed(make_trail: Callable[..., AuditTrail], store: PolicyStore, pdir: Path, audit_path: Path) -> None:
    clock = Clock(time.time() - 10 * 86400)
    trail = make_trail(clock=clock)
    request(trail, "alice", "/ops", tool="ops")  # ten days ago
    clock.t = time.time() - 3600
    request(trail, "alice", "/ops", tool="ops")  # an hour ago
    closed(trail)
    draft = draft_of(store, pdir, **{"10_tools": ('tools = ["sales", "ops"]', 'tools = ["sales"]')})
    assert replay(draft, store.current, [audit_path.parent], days=7).flips[0].count == 1
    assert replay(draft, store.current, [audit_path.parent], days=14).flips[0].count == 2


def test_files_last_written_before_the_window_are_not_opened(make_trail: Callable[..., AuditTrail], store: PolicyStore, pdir: Path, audit_path: Path) -> None:
    trail = make_trail()
    request(trail, "alice", "/ops", tool="ops")
    closed(trail)
    old = time.time() - 30 * 86400
    os.utime(audit_path, (old, old))
    os.chmod(audit_path, 0)  # opening it would fail loudly
    try:
        draft = draft_of(store, pdir, **{"10_tools": ('tools = ["sales", "ops"]', 'tools = ["sales"]')})
        rep = replay(draft, store.current, [audit_path.parent], days=7)
    finally:
        os.chmod(audit_path, 0o600)
    assert rep.events == 0 and rep.flips == []


def test_public_routes_and_unreplayable_records_are_left_out(make_trail: Callable[..., AuditTrail], store: PolicyStore, audit_path: Path) -> None:
    trail = make_trail()
    trail.emit("http.request", path="/healthz", method="GET", status=200, decision="none")
    trail.emit("http.request", user="alice", groups=["employees"], path="/a/%2e%2e/%2e%2e/etc", method="GET", status=400, decision="deny")
    trail.emit("auth.login", outcome="success", user="alice")
    request(trail, None, "/ops", decision="deny")
    closed(trail)
    draft = compile_sources({**store.current.sources, "50-open.toml": '[[rule]]\nid = "anon-ops"\neffect = "allow"\nauthenticated = false\ntools = ["ops"]\n'})
    rep = replay(draft, store.current, [audit_path.parent], days=1)
    assert rep.events == 2 and rep.skipped == 1  # "none" and the login are not decisions; the hostile path cannot be asked
    assert [(f.user, f.target, f.change) for f in rep.flips] == [(ANONYMOUS, "ops", DENY_TO_ALLOW)]


def test_paths_outside_tools_are_grouped_by_their_first_segment(make_trail: Callable[..., AuditTrail], store: PolicyStore, audit_path: Path) -> None:
    trail = make_trail()
    request(trail, "alice", "/static/js/a.js")
    request(trail, "alice", "/static/css/b.css")
    closed(trail)
    draft = compile_sources({k: v.replace('"/static/**", ', "") for k, v in store.current.sources.items()})
    rep = replay(draft, store.current, [audit_path.parent], days=1)
    assert [(f.target, f.count) for f in rep.flips] == [("/static/…", 2)]


def test_time_rules_are_asked_at_the_recorded_time(make_trail: Callable[..., AuditTrail], store: PolicyStore, audit_path: Path) -> None:
    # A Saturday, 12:00 UTC, and the following Monday.
    saturday = dt.datetime(2025, 1, 11, 12, 0, tzinfo=dt.UTC).timestamp()
    clock = Clock(saturday)
    trail = make_trail(clock=clock)
    request(trail, "alice", "/ops", tool="ops")
    clock.t = saturday + 2 * 86400
    request(trail, "alice", "/ops", tool="ops")
    closed(trail)
    draft = compile_sources({**store.current.sources, "95-weekend.toml": '[[rule]]\nid = "no-weekend-ops"\neffect = "deny"\ntools = ["ops"]\ntime = { days = ["sat-sun"] }\n'})
    now = dt.datetime.fromtimestamp(saturday + 3 * 86400, dt.UTC)
    rep = replay(draft, store.current, [audit_path.parent], days=7, now=now)
    assert [(f.user, f.target, f.count, f.rule_draft) for f in rep.flips] == [("alice", "ops", 1, "no-weekend-ops")]
