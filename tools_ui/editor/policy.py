"""What the policy editor page does, without Streamlit: checks, drafts, saving as a person.

The page guard already keeps everyone but the policy's chosen group off the
page; saving is checked again here, by group, because a policy edit could
open the page to others (for instance to let auditors look) and must never
thereby let them change the policy they audit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.policy import Policy, PolicyLoadError, Problem, Request, TestReport, compile_sources, read_dir, run_tests, validate_text
from gateway.policy.history import PolicyHistory, SaveResult, rollback, save_file, sha256_text

EDITOR_GROUP = "security"
NEVER_GROUPS = frozenset({"auditors"})  # separation of duties: who audits a change never makes it

NEW_FILE_TEMPLATE = """# What this file is for, in one line.

[meta]
owner = "security team"
description = ""

[[rule]]
id = "example-rule"
effect = "allow"
description = "Who may open what, and why"
tools = ["sales"]
users = ["new.hire"]

[[test]]
name = "the new hire opens sales"
user = "new.hire"
tool = "sales"
expect = "allow"
expect_rule = "example-rule"
"""


class NotPermitted(Exception):
    """The signed-in user may not change policies."""


def can_change(user: Any) -> bool:
    """Only signed-in members of ``security`` who are not auditors may save or roll back."""
    if not getattr(user, "name", ""):
        return False
    groups = {g.casefold() for g in getattr(user, "groups", ())}
    return EDITOR_GROUP in groups and not (groups & NEVER_GROUPS)


def _audit_fields(user: Any) -> dict[str, Any]:
    return {
        "email": getattr(user, "email", "") or None,
        "groups": list(getattr(user, "groups", ())),
        "client_ip": getattr(user, "ip", "") or None,
    }


def _refuse(user: Any, services: Any, filename: str, what: str) -> None:
    services.emit(
        "policy.changed",
        outcome="failure",
        user=getattr(user, "name", "") or None,
        reason=f"{what} refused: the user is not allowed to change policies",
        **_audit_fields(user),
        details={"file": filename},
    )
    raise NotPermitted(f"You may not {what} policies: that needs group '{EDITOR_GROUP}' (and auditors never may).")


def save_as(user: Any, services: Any, filename: str, text: str, *, base_sha: str | None, message: str) -> SaveResult:
    """Save a draft as ``user``: permission, then lock, validation, tests, write, history, audit."""
    if not can_change(user):
        _refuse(user, services, filename, "save")
    return save_file(
        services.policy, filename, text, base_sha=base_sha, author=user.name, message=message,
        emit=services.emit, audit_fields=_audit_fields(user),
    )  # fmt: skip


def rollback_as(user: Any, services: Any, filename: str, number: int, *, base_sha: str | None, message: str) -> SaveResult:
    if not can_change(user):
        _refuse(user, services, filename, "roll back")
    return rollback(
        services.policy, filename, number, base_sha=base_sha, author=user.name, message=message,
        emit=services.emit, audit_fields=_audit_fields(user),
    )  # fmt: skip


# ---------------------------------------------------------------- reading the directory


def disk_text(policy_dir: Path, filename: str) -> str | None:
    try:
        return (Path(policy_dir) / filename).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def opened(policy_dir: Path, filename: str) -> tuple[str, str | None]:
    """(text, content hash) of a file as the editor opens it; ("", None) for a new file."""
    text = disk_text(policy_dir, filename)
    return (text or "", sha256_text(text))


def draft_set(policy_dir: Path, filename: str, draft: str) -> dict[str, str | bytes]:
    sources: dict[str, str | bytes] = dict(read_dir(Path(policy_dir)))
    sources[filename] = draft
    return sources


# ---------------------------------------------------------------- checks


@dataclass
class Check:
    """What validate / test found for one draft."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    report: TestReport | None = None
    policy: Policy | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and (self.report is None or self.report.ok)


def validate(policy_dir: Path, filename: str, draft: str, known_groups: Iterable[str] = ()) -> Check:
    problems = validate_text(filename, draft, read_dir(Path(policy_dir)), known_groups=known_groups)
    return Check(errors=[p for p in problems if p.is_error], warnings=[p for p in problems if not p.is_error])


def compile_draft(policy_dir: Path, filename: str, draft: str, known_groups: Iterable[str] = ()) -> Policy:
    """The whole policy as it would be with the draft saved; PolicyLoadError if it does not load."""
    return compile_sources(draft_set(policy_dir, filename, draft), known_groups=known_groups)


def run_draft_tests(policy_dir: Path, filename: str, draft: str, known_groups: Iterable[str] = ()) -> Check:
    """Validate, then run every embedded test of every file with the draft in place."""
    check = validate(policy_dir, filename, draft, known_groups)
    if check.errors:
        return check
    try:
        check.policy = compile_draft(policy_dir, filename, draft, known_groups)
    except PolicyLoadError as exc:
        check.errors = list(exc.problems)
        return check
    check.report = run_tests(check.policy)
    return check


def excerpt(text: str, line: int | None, context: int = 2) -> str:
    """The lines around ``line`` with a marker on it, numbered like an editor."""
    if not line:
        return ""
    lines = text.splitlines() or [""]
    lo, hi = max(1, line - context), min(len(lines), line + context)
    width = len(str(hi))
    return "\n".join(f"{'→' if n == line else ' '} {n:>{width}} │ {lines[n - 1]}" for n in range(lo, hi + 1))


def problems_in(problems: Iterable[Problem], filename: str) -> tuple[list[Problem], list[Problem]]:
    """(problems in the edited file, problems in other files) - the latter the draft caused elsewhere."""
    here, elsewhere = [], []
    for p in problems:
        (here if p.file == filename else elsewhere).append(p)
    return here, elsewhere


# ---------------------------------------------------------------- simulation


def simulated_request(
    *, user: str, groups: str, email: str, path: str, method: str, ip: str, at: dt.datetime
) -> Request:
    """A Request from the form's text fields; ValueError (PathError included) for bad input."""
    names = [g.strip() for g in groups.replace(";", ",").split(",") if g.strip()]
    return Request(user=user.strip() or None, groups=names, email=email.strip() or None, path=path.strip() or "/", method=method, ip=ip.strip() or None, at=at)


def rules_table(policy: Policy) -> list[dict[str, Any]]:
    return [
        {"file": r.file, "line": r.line, "rule": r.id, "effect": r.effect, "conditions": r.conditions_text(), "description": r.description}
        for r in policy.rules
    ]


def files_overview(policy: Policy) -> list[dict[str, Any]]:
    metas = {m.file: m for m in policy.metas}
    out = []
    for name in sorted(policy.sources):
        rules = [r for r in policy.rules if r.file == name]
        tests = [t for t in policy.tests if t.file == name]
        m = metas.get(name)
        out.append({
            "file": name, "rules": len(rules), "allow": sum(1 for r in rules if not r.deny),
            "deny": sum(1 for r in rules if r.deny), "tests": len(tests),
            "owner": m.owner if m else "", "description": m.description if m else "",
        })  # fmt: skip
    return out


def history_rows(history: PolicyHistory, filename: str, on_disk_sha: str | None = None) -> list[dict[str, Any]]:
    """Newest first; the version whose content is on disk now is marked."""
    return [
        {
            "Version": v.label + (" ●" if v.sha256 == on_disk_sha else ""), "Saved (UTC)": v.created_at.replace("T", " ").replace("Z", ""),
            "Author": v.author, "Message": v.message, "Rollback of": f"v{v.rollback_of}" if v.rollback_of else "", "SHA-256": v.sha256[:12],
        }
        for v in reversed(history.versions(filename))
    ]  # fmt: skip


def three_way(base: str | None, theirs: str | None, yours: str, filename: str) -> Mapping[str, str]:
    """The diffs a person needs to merge by hand: what they changed, and what you changed."""
    from gateway.policy.history import unified_diff

    return {
        "theirs": unified_diff(base or "", theirs or "", filename, "when you opened it", "on disk now"),
        "yours": unified_diff(base or "", yours, filename, "when you opened it", "your draft"),
    }
