"""Secondary sinks (stdout, syslog), reading the trail back, and the metrics counters."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.audit import read_events
from gateway.settings import ConfigError

from .audit_helpers import BOTH_WRITERS, Clock, emit_requests, lines_of, wait_for


@BOTH_WRITERS
def test_stdout_sink_copies_each_line(make_trail, audit_dir: Path, capfd) -> None:
    # capfd, not capsys: the writer process writes to the inherited descriptor 1.
    t = make_trail(stdout=True)
    emit_requests(t, 3)
    assert t.close()
    out = capfd.readouterr().out
    copied = [line for line in out.splitlines() if line.startswith('{"@timestamp"')]
    assert [c.encode() for c in copied] == lines_of(audit_dir / "audit.jsonl")


@BOTH_WRITERS
def test_syslog_sink_sends_one_datagram_per_record(make_trail, audit_dir: Path, tmp_path: Path) -> None:
    sock_path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(5)
    try:
        t = make_trail(syslog=True, syslog_address=str(sock_path))
        emit_requests(t, 2)
        assert t.close()
        got = [server.recv(65536), server.recv(65536)]
    finally:
        server.close()
    lines = lines_of(audit_dir / "audit.jsonl")
    assert got == [b"<86>toolgate-audit: " + line for line in lines]  # authpriv.info


@BOTH_WRITERS
def test_unreachable_syslog_stops_start_naming_the_key(make_trail, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        make_trail(syslog=True, syslog_address=str(tmp_path / "no-such.sock"))
    assert e.value.key == "audit.syslog_address"


@BOTH_WRITERS
def test_failing_sink_is_counted_and_never_makes_the_trail_unhealthy(make_trail, audit_dir: Path, tmp_path: Path) -> None:
    sock_path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    t = make_trail(syslog=True, syslog_address=str(sock_path))
    server.close()
    sock_path.unlink()  # syslogd went away
    emit_requests(t, 3)
    assert wait_for(lambda: t.written == 3)
    # The sinks run after the file write in the same batch: wait for them too.
    assert wait_for(lambda: t.stats().sink_errors >= 1)
    assert t.healthy
    assert t.close()
    assert len(lines_of(audit_dir / "audit.jsonl")) == 3


@BOTH_WRITERS
def test_read_events_filters_in_chain_order(make_trail, audit_dir: Path) -> None:
    clock = Clock()
    t = make_trail(max_bytes=4096, clock=clock)
    emit_requests(t, 20)
    clock.advance(60)
    t.emit("auth.login", outcome="failure", user="bob", client_ip="10.9.9.9")
    t.emit("auth.logout", outcome="success", user="alice")
    assert t.close()
    everything = list(read_events([audit_dir]))
    assert [r["seq"] for r in everything] == sorted(r["seq"] for r in everything)
    assert [r["event"]["action"] for r in read_events([audit_dir], actions={"auth."})] == ["auth.login", "auth.logout"]
    assert [r["user"]["name"] for r in read_events([audit_dir], outcome="failure")] == ["bob"]
    assert len(list(read_events([audit_dir], actions={"http.request"}, user="alice"))) == 20
    later = list(read_events([audit_dir], since="2025-11-25T11:17:30.000000Z"))
    assert [r["event"]["action"] for r in later if r["event"]["action"] != "audit.rotated"] == ["auth.login", "auth.logout"]
    assert list(read_events([audit_dir], request_id="req-00003"))[0]["seq"] > 0
    assert list(read_events([audit_dir], client_ip="10.9.9.9"))[0]["user"]["name"] == "bob"


@BOTH_WRITERS
def test_metrics_counters(make_trail) -> None:
    t = make_trail()
    emit_requests(t, 50)
    assert t.close()
    s = t.stats()
    assert (s.accepted, s.written, s.dropped, s.rejected, s.lost, s.errors) == (50, 50, 0, 0, 0, 0)
    assert s.batches >= 1 and s.write_seconds_total > 0 and s.latency_seconds_max >= s.latency_last >= 0
    assert s.seq == 50 and t.head[0] == 50 and len(t.head[1]) == 64
    assert not s.healthy and s.queue_depth == 0
