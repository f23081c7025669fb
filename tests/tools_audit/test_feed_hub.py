"""The live feed hub: which events it carries, thread hand-off, bounded queues, backlog on reconnect."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson

from gateway.audit import AuditTrail
from gateway.live.feature import seed_events
from gateway.live.hub import FeedHub, category, feed_item, from_record
from gateway.settings import AuditSettings
from tests.tools_audit.tools_audit_support import Clock


def test_only_denials_failed_sign_ins_and_policy_changes_are_carried():
    carried = [
        {"action": "http.request", "decision": "deny", "user": "alice", "path": "/audit"},
        {"action": "websocket.session", "decision": "deny"},
        {"action": "page.denied", "decision": "deny", "tool": "audit"},
        {"action": "auth.login", "outcome": "failure", "user": "mallory"},
        {"action": "policy.changed", "user": "sam"},
        {"action": "policy.reloaded"},
        {"action": "policy.reload_rejected", "reason": "syntax"},
    ]
    ignored = [
        {"action": "http.request", "decision": "allow"},
        {"action": "http.request", "decision": "public"},
        {"action": "auth.login", "outcome": "success"},
        {"action": "auth.logout"},
        {"action": "audit.exported", "outcome": "success"},
        {"action": "gateway.start"},
    ]
    assert [category(e) for e in carried] == ["denial", "denial", "denial", "signin_failure", "policy", "policy", "policy"]
    assert [category(e) for e in ignored] == [None] * len(ignored)


def test_feed_items_are_clipped_and_never_carry_a_diff():
    item = feed_item(
        {
            "action": "policy.changed",
            "outcome": "success",
            "ts": 1764069420.5,
            "user": "sam",
            "details": {"file": "10-tools.toml", "diff": "x" * 10_000, "message": "m" * 1000},
            "path": "/" + "a" * 5000,
        },
        "policy",
    )
    assert "diff" not in item["details"] and item["details"]["file"] == "10-tools.toml"
    assert len(item["details"]["message"]) <= 301 and len(item["path"]) <= 301
    assert item["ts"] == "2025-11-25T11:17:00.500000Z"
    anon = feed_item({"action": "http.request", "decision": "deny", "path": "/"}, "denial")
    assert anon["anonymous"] is True


async def test_events_from_other_threads_reach_every_connection():
    listeners = []
    hub = FeedHub(lambda fn: listeners.append(fn) or (lambda: listeners.remove(fn)))
    hub.start()
    a, b = hub.connect("sam"), hub.connect("sam")

    def emit_from_thread() -> None:
        for fn in listeners:
            fn({"action": "http.request", "decision": "deny", "user": "alice", "path": "/audit"})
            fn({"action": "http.request", "decision": "allow", "user": "alice", "path": "/"})

    t = threading.Thread(target=emit_from_thread)
    t.start()
    t.join()
    got_a = await asyncio.wait_for(a.queue.get(), 2)
    got_b = await asyncio.wait_for(b.queue.get(), 2)
    assert got_a == got_b and got_a["user"] == "alice" and got_a["id"] == 1
    await asyncio.sleep(0.05)
    assert a.queue.empty()  # the allowed request was not carried
    hub.disconnect(a)
    hub.stop()
    assert listeners == []


async def test_a_slow_connection_loses_its_oldest_events_and_is_told():
    hub = FeedHub(lambda fn: (lambda: None), queue_size=3)
    hub.start()
    sub = hub.connect("sam")
    for i in range(10):
        hub.listener({"action": "auth.login", "outcome": "failure", "user": f"u{i}"})
    await asyncio.sleep(0.05)
    assert sub.dropped == 7
    assert [sub.queue.get_nowait()["user"] for _ in range(3)] == ["u7", "u8", "u9"]


async def test_reconnect_resumes_after_the_last_event_seen():
    hub = FeedHub(lambda fn: (lambda: None), backlog=5)
    hub.start()
    for i in range(8):
        hub.listener({"action": "auth.login", "outcome": "failure", "user": f"u{i}"})
    await asyncio.sleep(0.05)
    fresh = hub.connect("sam")
    assert [fresh.queue.get_nowait()["id"] for _ in range(5)] == [4, 5, 6, 7, 8]
    resumed = hub.connect("sam", since=6, epoch=hub.epoch)
    assert [resumed.queue.get_nowait()["id"] for _ in range(resumed.queue.qsize())] == [7, 8]
    other_epoch = hub.connect("sam", since=6, epoch="from-before-a-restart")
    assert other_epoch.queue.qsize() == 5


async def test_connections_are_limited_per_user_and_in_total():
    hub = FeedHub(lambda fn: (lambda: None), max_connections=3, max_per_user=2)
    hub.start()
    hub.connect("sam")
    hub.connect("sam")
    assert not hub.can_connect("sam") and hub.can_connect("erin")
    hub.connect("erin")
    assert not hub.can_connect("frank")


async def test_backlog_is_seeded_from_the_trail_file(tmp_path: Path):
    key = tmp_path / "k"
    key.write_text("00" * 32)
    key.chmod(0o600)
    trail = AuditTrail(AuditSettings(path=tmp_path / "audit.jsonl", key_file=key, flush_interval_s=0.01), clock=Clock())
    trail.start()
    trail.emit("auth.login", outcome="failure", user="mallory", client_ip="10.9.9.9", reason="invalid_credentials")
    trail.emit("http.request", decision="allow", user="alice", path="/")
    trail.emit("page.denied", outcome="failure", user="alice", tool="audit", path="/audit", decision="deny", rule_id="default-deny")
    assert trail.close()
    rec = orjson.loads((tmp_path / "audit.jsonl").read_bytes().splitlines()[0])
    assert from_record(rec)["user"] == "mallory" and from_record(rec)["client_ip"] == "10.9.9.9"
    hub = FeedHub(lambda fn: (lambda: None))
    hub.start(seed=seed_events(tmp_path / "audit.jsonl"))
    items = [hub.connect("sam").queue.get_nowait() for _ in range(1)]
    assert hub.published == 2
    assert items[0]["kind"] == "signin_failure" and items[0]["user"] == "mallory"
    assert [i["kind"] for i in hub.backlog] == ["signin_failure", "denial"]
