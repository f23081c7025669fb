"""The writer's fast paths give the same records as the general ones, and lose nothing."""

from __future__ import annotations

import collections
import os
import secrets
from pathlib import Path

import orjson
import pytest

from gateway.audit import AuditTrail, AuditUnavailable, verify_paths
from gateway.audit.redact import REDACTED, Redactor
from gateway.audit.schema import FLAT_FIELDS, ToECS
from gateway.settings import AuditSettings

from .audit_helpers import BOTH_WRITERS

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"
T0 = 1764069420.123456
FULL = dict(
    request_id="0b1c2d3e4f", client_ip="10.0.0.7", user="alice", email="alice@example.com",
    groups=frozenset({"sales", "employees"}), auth_method="session", method="GET", path=f"/reset/{JWT}",
    tool="sales", status=200, bytes=5120, duration_ms=12.5, decision="allow", rule_id="sales-employees",
    policy_version="v7", user_agent="curl/8 token=abcdefgh12345", reason=None, session_id="s-4f2a", details=None,
)  # fmt: skip


@pytest.fixture
def writer_mode() -> str:
    return "thread"


@pytest.fixture
def trail(tmp_path: Path, writer_mode: str):
    key_file = tmp_path / "audit.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    os.chmod(key_file, 0o600)
    made = []

    def make(**kw) -> AuditTrail:
        t = AuditTrail(AuditSettings(path=tmp_path / "audit" / "audit.jsonl", key_file=key_file, flush_interval_s=0.02, writer=writer_mode, **kw))
        made.append(t)
        return t

    yield make
    for t in made:
        t.close(timeout=2.0)


def _item(**over):
    v = {**FULL, **over}
    return (T0, "http.request", None, *[v[f] for f in FLAT_FIELDS], over.pop("extra", None))


def test_one_literal_shape_equals_the_field_by_field_build() -> None:
    b = ToECS("gw-1", redactor=Redactor())
    fast = b.build(*_item())
    # A vanishing extra field takes the general path and must change nothing.
    general = b.build(T0, "http.request", None, *[FULL[f] for f in FLAT_FIELDS], {"unused": None})
    assert fast == general
    assert JWT not in fast["url"]["path"] and "abcdefgh12345" not in fast["user_agent"]["original"]
    assert list(fast["user"]["roles"]) == ["employees", "sales"]


def _bodies(recs, first_seq: int = 1) -> list[bytes]:
    """Each record as the writer serializes it: a dict with its seq, or (@timestamp, head, tail)."""
    out = []
    for seq, r in enumerate(recs, first_seq):
        if isinstance(r, tuple):
            out.append(r[1] + b"%d" % seq + r[2] + b"}")
        else:
            out.append(orjson.dumps({**r, "seq": seq}))
    return out


@pytest.mark.parametrize("replica", ["gw-1", None])
def test_the_writers_serialized_records_are_byte_for_byte_the_plain_ones(replica: str | None) -> None:
    odd = dict(user='ali"ce\\ \u00e9\u2028', email="a@b.c\n", user_agent=f"Bearer {JWT} \"q\" \x01", path="/x?token=abcdef123456",
               request_id='r"\\', method="G\u00c9T")  # fmt: skip
    variants = [{}, odd, {"client_ip": "::1"}, {"groups": ("ops",)}, {"status": 503}, {"status": 200}, {"outcome": "failure"},
                {"reason": "denied"}, {"details": {"k": 1}}, {"groups": ["a", "b"]}, {"session_id": None}, {"bytes": 1.5},
                {"bytes": True}, {"status": True}, {"duration_ms": 10**7 + 0.5}]  # fmt: skip
    items = []
    for i, over in enumerate(variants * 3):  # repeats: the cached pieces are used
        v = {"request_id": f"r{i}", "duration_ms": i / 7, **FULL, **over}
        if "request_id" not in over:
            v["request_id"] = f"r{i}"
        items.append((T0 + i * 0.37, "http.request", v.pop("outcome", None), *[v[f] for f in FLAT_FIELDS], None))
    plain = _bodies(ToECS(replica, redactor=Redactor()).records(items), 41)
    builder = ToECS(replica, redactor=Redactor())
    recs = list(builder.records(items, serialized=True))
    assert sum(isinstance(r, tuple) for r in recs) >= len(variants)  # the fast path was taken...
    assert _bodies(recs, 41) == plain  # ...and wrote exactly what the dict would have
    assert JWT.encode() not in b"".join(plain) and b"abcdef123456" not in b"".join(plain)


def test_the_serialized_piece_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.audit.schema.SERIALIZED_CACHE", 8)
    builder = ToECS(None, redactor=Redactor())
    items = [(T0, "http.request", None, *[{**FULL, "user": f"u{i}", "path": f"/p{i}"}[f] for f in FLAT_FIELDS], None) for i in range(50)]
    out = [orjson.loads(b) for b in _bodies(builder.records(items, serialized=True))]
    assert [r["user"]["name"] for r in out] == [f"u{i}" for i in range(50)]
    assert [r["url"]["path"] for r in out] == [f"/p{i}" for i in range(50)]
    assert len(builder._parts) <= 8 and len(builder._urls) <= 8


@BOTH_WRITERS
def test_values_of_any_type_in_free_text_fields_are_redacted(trail) -> None:
    t = trail()
    t.start()
    t.emit("auth.login", outcome="failure", user=[f"Bearer {JWT}"], reason=("token=s3cr3t-value",),
           details={"error": ValueError("password=hunter2"), "where": Path("/x?token=abcdef123456")})  # fmt: skip
    assert t.close()
    raw = (t.path).read_bytes()
    for secret in (JWT.encode(), b"s3cr3t-value", b"hunter2", b"abcdef123456"):
        assert secret not in raw, secret
    rec = orjson.loads(raw)
    assert rec["gateway"]["details"]["error"] == "password=" + REDACTED


class _RacingQueue(collections.deque):
    """A queue whose append lets close() (or a failing writer) win the race right after it."""

    trail: AuditTrail | None = None

    def append(self, item) -> None:
        super().append(item)
        if self.trail is not None:
            self.trail._ok = False


@BOTH_WRITERS
def test_an_append_that_races_the_trail_stopping_is_taken_back(trail) -> None:
    t = trail()
    t.start()
    q = _RacingQueue()
    q.trail = t
    t._writer.queue = q
    t._queue = q
    with pytest.raises(AuditUnavailable):
        t.emit("http.request", status=200)
    assert len(q) == 0 and t.accepted == 0 and t.stats().rejected == 1


def test_retract_knows_when_the_writer_already_took_the_item(trail) -> None:
    t = trail()  # not started: nothing pops behind our back
    item = _item()
    t._queue.append(item)
    assert t._retract(item) is True and not t._queue
    t._queue.append(item)
    t._queue.popleft()  # the writer took it
    assert t._retract(item) is False


@BOTH_WRITERS
def test_many_events_through_the_fast_path_verify(trail) -> None:
    t = trail(max_bytes=64 * 1024)
    t.start()
    for i in range(3000):
        t.emit("http.request", **{**FULL, "request_id": f"r{i}"})
    assert t.close()
    assert t.accepted == t.written == 3000
    files = sorted(t.path.parent.glob("*.jsonl"))
    assert len(files) > 1  # rotated by size mid-batch
    assert verify_paths(files, bytes.fromhex((t.settings.key_file).read_text().strip())).ok


@BOTH_WRITERS
def test_sync_makes_own_writes_visible(tmp_path, writer_mode):
    """Readers in the process see their own writes despite the writer's batching."""
    from gateway.audit import AuditTrail
    from gateway.settings import AuditSettings

    key = tmp_path / "k"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    trail = AuditTrail(AuditSettings(path=tmp_path / "a.jsonl", key_file=key, flush_interval_s=5.0, writer=writer_mode))
    trail.start()
    try:
        for i in range(3):
            trail.emit("http.request", outcome="success", path=f"/x{i}", status=200)
        assert trail.sync(timeout=2.0)
        text = (tmp_path / "a.jsonl").read_text()
        assert all(f"/x{i}" in text for i in range(3))
    finally:
        trail.close()
