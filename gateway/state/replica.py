"""Which replica (and worker) this process is, and where its audit chain lives.

With the shared (Redis) backend several processes write audit trails at the
same time; each needs its own chained file.  A process takes the first free
*slot* of its replica: slot 0 is ``<replica_id>``, slot k is
``<replica_id>.w<k>``, held by an ``flock`` on ``<audit dir>/<id>/slot.lock``
for the life of the process.  Worker k therefore gets the same id (and
continues the same chain) after a restart, and ``gateway run --workers N``
needs no coordination beyond the file system.  Its trail is
``<audit dir>/<id>/<audit file name>`` and every record carries the id
(``gateway.replica``).

``replica_id`` comes from ``state.replica_id`` (``GATEWAY_STATE_REPLICA_ID``),
else the host name (a pod's name in Kubernetes).  With the memory backend the
audit path is left as configured.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import AuditSettings, ConfigError, Settings

MAX_SLOTS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_replica_id() -> str:
    name = os.environ.get("HOSTNAME") or socket.gethostname() or "gateway"
    name = _UNSAFE.sub("-", name).strip(".-_")[:63]
    return name or "gateway"


@dataclass
class ReplicaSlot:
    replica_id: str | None
    audit: AuditSettings
    lock_fd: int = -1

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)  # closing the descriptor drops the flock
            self.lock_fd = -1


class HoldsSlot:
    """What every state backend says about the replica slot it claimed."""

    slot: ReplicaSlot

    @property
    def replica_id(self) -> str | None:
        return self.slot.replica_id

    @property
    def audit_settings(self) -> AuditSettings:
        return self.slot.audit


def _try_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim_slot(settings: Settings) -> ReplicaSlot:
    """This process's replica id and audit settings (see the module doc)."""
    st = settings.state
    if st.backend != "redis":
        return ReplicaSlot(st.replica_id or None, settings.audit)
    base = st.replica_id or default_replica_id()
    root = settings.audit.path.parent
    for k in range(MAX_SLOTS):
        rid = base if k == 0 else f"{base}.w{k}"
        try:
            fd = _try_lock(root / rid / "slot.lock")
        except OSError as exc:
            raise ConfigError("audit.path", f"cannot create {root / rid}: {exc.strerror}") from None
        if fd >= 0:
            audit = dataclasses.replace(settings.audit, path=root / rid / settings.audit.path.name)
            return ReplicaSlot(rid, audit, fd)
    raise ConfigError("state.replica_id", f"{MAX_SLOTS} processes of replica {base!r} already write audit trails under {root}")


def audit_root(settings: Settings) -> Path:
    """The folder that holds every replica's trail (each in its own sub-folder with Redis)."""
    return settings.audit.path.parent
