"""Saving policy files from the editor: optimistic locking, a version history, rollback.

The history lives next to the files it describes, in ``<policy dir>/.history/``
(the loader ignores names starting with ``.``)::

    .history/.lock                      flock: one save at a time, across processes
    .history/10-tools.toml/000001.toml  the file's content at version 1
    .history/10-tools.toml/000001.json  who, when, why (written last: the commit marker)

Folders are 0700 and files 0600: old versions of a policy say as much about
who may do what as the live files.  Every write is a temporary file, fsync,
rename and a directory fsync, so a crash leaves either the old or the new
state, never half a version.

A save is refused when the file on disk is no longer what the editor opened
(:class:`ConflictError` carries "theirs"; the editor keeps "base" and
"yours"), when the draft does not validate, or when any embedded test fails.
The first save of a file records what was on disk before as version 1, and a
change made outside the editor is recorded before the new version, so every
state the file was ever saved in can be rolled back to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import difflib
import fcntl
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from gateway.fsutil import atomic_write

from .model import PolicyLoadError, Problem
from .sources import check_file_name

HISTORY_DIR = ".history"
ON_DISK_AUTHOR = "(on disk)"
DIFF_LIMIT = 20_000  # characters of diff kept in an audit record
_VERSION_FILE = re.compile(r"^(\d{6})\.json$")
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

Emit = Callable[..., None]


def sha256_text(text: str | bytes | None) -> str | None:
    """The content hash the editor remembers when it opens a file (None: no such file)."""
    if text is None:
        return None
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(raw).hexdigest()


def unified_diff(old: str, new: str, filename: str, old_label: str = "", new_label: str = "") -> str:
    """A ``diff -u`` of two versions of one file ("" when they are equal)."""
    a = f"a/{filename}" + (f" ({old_label})" if old_label else "")
    b = f"b/{filename}" + (f" ({new_label})" if new_label else "")
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), a, b))


def cap_diff(diff: str, limit: int = DIFF_LIMIT) -> str:
    """At most ``limit`` characters, cut at a line end, saying how much was left out."""
    if len(diff) <= limit:
        return diff
    cut = diff.rfind("\n", 0, limit) + 1 or limit
    return diff[:cut] + f"... diff truncated: {len(diff) - cut} of {len(diff)} characters not shown\n"


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(filename: str) -> None:
    bad = check_file_name(filename)
    if bad:
        raise PolicyLoadError([Problem("error", str(filename), None, bad)])


@dataclass(frozen=True)
class Version:
    file: str
    number: int
    sha256: str
    author: str
    message: str
    created_at: str  # RFC 3339, UTC
    rollback_of: int | None = None
    policy_version: str | None = None  # the whole policy set's version right after this save

    @property
    def label(self) -> str:
        return f"v{self.number}"


class ConflictError(Exception):
    """The file changed on disk since the editor opened it; nothing was written."""

    def __init__(self, filename: str, base_sha: str | None, theirs: str | None) -> None:
        self.filename = filename
        self.base_sha = base_sha
        self.theirs = theirs  # the content on disk now (None: the file is gone)
        self.theirs_sha = sha256_text(theirs)
        super().__init__(f"{filename} was changed by someone else since you opened it")


@dataclass(frozen=True)
class SaveResult:
    file: str
    old_version: Version | None  # what was on disk before (None: a new file)
    new_version: Version
    policy_version: str  # the policy in force after the save
    diff: str
    changed: bool  # False when the draft equals what was on disk


class PolicyHistory:
    """The version history of every file in one policy directory."""

    def __init__(self, policy_dir: Path | str) -> None:
        self.policy_dir = Path(policy_dir)
        self.root = self.policy_dir / HISTORY_DIR

    # ------------------------------------------------------------ reading

    def _file_dir(self, filename: str) -> Path:
        _check_name(filename)
        return self.root / filename

    def versions(self, filename: str) -> list[Version]:
        """Every recorded version of ``filename``, oldest first."""
        d = self._file_dir(filename)
        if not d.is_dir():
            return []
        out = []
        for entry in os.scandir(d):
            if not _VERSION_FILE.match(entry.name):
                continue
            try:
                meta = json.loads(Path(entry.path).read_text(encoding="utf-8"))
                out.append(Version(**{k: meta.get(k) for k in (f.name for f in dataclasses.fields(Version))}))
            except (OSError, ValueError, TypeError):
                continue  # a damaged entry must not hide the others
        return sorted(out, key=lambda v: v.number)

    def latest(self, filename: str) -> Version | None:
        vs = self.versions(filename)
        return vs[-1] if vs else None

    def get(self, filename: str, number: int) -> Version:
        for v in self.versions(filename):
            if v.number == number:
                return v
        raise KeyError(f"{filename} has no version {number}")

    def read(self, filename: str, number: int) -> str:
        """The content of a version, checked against the hash recorded for it."""
        v = self.get(filename, number)
        data = (self._file_dir(filename) / f"{number:06d}.toml").read_bytes()
        if sha256_text(data) != v.sha256:
            raise ValueError(f"{filename} v{number} in the history does not match its recorded hash")
        return data.decode("utf-8")

    # ------------------------------------------------------------ writing (caller holds the lock)

    def _mkdirs(self, filename: str) -> Path:
        for d in (self.root, self._file_dir(filename)):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        return self._file_dir(filename)

    def record(
        self,
        filename: str,
        text: str,
        *,
        author: str,
        message: str,
        rollback_of: int | None = None,
        policy_version: str | None = None,
    ) -> Version:
        d = self._mkdirs(filename)
        latest = self.latest(filename)
        number = (latest.number if latest else 0) + 1
        v = Version(
            file=filename,
            number=number,
            sha256=sha256_text(text) or "",
            author=author,
            message=message,
            created_at=_utc_now(),
            rollback_of=rollback_of,
            policy_version=policy_version,
        )
        atomic_write(d / f"{number:06d}.toml", text.encode("utf-8"))
        atomic_write(d / f"{number:06d}.json", json.dumps(dataclasses.asdict(v), indent=1).encode("utf-8"))
        return v

    def ensure_recorded(self, filename: str, text: str, *, policy_version: str | None = None) -> Version:
        """The version whose content is ``text`` at the head of the history (recorded if not)."""
        latest = self.latest(filename)
        if latest is not None and latest.sha256 == sha256_text(text):
            return latest
        message = "content before the first save in the editor" if latest is None else "changed outside the editor"
        return self.record(filename, text, author=ON_DISK_AUTHOR, message=message, policy_version=policy_version)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One save at a time: a thread lock in this process, ``flock`` across processes."""
        key = str(self.policy_dir.resolve())
        with _LOCKS_GUARD:
            tlock = _LOCKS.setdefault(key, threading.Lock())
        with tlock:
            self.root.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock


def _read_disk(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None


def save_file(
    store: Any,
    filename: str,
    text: str,
    *,
    base_sha: str | None,
    author: str,
    message: str,
    emit: Emit | None = None,
    rollback_of: int | None = None,
    audit_fields: dict[str, Any] | None = None,
) -> SaveResult:
    """Save a draft of ``filename`` through ``store`` (a PolicyStore) if nothing changed under it.

    ``base_sha`` is :func:`sha256_text` of the file as the editor opened it
    (None: the file did not exist).  Raises :class:`ConflictError` when the
    disk no longer matches it, ``PolicyLoadError`` when the draft does not
    validate or a test fails (nothing is written in either case), ValueError
    for a missing author or message.  On success the new content is in force
    (the store reloaded), recorded in the history and, when ``emit`` is
    given, audited as ``policy.changed``.
    """
    _check_name(filename)
    if not author.strip():
        raise ValueError("a change needs an author")
    if not message.strip():
        raise ValueError("describe the change in a message")
    history = PolicyHistory(store.dir)
    target = Path(store.dir) / filename
    with history.lock():
        on_disk = _read_disk(target)
        if sha256_text(on_disk) != base_sha:
            raise ConflictError(filename, base_sha, on_disk)
        old_version = history.ensure_recorded(filename, on_disk, policy_version=store.version) if on_disk is not None else None
        if on_disk == text and old_version is not None:
            return SaveResult(filename, old_version, old_version, store.version, "", changed=False)
        old_policy = store.version
        # Validation and every embedded test run inside save(); it raises
        # PolicyLoadError before anything is written.
        store.save(filename, text, require_tests=True)
        store.reload()  # no-op when save() already applied it; never wait for the poller
        new_version = history.record(
            filename, text, author=author.strip(), message=message.strip(), rollback_of=rollback_of, policy_version=store.version
        )
    diff = unified_diff(on_disk or "", text, filename, old_version.label if old_version else "new file", new_version.label)
    if emit is not None:
        emit(
            "policy.changed",
            outcome="success",
            user=author.strip(),
            policy_version=store.version,
            **(audit_fields or {}),
            details={
                "file": filename,
                "old_version": old_version.label if old_version else None,
                "new_version": new_version.label,
                "old_policy_version": old_policy,
                "diff": cap_diff(diff),
                "message": message.strip(),
                "rollback_of": f"v{rollback_of}" if rollback_of is not None else None,
            },
        )
    return SaveResult(filename, old_version, new_version, store.version, diff, changed=True)


def rollback(
    store: Any,
    filename: str,
    number: int,
    *,
    base_sha: str | None,
    author: str,
    message: str = "",
    emit: Emit | None = None,
    audit_fields: dict[str, Any] | None = None,
) -> SaveResult:
    """Save version ``number`` of ``filename`` again: validated, tested, locked and audited like any save."""
    text = PolicyHistory(store.dir).read(filename, number)
    return save_file(
        store,
        filename,
        text,
        base_sha=base_sha,
        author=author,
        message=message.strip() or f"roll back to v{number}",
        emit=emit,
        rollback_of=number,
        audit_fields=audit_fields,
    )
