"""The live policy: loaded at start, swapped atomically on change, never opened up.

The whole directory is one unit: every file must parse and validate or none
of the change is applied.  A rejected change leaves the last good policy
serving and is reported once (log + ``policy.reload_rejected``) per distinct
content, not on every poll.  Start-up fails loudly when the first load
fails, so the gateway cannot come up without a policy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import structlog

from gateway.fsutil import atomic_write

from .engine import Policy, compile_parsed
from .loader import content_version, parse_sources
from .model import Decision, PolicyLoadError, Problem, Request
from .sources import check_file_name, read_dir, signature
from .testing import run_tests

log = structlog.get_logger(__name__)

Emit = Callable[..., None]

# Every Nth poll re-hashes even if mtime/size/inode look unchanged (coarse
# mtime on some file systems, same-size edits within one tick).
_FULL_CHECK_EVERY = 10
_READ_ATTEMPTS = 3


class _Unstable(Exception):
    """Files changed while being read; try again on the next poll."""


@dataclass
class _Outcome:
    kind: str  # same | ok | rejected | unstable
    sig: Any = None
    policy: Policy | None = None
    version: str | None = None
    problems: list[Problem] = field(default_factory=list)


class PolicyStore:
    """Holds the current compiled :class:`Policy` for ``dir`` and keeps it fresh.

    ``emit`` follows the audit contract ``emit(action, *, outcome=None,
    **fields)``.  Use ``await store.run(stop_event)`` from the app lifespan
    to poll every ``reload_interval_s`` seconds, or call :meth:`reload`.
    """

    def __init__(
        self,
        dir: Path | str,
        *,
        emit: Emit | None = None,
        reload_interval_s: float = 2.0,
        known_groups: Iterable[str] = (),
    ) -> None:
        if reload_interval_s <= 0:
            raise ValueError("reload_interval_s must be positive")
        self.dir = Path(dir)
        self.reload_interval_s = float(reload_interval_s)
        self.known_groups = tuple(known_groups)
        self._emit = emit
        self.last_error: str | None = None
        self.problems: list[Problem] = []
        self.loaded_at = time.time()
        self._rejected_version: str | None = None
        self._lock = threading.RLock()
        where = f"policy directory {self.dir}"
        if not self.dir.is_dir():
            raise PolicyLoadError([Problem("error", str(self.dir), None, "policy directory does not exist or is not a directory")], where=where)
        outcome = self._prepare(current_version=None)
        if outcome.kind == "unstable":
            raise PolicyLoadError([Problem("error", str(self.dir), None, "policy files kept changing while being read")], where=where)
        if outcome.policy is None:
            raise PolicyLoadError(outcome.problems, where=where)
        self._policy: Policy = outcome.policy
        self._sig = outcome.sig
        log.info("policy.loaded", policy_version=self._policy.version, rules=len(self._policy.rules), files=sorted(self._policy.sources))

    # ------------------------------------------------------------ reading

    @property
    def current(self) -> Policy:
        return self._policy

    @property
    def version(self) -> str:
        return self._policy.version

    def decide(self, request: Request) -> Decision:
        return self._policy.decide(request)

    def status(self) -> dict[str, Any]:
        """For /readyz and the editor: what is serving and whether the last change was refused."""
        return {
            "policy_version": self.version,
            "rules": len(self._policy.rules),
            "files": sorted(self._policy.sources),
            "loaded_at": self.loaded_at,
            "last_error": self.last_error,
        }

    def _read(self) -> tuple[dict[str, bytes], Any]:
        for _ in range(_READ_ATTEMPTS):
            before = signature(self.dir)
            sources = read_dir(self.dir)
            after = signature(self.dir)
            if before == after and set(sources) == {s[0] for s in after}:
                return sources, after
        raise _Unstable()

    def _prepare(self, current_version: str | None) -> _Outcome:
        """Read and compile off the event loop; no side effects."""
        try:
            sources, sig = self._read()
        except _Unstable:
            return _Outcome("unstable")
        except OSError as exc:
            p = Problem("error", str(self.dir), None, f"cannot read policy directory: {exc.strerror or exc}")
            return _Outcome("rejected", version=f"oserror:{exc.errno}", problems=[p])
        version = content_version(sources)
        if version == current_version:
            return _Outcome("same", sig=sig, version=version)
        if version == self._rejected_version:
            return _Outcome("known-bad", sig=sig, version=version)
        parsed = parse_sources(sources, known_groups=self.known_groups)
        if parsed.errors:
            return _Outcome("rejected", sig=sig, version=version, problems=parsed.problems)
        try:
            policy = compile_parsed(parsed)
        except Exception as exc:  # a compile bug must not take the gateway down
            log.exception("policy.compile_failed", version=version)
            return _Outcome("rejected", sig=sig, version=version, problems=[Problem("error", str(self.dir), None, f"internal error compiling policy: {exc!r}")])
        return _Outcome("ok", sig=sig, policy=policy, version=version, problems=[p for p in parsed.problems if not p.is_error])

    def _apply(self, o: _Outcome) -> bool:
        if o.kind == "unstable":
            return False
        if o.sig is not None:
            self._sig = o.sig
        if o.kind == "same":
            if self.last_error is not None:
                log.info("policy.reload_recovered", policy_version=self.version)
            self.last_error, self.problems, self._rejected_version = None, [], None
            return False
        if o.kind == "known-bad":
            return False
        if o.kind == "rejected":
            errors = [p for p in o.problems if p.is_error]
            self.last_error = "; ".join(str(p) for p in errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")
            self.problems = errors
            self._rejected_version = o.version
            log.error("policy.reload_rejected", policy_version=self.version, rejected_version=o.version, errors=[str(p) for p in errors])
            self._send(
                "policy.reload_rejected",
                outcome="failure",
                policy_version=self.version,
                reason=self.last_error,
                details={"rejected_version": o.version, "errors": [str(p) for p in errors[:50]], "dir": str(self.dir)},
            )
            return False
        assert o.policy is not None
        old = self._policy.version
        self._policy = o.policy
        self.loaded_at = time.time()
        self.last_error, self.problems, self._rejected_version = None, [], None
        log.info("policy.reloaded", old_version=old, new_version=o.policy.version, rules=len(o.policy.rules))
        self._send(
            "policy.reloaded",
            outcome="success",
            policy_version=o.policy.version,
            details={"old_version": old, "new_version": o.policy.version, "files": sorted(o.policy.sources), "rules": len(o.policy.rules)},
        )
        return True

    def _send(self, action: str, **fields: Any) -> None:
        if self._emit is None:
            return
        try:
            self._emit(action, **fields)
        except Exception:
            # The audit layer decides what a failed write means for requests;
            # the reload loop itself must keep running.
            log.exception("policy.emit_failed", action=action)

    # ------------------------------------------------------------ reloading

    def reload(self) -> bool:
        """Re-read the directory now; True when a new version was applied.

        Read, compile and apply happen under one lock shared with ``save``:
        otherwise a poll that read the files just before a save could apply
        the old content after the save's own reload and briefly bring back a
        rule the editor had just removed.
        """
        with self._lock:
            return self._apply(self._prepare(self._policy.version))

    def changed_on_disk(self) -> bool:
        """Cheap check (stat only) whether the files look different from the last read."""
        try:
            return signature(self.dir) != self._sig
        except OSError:
            return True

    async def run(self, stop_event: asyncio.Event) -> None:
        """Poll until ``stop_event`` is set; reload on change.  Never raises on bad files."""
        polls = 0
        while not stop_event.is_set():
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=self.reload_interval_s)
                return
            except TimeoutError:
                pass
            polls += 1
            try:
                if polls % _FULL_CHECK_EVERY == 0 or await asyncio.to_thread(self.changed_on_disk):
                    await asyncio.to_thread(self.reload)
            except Exception:
                log.exception("policy.poll_failed", dir=str(self.dir))

    # ------------------------------------------------------------ saving (editor)

    def save(self, filename: str, text: str, *, require_tests: bool = True) -> Policy:
        """Validate a draft with the other current files, run all tests, then write and apply it.

        Raises PolicyLoadError (nothing written) on validation errors or, with
        ``require_tests``, failing test cases.  The write is atomic (temporary
        dot-file + rename), so the poller never sees half a file.  Auditing the
        change (``policy.changed`` with author and diff) is the caller's job.
        """
        bad = check_file_name(filename)
        if bad:
            raise PolicyLoadError([Problem("error", str(filename), None, bad)])
        with self._lock:
            return self._save_locked(filename, text, require_tests=require_tests)

    def _save_locked(self, filename: str, text: str, *, require_tests: bool) -> Policy:
        sources: dict[str, str | bytes] = dict(read_dir(self.dir))
        sources[filename] = text
        parsed = parse_sources(sources, known_groups=self.known_groups)
        if parsed.errors:
            raise PolicyLoadError(parsed.problems, where=filename)
        candidate = compile_parsed(parsed)
        if require_tests:
            report = run_tests(candidate)
            if not report.ok:
                raise PolicyLoadError(
                    [Problem("error", r.case.file, r.case.line, f"test {r.case.name!r} failed: expected {r.expected_text()}, got {r.actual_text()}") for r in report.failures],
                    where=filename,
                )
        target = self.dir / filename
        try:
            mode = target.stat().st_mode & 0o777  # an edit keeps the file's permissions
        except FileNotFoundError:
            mode = 0o644
        atomic_write(target, text.encode("utf-8"), mode)
        self.reload()
        return self._policy
