"""The listener view of an audit item behaves like the flat dict listeners used to get."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit import AuditTrail
from gateway.audit.event_view import AuditEvent, picker
from gateway.settings import AuditSettings


@pytest.fixture
def trail(tmp_path: Path):
    key = tmp_path / "audit.key"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    t = AuditTrail(AuditSettings(path=tmp_path / "audit.jsonl", key_file=key))
    t.start()
    yield t
    t.close()


def test_listener_sees_exactly_the_fields_that_were_set(trail: AuditTrail) -> None:
    seen: list[dict] = []
    trail.subscribe(lambda ev: seen.append(dict(ev)))
    groups = {"sales", "employees"}
    trail.emit("http.request", outcome="success", user="alice", groups=groups, status=200, tool="sales", custom="x", empty=None)
    (ev,) = seen
    assert ev.pop("ts") > 0
    assert ev == {"action": "http.request", "outcome": "success", "user": "alice", "groups": groups, "status": 200, "tool": "sales", "custom": "x"}


def test_view_mapping_protocol() -> None:
    item = (1.0, "auth.login", "failure", None, "10.0.0.1", "", None, ("a",), None, None, None, None, None, None, None,
            None, None, None, None, "bad_password", None, {"k": 1}, {"extra_field": 5})  # fmt: skip
    ev = AuditEvent(item)
    assert ev["action"] == "auth.login" and ev.get("reason") == "bad_password"
    assert ev.get("status") is None and ev.get("status", 7) == 7
    with pytest.raises(KeyError):
        ev["status"]
    assert "extra_field" in ev and "status" not in ev and 3 not in ev
    assert ev["user"] == ""  # set (even if empty) is present, like the dict was
    assert ev["groups"] == ("a",)
    assert set(ev) == {"ts", "action", "outcome", "client_ip", "user", "groups", "reason", "details", "extra_field"}
    assert len(ev) == 9


def test_picker_on_views_and_dicts() -> None:
    pick = picker("action", "status", "decision")
    item = (1.0, "http.request", None, None, None, None, None, None, None, None, None, None, 403, None, None,
            "deny", None, None, None, None, None, None, None)  # fmt: skip
    assert pick(AuditEvent(item)) == ("http.request", 403, "deny")
    assert pick({"action": "http.request", "decision": "allow"}) == ("http.request", None, "allow")
    assert picker("action")(AuditEvent(item)) == ("http.request",)
    with pytest.raises(ValueError):
        picker("groups")
    with pytest.raises(ValueError):
        picker("no_such_field")
