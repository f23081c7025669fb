"""The editor's own checks: who may save, what a refused save leaves behind, errors at their line."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.policy import PolicyStore
from gateway.policy.history import PolicyHistory, sha256_text
from tools_ui.editor import policy as ed

from .conftest import Recorder

FILE = "10-tools.toml"


@dataclass(frozen=True)
class U:
    name: str
    groups: tuple[str, ...]
    email: str = ""
    ip: str = ""


@dataclass
class FakeServices:
    """Only the two attributes the editor uses; both are real objects."""

    policy: PolicyStore
    emit: Any


@pytest.mark.parametrize(
    ("user", "allowed"),
    [
        (U("sam", ("employees", "security")), True),
        (U("sam", ("Security",)), True),
        (U("aud", ("auditors",)), False),
        (U("both", ("security", "auditors")), False),  # separation of duties
        (U("alice", ("employees",)), False),
        (U("", ("security",)), False),  # not signed in
    ],
)
def test_who_may_change_policies(user: U, allowed: bool) -> None:
    assert ed.can_change(user) is allowed


def test_a_refused_save_writes_nothing_and_is_audited(store: PolicyStore, pdir: Path, recorder: Recorder) -> None:
    text = (pdir / FILE).read_text()
    services = FakeServices(store, recorder)
    for who in (U("aud", ("auditors",)), U("both", ("security", "auditors"))):
        with pytest.raises(ed.NotPermitted):
            ed.save_as(who, services, FILE, text + "# x\n", base_sha=sha256_text(text), message="m")
        with pytest.raises(ed.NotPermitted):
            ed.rollback_as(who, services, FILE, 1, base_sha=sha256_text(text), message="m")
    assert (pdir / FILE).read_text() == text and PolicyHistory(pdir).versions(FILE) == []
    refused = recorder.of("policy.changed")
    assert len(refused) == 4 and all(e["outcome"] == "failure" and "refused" in e["reason"] for e in refused)
    assert refused[0]["user"] == "aud"


def test_a_permitted_save_carries_who_in_the_audit_event(store: PolicyStore, pdir: Path, recorder: Recorder) -> None:
    text = (pdir / FILE).read_text()
    sam = U("sam", ("employees", "security"), "sam@example.com", "10.1.2.3")
    ed.save_as(sam, FakeServices(store, recorder), FILE, text + "# x\n", base_sha=sha256_text(text), message="m")
    [e] = recorder.of("policy.changed")
    assert (e["user"], e["email"], e["groups"], e["client_ip"]) == ("sam", "sam@example.com", ["employees", "security"], "10.1.2.3")


def test_errors_point_at_their_line(pdir: Path) -> None:
    text = (pdir / FILE).read_text().replace('effect = "allow"', 'effect = "alow"', 1)
    check = ed.validate(pdir, FILE, text)
    err = check.errors[0]
    line = text.splitlines().index('effect = "alow"') + 1
    assert err.line == line and err.file == FILE and "alow" in err.message
    here, elsewhere = ed.problems_in(check.errors, FILE)
    assert {p.file for p in elsewhere} == {"90-guardrails.toml"}  # its test names the broken rule
    assert f"→ {line} │ effect = \"alow\"" in ed.excerpt(text, err.line)


def test_draft_tests_run_with_every_file(pdir: Path) -> None:
    # The draft removes the policy editor rule; a test in another file names it.
    text = (pdir / FILE).read_text().replace('"policies"', '"sales"', 1)
    check = ed.run_draft_tests(pdir, FILE, text)
    assert check.report is not None and not check.ok
    failing = {r.case.name for r in check.report.failures}
    assert "security opens the policy editor" in failing


def test_simulated_requests_take_the_form_fields() -> None:
    at = dt.datetime(2025, 1, 6, 10, tzinfo=dt.UTC)
    req = ed.simulated_request(user="Alice", groups="employees, sales;ops", email="", path="/OPS/", method="GET", ip="::ffff:10.0.0.1", at=at)
    assert (req.user, req.groups, req.path, req.tool, str(req.ip)) == ("alice", frozenset({"employees", "sales", "ops"}), "/ops", "ops", "10.0.0.1")
    with pytest.raises(ValueError):
        ed.simulated_request(user="a", groups="", email="", path="/a/%2f/b", method="GET", ip="", at=at)
