"""Tamper-evident audit trail: ECS-shaped JSONL records in an HMAC chain.

Public API::

    trail = AuditTrail(settings.audit, replica_id="gw-1")
    trail.start()
    trail.emit("auth.login", outcome="success", user="alice", client_ip="10.0.0.7")
    trail.healthy, trail.queue_depth, trail.stats()
    trail.close()

    verify_paths([Path("audit/")], key) -> VerifyResult
    read_events([Path("audit/")], actions={"auth.login"}) -> Iterator[dict]

The record schema, the chain algorithm and rotation are documented in
docs/audit-events.md.
"""

from .chain import GENESIS, load_key, parse_key
from .schema import ACTIONS, FIELD_MAP
from .trail import AuditStats, AuditTrail, AuditUnavailable
from .verify import Problem, VerifyResult, read_events, verify_paths

__all__ = [
    "ACTIONS",
    "FIELD_MAP",
    "GENESIS",
    "AuditStats",
    "AuditTrail",
    "AuditUnavailable",
    "Problem",
    "VerifyResult",
    "load_key",
    "parse_key",
    "read_events",
    "verify_paths",
]
