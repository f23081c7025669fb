"""The ECS record shape: field mapping, timestamp, outcome, odd values, the documented examples."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from gateway.audit import ACTIONS, FIELD_MAP, verify_paths
from gateway.audit.schema import FLAT_FIELDS, ToECS

from .audit_helpers import BOTH_WRITERS, T0, Clock, records_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-events.md"

ALL_FIELDS = dict(
    request_id="0b1c2d3e4f",
    client_ip="10.0.0.7",
    user="alice",
    email="alice@example.com",
    groups=frozenset({"sales", "employees"}),
    auth_method="session",
    method="GET",
    path="/sales",
    tool="sales",
    status=200,
    bytes=5120,
    duration_ms=12.5,
    decision="allow",
    rule_id="sales-employees",
    policy_version="v7",
    user_agent="Mozilla/5.0 (X11; Linux x86_64)",
    reason="matched rule sales-employees",
    session_id="s-4f2a",
    details={"note": "hello"},
)


@BOTH_WRITERS
def test_every_flat_field_lands_on_its_ecs_name(make_trail, audit_dir: Path) -> None:
    t = make_trail(clock=Clock(), replica_id="gw-1")
    t.emit("http.request", **ALL_FIELDS)
    assert t.close()
    (rec,) = records_of(audit_dir / "audit.jsonl")
    assert rec["@timestamp"] == "2025-11-25T11:17:00.123456Z"
    assert rec["seq"] == 1
    assert re.fullmatch(r"[0-9a-f]{64}", rec.pop("chain"))
    assert rec == {
        "@timestamp": "2025-11-25T11:17:00.123456Z",
        "seq": 1,
        "ecs": {"version": "8.11.0"},
        "event": {
            "action": "http.request",
            "kind": "event",
            "category": ["web"],
            "type": ["access"],
            "duration": 12_500_000,
            "reason": "matched rule sales-employees",
            "outcome": "success",
        },
        "http": {"request": {"id": "0b1c2d3e4f", "method": "GET"}, "response": {"status_code": 200, "body": {"bytes": 5120}}},
        "client": {"ip": "10.0.0.7"},
        "user": {"name": "alice", "email": "alice@example.com", "roles": ["employees", "sales"]},
        "url": {"path": "/sales"},
        "user_agent": {"original": "Mozilla/5.0 (X11; Linux x86_64)"},
        "gateway": {
            "decision": "allow",
            "rule_id": "sales-employees",
            "policy_version": "v7",
            "tool": "sales",
            "auth_method": "session",
            "session_id": "s-4f2a",
            "details": {"note": "hello"},
            "replica": "gw-1",
        },
    }


def test_field_map_table_matches_the_code() -> None:
    # FIELD_MAP is the documented table; the builder is hand-unrolled for speed.
    assert set(FIELD_MAP) == set(FLAT_FIELDS)
    rec = ToECS().build(T0, "http.request", None, *[ALL_FIELDS[f] for f in FLAT_FIELDS], None)
    for flat, (container, key) in FIELD_MAP.items():
        node = rec
        for part in container.split("."):
            node = node[part]
        assert key in node, (flat, container, key)


def test_structlog_processor_form_equals_fast_form() -> None:
    b = ToECS("gw-2")
    ed = {"event": "auth.login", "outcome": "failure", "timestamp": T0, **ALL_FIELDS, "attempt": 3}
    via_processor = b(None, "info", ed)
    fast = b.build(T0, "auth.login", "failure", *[ALL_FIELDS[f] for f in FLAT_FIELDS], {"attempt": 3})
    assert via_processor == fast
    assert fast["gateway"]["details"] == {"note": "hello", "attempt": 3}


@pytest.mark.parametrize(
    ("status", "outcome", "expected"),
    [(200, None, "success"), (302, None, "success"), (403, None, "failure"), (500, None, "failure"), (None, None, "unknown"), (200, "failure", "failure")],
)
def test_outcome_from_status_unless_given(make_trail, audit_dir: Path, status, outcome, expected) -> None:
    t = make_trail()
    t.emit("http.request", status=status, outcome=outcome)
    t.close()
    assert records_of(audit_dir / "audit.jsonl")[0]["event"]["outcome"] == expected


def test_none_and_empty_fields_are_omitted_and_unknown_fields_kept(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    t.emit("auth.login", outcome="failure", user="bob", email="", client_ip=None, attempts=3, details={"method": "password"})
    t.close()
    rec = records_of(audit_dir / "audit.jsonl")[0]
    assert rec["user"] == {"name": "bob"}
    assert "client" not in rec
    assert rec["gateway"]["details"] == {"method": "password", "attempts": 3}
    assert rec["event"]["category"] == ["authentication"]


@pytest.mark.parametrize("bad", ["HTTP.Request", "login", "auth..login", "auth.login ", "", "auth.login\n"])
def test_malformed_action_is_a_programming_error(make_trail, bad: str) -> None:
    t = make_trail()
    with pytest.raises(ValueError):
        t.emit(bad)


def test_bad_outcome_is_rejected(make_trail) -> None:
    t = make_trail()
    with pytest.raises(ValueError):
        t.emit("auth.login", outcome="ok")


def test_odd_values_never_stop_the_writer(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail()
    t.emit(
        "policy.changed",
        user="sec\udcff",  # lone surrogate from undecodable input
        path="/p\udc80",
        details={"files": {Path("policies/a.toml")}, 7: "int key", "raw": b"\x00\x01", "obj": ValueError("boom")},
    )
    t.emit("gateway.stop")
    assert t.close()
    recs = records_of(audit_dir / "audit.jsonl")
    assert [r["event"]["action"] for r in recs] == ["policy.changed", "gateway.stop"]
    d = recs[0]["gateway"]["details"]
    assert d["files"] == ["policies/a.toml"]
    assert d["7"] == "int key"
    assert d["raw"] == "[2 bytes omitted]"
    assert d["obj"] == "boom"
    assert verify_paths([audit_dir], key).ok


def test_attacker_sized_strings_are_clipped(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    t.emit("http.request", user_agent="A" * 100_000, path="/" + "x" * 10_000)
    t.close()
    rec = records_of(audit_dir / "audit.jsonl")[0]
    assert len(rec["user_agent"]["original"]) < 1100
    assert rec["user_agent"]["original"].endswith("...[truncated]")
    assert len(rec["url"]["path"]) < 2100


def test_newlines_cannot_forge_a_record(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail()
    forged = '"}\n{"@timestamp":"x","seq":99,"event":{"action":"auth.login"}}'
    t.emit("auth.login", outcome="failure", user=forged)
    t.close()
    lines = (audit_dir / "audit.jsonl").read_bytes().splitlines()
    assert len(lines) == 1
    assert orjson.loads(lines[0])["user"]["name"] == forged
    assert verify_paths([audit_dir], key).ok


def test_every_action_has_ecs_categories() -> None:
    for action, (cats, types) in ACTIONS.items():
        assert cats and types, action


# ------------------------------------------------------------------ the docs


def _doc_examples() -> dict[str, dict]:
    text = DOC.read_text()
    out = {}
    for block in re.findall(r"```json\n(.*?)\n```", text, re.S):
        rec = orjson.loads(block)
        if isinstance(rec, dict) and "event" in rec:
            out[rec["event"]["action"]] = rec
    return out


def _paths(obj: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in obj.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict) and k != "details":
            out |= _paths(v, p + ".")
        else:
            out.add(p)
    return out


def test_docs_show_an_example_for_every_action() -> None:
    examples = _doc_examples()
    assert set(ACTIONS) <= set(examples), sorted(set(ACTIONS) - set(examples))


def test_doc_examples_use_only_fields_the_code_writes() -> None:
    full = ToECS("gw-1").build(T0, "http.request", "success", *[ALL_FIELDS[f] for f in FLAT_FIELDS], None)
    known = _paths(full) | {"chain"}
    for action, rec in _doc_examples().items():
        unknown = _paths(rec) - known
        assert not unknown, (action, unknown)
        assert rec["event"].get("category") == ACTIONS[action][0], action
