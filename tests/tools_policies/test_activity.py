"""Home's "my recent activity": my events only, newest first, read from the end of the trail."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from gateway.audit import AuditTrail
from tools_ui.editor.activity import _Budget, recent_activity, reverse_lines


def closed(trail: AuditTrail) -> None:
    assert trail.close(timeout=5.0)


def page(trail: AuditTrail, user: str, path: str, tool: str | None = None, status: int = 200) -> None:
    trail.emit("http.request", user=user, groups=["employees"], path=path, tool=tool, method="GET", status=status,
               decision="allow" if status < 400 else "deny", client_ip="10.1.2.3")  # fmt: skip


def test_only_my_own_events_newest_first(make_trail: Callable[..., AuditTrail], audit_path: Path) -> None:
    trail = make_trail()
    trail.emit("auth.login", outcome="success", user="alice", auth_method="password", client_ip="10.1.2.3")
    page(trail, "alice", "/sales", "sales")
    trail.emit("auth.login", outcome="success", user="sam", auth_method="password")
    page(trail, "sam", "/live", "live")
    page(trail, "alice", "/_stcore/stream")  # plumbing: not shown
    page(trail, "alice", "/static/js/app.js")
    page(trail, "alice", "/sales/_stcore/health", status=404)
    trail.emit("page.denied", outcome="failure", user="alice", tool="audit", path="/audit", decision="deny")
    page(trail, "Alice2", "/ops", "ops")  # a different user whose name merely starts the same
    closed(trail)

    rows = recent_activity(audit_path, "alice")
    assert [(r.what, r.where) for r in rows] == [("Refused Audit viewer", "/audit"), ("Opened Sales", "/sales"), ("Signed in (password)", "")]
    assert all("live" not in r.where for r in rows)
    assert recent_activity(audit_path, "sam")[0].where == "/live"
    assert recent_activity(audit_path, "") == []


def test_the_limit_keeps_the_newest(make_trail: Callable[..., AuditTrail], audit_path: Path) -> None:
    trail = make_trail()
    for i in range(30):
        page(trail, "alice", f"/api/item{i}")
    closed(trail)
    rows = recent_activity(audit_path, "alice", limit=20)
    assert [r.where for r in rows] == [f"/api/item{i}" for i in range(29, 9, -1)]


def test_only_the_tail_is_read(make_trail: Callable[..., AuditTrail], audit_path: Path) -> None:
    trail = make_trail()
    page(trail, "alice", "/sales", "sales")  # at the very start of a large file
    for i in range(3000):
        page(trail, "bob", f"/api/x{i}")
    page(trail, "alice", "/ops", "ops")
    closed(trail)
    assert audit_path.stat().st_size > 1_000_000
    # A 256 KB budget finds the recent event and gives up before the old one.
    assert [r.where for r in recent_activity(audit_path, "alice", budget_bytes=256 * 1024)] == ["/ops"]
    assert [r.where for r in recent_activity(audit_path, "alice")] == ["/ops", "/sales"]


def test_rotated_files_are_read_after_the_current_one(make_trail: Callable[..., AuditTrail], audit_path: Path) -> None:
    trail = make_trail(max_bytes=4096)
    for i in range(40):
        page(trail, "alice", f"/api/r{i}")
    closed(trail)
    assert len(list(audit_path.parent.glob("audit-*.jsonl"))) >= 2
    rows = recent_activity(audit_path, "alice", limit=25)
    assert [r.where for r in rows] == [f"/api/r{i}" for i in range(39, 14, -1)]


def test_reverse_lines_skips_a_torn_tail_and_handles_long_lines(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    long = b"x" * 200_000
    f.write_bytes(b"first\n" + long + b"\nlast\ntorn-without-newline")
    assert list(reverse_lines(f, _Budget(1 << 30))) == [b"last", long, b"first"]
    f.write_bytes(b"only-torn")
    assert list(reverse_lines(f, _Budget(1 << 30))) == []
    f.write_bytes(b"")
    assert list(reverse_lines(f, _Budget(1 << 30))) == []


def test_no_trail_yet_is_no_activity(tmp_path: Path) -> None:
    assert recent_activity(tmp_path / "audit" / "audit.jsonl", "alice") == []
