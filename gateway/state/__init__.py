"""Shared security state: where sessions, sign-in counters and one-time values live.

``[state] backend = "memory"`` keeps them in the process (one process only);
``"redis"`` shares them between uvicorn workers and replicas, so a sign-out
or a revocation on one replica holds on all of them and brute-force counters
add up fleet-wide.  When Redis cannot be reached, decisions that need it fail
closed (branded 503, ``/readyz`` 503) and resume by themselves when it
returns; see :mod:`.health`.
"""

from .backend import MemoryState, State, build_state
from .feature import StateFeature
from .health import StateUnavailable
from .replica import audit_root, claim_slot

__all__ = [
    "MemoryState",
    "State",
    "StateFeature",
    "StateUnavailable",
    "audit_root",
    "build_state",
    "claim_slot",
]
