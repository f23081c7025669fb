"""Saving from the editor: optimistic locking, validation and tests first, history, rollback, audit."""

from __future__ import annotations

import datetime as dt
import json
import stat
import threading
from pathlib import Path

import pytest

from gateway.policy import PolicyLoadError, PolicyStore, Request
from gateway.policy.history import (
    DIFF_LIMIT,
    ON_DISK_AUTHOR,
    ConflictError,
    PolicyHistory,
    cap_diff,
    rollback,
    save_file,
    sha256_text,
)

from .conftest import Recorder

FILE = "10-tools.toml"
MONDAY_10 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)


def alice_may(store: PolicyStore, tool: str) -> bool:
    return store.current.decide(Request(user="alice", groups=["employees"], tool=tool, at=MONDAY_10)).allowed


def without_ops(text: str) -> str:
    """Employees lose ops; its embedded test is updated so the set still passes."""
    out = text.replace('tools = ["sales", "ops"]', 'tools = ["sales"]')
    return out.replace(
        'tool = "ops"\nexpect = "allow"\nexpect_rule = "dashboards-employees"',
        'tool = "ops"\nexpect = "deny"\nexpect_rule = "default-deny"',
    )


def opened(pdir: Path) -> tuple[str, str | None]:
    text = (pdir / FILE).read_text()
    return text, sha256_text(text)


def test_save_applies_at_once_records_history_and_audits(store: PolicyStore, pdir: Path, recorder: Recorder) -> None:
    base, sha = opened(pdir)
    assert alice_may(store, "ops")
    res = save_file(store, FILE, without_ops(base), base_sha=sha, author="sam", message="ops is SRE only", emit=recorder)

    assert (pdir / FILE).read_text() == without_ops(base)
    assert not alice_may(store, "ops") and alice_may(store, "sales")  # in force without waiting for the poller
    assert res.changed and res.old_version and res.old_version.number == 1 and res.new_version.number == 2

    versions = PolicyHistory(pdir).versions(FILE)
    assert [(v.number, v.author) for v in versions] == [(1, ON_DISK_AUTHOR), (2, "sam")]
    assert versions[1].message == "ops is SRE only" and versions[1].policy_version == store.version
    assert PolicyHistory(pdir).read(FILE, 1) == base

    [event] = recorder.of("policy.changed")
    assert event["outcome"] == "success" and event["user"] == "sam" and event["policy_version"] == store.version
    d = event["details"]
    assert (d["file"], d["old_version"], d["new_version"], d["message"], d["rollback_of"]) == (FILE, "v1", "v2", "ops is SRE only", None)
    assert '-tools = ["sales", "ops"]' in d["diff"] and '+tools = ["sales"]' in d["diff"]


def test_history_is_private_and_invisible_to_the_loader(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    save_file(store, FILE, without_ops(base), base_sha=sha, author="sam", message="m")
    root = pdir / ".history"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / FILE).stat().st_mode) == 0o700
    for f in (root / FILE).iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    # A fresh store sees only the three policy files, not the history's *.toml copies.
    assert PolicyStore(pdir).status()["files"] == sorted(p.name for p in pdir.glob("*.toml"))
    assert not [p for p in pdir.iterdir() if p.name.endswith(".tmp")]


def test_a_failing_policy_test_blocks_the_save(store: PolicyStore, pdir: Path, recorder: Recorder) -> None:
    base, sha = opened(pdir)
    version = store.version
    broken = base.replace('tools = ["sales", "ops"]', 'tools = ["sales"]')  # the ops test still expects allow
    with pytest.raises(PolicyLoadError, match="employee opens ops by tool id"):
        save_file(store, FILE, broken, base_sha=sha, author="sam", message="m", emit=recorder)
    assert (pdir / FILE).read_text() == base and store.version == version and alice_may(store, "ops")
    assert recorder.of("policy.changed") == []
    assert PolicyHistory(pdir).versions(FILE)[-1].sha256 == sha  # at most the baseline was recorded


def test_invalid_toml_is_refused_with_its_line(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    with pytest.raises(PolicyLoadError) as exc:
        save_file(store, FILE, base + "\n[[rule]\nid = 'x'\n", base_sha=sha, author="sam", message="m")
    assert any(p.line for p in exc.value.problems)
    assert (pdir / FILE).read_text() == base


def test_changed_on_disk_since_opened_is_refused_with_theirs(store: PolicyStore, pdir: Path, recorder: Recorder) -> None:
    base, sha = opened(pdir)
    theirs = base + "\n# someone else's edit\n"
    (pdir / FILE).write_text(theirs)
    with pytest.raises(ConflictError) as exc:
        save_file(store, FILE, without_ops(base), base_sha=sha, author="sam", message="m", emit=recorder)
    assert exc.value.theirs == theirs and exc.value.base_sha == sha and exc.value.theirs_sha == sha256_text(theirs)
    assert (pdir / FILE).read_text() == theirs  # their change survives
    assert recorder.of("policy.changed") == [] and PolicyHistory(pdir).versions(FILE) == []


def test_a_new_file_must_not_exist_yet(store: PolicyStore, pdir: Path) -> None:
    text = '[[rule]]\nid = "extra"\neffect = "allow"\ntools = ["sales"]\nusers = ["zoe"]\n'
    res = save_file(store, "50-extra.toml", text, base_sha=None, author="sam", message="zoe gets sales")
    assert res.old_version is None and res.new_version.number == 1
    assert store.current.rule("extra") is not None
    with pytest.raises(ConflictError):
        save_file(store, "50-extra.toml", text + "# again\n", base_sha=None, author="sam", message="m")


def test_only_one_of_two_concurrent_saves_from_the_same_base_wins(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def save(extra: str) -> None:
        barrier.wait()
        try:
            save_file(store, FILE, base + extra, base_sha=sha, author="sam", message=extra)
            outcomes.append("saved")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=save, args=(f"\n# edit {i}\n",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "saved"]


def test_rollback_restores_the_rule_and_is_audited(store: PolicyStore, pdir: Path, recorder: Recorder) -> None:
    base, sha = opened(pdir)
    first = save_file(store, FILE, without_ops(base), base_sha=sha, author="sam", message="no ops", emit=recorder)
    assert not alice_may(store, "ops")
    res = rollback(store, FILE, 1, base_sha=sha256_text(without_ops(base)), author="sam", emit=recorder)
    assert alice_may(store, "ops") and (pdir / FILE).read_text() == base
    assert res.new_version.number == 3 and res.new_version.rollback_of == 1 and first.new_version.number == 2
    d = recorder.of("policy.changed")[-1]["details"]
    assert (d["old_version"], d["new_version"], d["rollback_of"], d["message"]) == ("v2", "v3", "v1", "roll back to v1")
    assert '+tools = ["sales", "ops"]' in d["diff"]


def test_rollback_is_locked_too(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    save_file(store, FILE, without_ops(base), base_sha=sha, author="sam", message="no ops")
    with pytest.raises(ConflictError):
        rollback(store, FILE, 1, base_sha=sha, author="sam")  # sha is stale: v2 is on disk
    assert not alice_may(store, "ops")


def test_rollback_is_validated_against_the_other_files(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    save_file(store, FILE, base + '\n[[rule]]\nid = "late"\neffect = "allow"\ntools = ["sales"]\nusers = ["zed"]\n', base_sha=sha, author="sam", message="m")
    # Another file now depends on rule "late" (its test names it); v1 lacks it.
    other = pdir / "90-guardrails.toml"
    other_text = other.read_text() + '\n[[test]]\nname = "zed"\nuser = "zed"\ntool = "sales"\nexpect = "allow"\nexpect_rule = "late"\n'
    save_file(store, "90-guardrails.toml", other_text, base_sha=sha256_text(other.read_text()), author="sam", message="m")
    with pytest.raises(PolicyLoadError, match="late"):
        rollback(store, FILE, 1, base_sha=sha256_text((pdir / FILE).read_text()), author="sam")


def test_a_change_made_outside_the_editor_is_kept_in_the_history(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    save_file(store, FILE, base + "# one\n", base_sha=sha, author="sam", message="one")
    outside = base + "# one\n# by hand\n"
    (pdir / FILE).write_text(outside)
    save_file(store, FILE, outside + "# three\n", base_sha=sha256_text(outside), author="sam", message="three")
    vs = PolicyHistory(pdir).versions(FILE)
    assert [(v.number, v.author) for v in vs] == [(1, ON_DISK_AUTHOR), (2, "sam"), (3, ON_DISK_AUTHOR), (4, "sam")]
    assert PolicyHistory(pdir).read(FILE, 3) == outside


def test_a_tampered_history_entry_is_not_rolled_back_to(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    save_file(store, FILE, without_ops(base), base_sha=sha, author="sam", message="m")
    v1 = pdir / ".history" / FILE / "000001.toml"
    v1.write_text(base.replace('groups = ["security"]', 'groups = ["employees"]'))
    with pytest.raises(ValueError, match="does not match"):
        rollback(store, FILE, 1, base_sha=sha256_text(without_ops(base)), author="sam")


@pytest.mark.parametrize("name", ["../escape.toml", ".history", "a/b.toml", "x.txt"])
def test_names_that_are_paths_are_refused(store: PolicyStore, pdir: Path, name: str) -> None:
    with pytest.raises(PolicyLoadError):
        save_file(store, name, "", base_sha=None, author="sam", message="m")
    assert not (pdir.parent / "escape.toml").exists()


def test_author_and_message_are_required(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    for author, message in (("", "m"), ("sam", "  ")):
        with pytest.raises(ValueError):
            save_file(store, FILE, base + "#\n", base_sha=sha, author=author, message=message)
    assert (pdir / FILE).read_text() == base


def test_saving_what_is_on_disk_changes_nothing(store: PolicyStore, pdir: Path, recorder: Recorder) -> None:
    base, sha = opened(pdir)
    res = save_file(store, FILE, base, base_sha=sha, author="sam", message="m", emit=recorder)
    assert not res.changed and recorder.of("policy.changed") == []


def test_the_audited_diff_is_capped(store: PolicyStore, pdir: Path, recorder: Recorder) -> None:
    base, sha = opened(pdir)
    big = base + "".join(f"# padding line {i} {'x' * 60}\n" for i in range(1000))
    save_file(store, FILE, big, base_sha=sha, author="sam", message="m", emit=recorder)
    diff = recorder.of("policy.changed")[0]["details"]["diff"]
    assert len(diff) <= DIFF_LIMIT + 200 and "diff truncated" in diff
    assert cap_diff("short\n") == "short\n"


def test_history_metadata_is_json_with_author_and_time(store: PolicyStore, pdir: Path) -> None:
    base, sha = opened(pdir)
    save_file(store, FILE, without_ops(base), base_sha=sha, author="sam", message="why")
    meta = json.loads((pdir / ".history" / FILE / "000002.json").read_text())
    assert meta["author"] == "sam" and meta["message"] == "why" and meta["created_at"].endswith("Z")
    assert meta["sha256"] == sha256_text(without_ops(base))
