"""PolicyStore: atomic loads, hot reload, rejected edits keep the last good policy."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.policy import PolicyLoadError, PolicyStore, Request, content_version

from .conftest import MONDAY_10

SALES = '[[rule]]\nid = "sales"\neffect = "allow"\ntools = ["sales"]\ngroups = ["employees"]\n'
OPS = '[[rule]]\nid = "ops"\neffect = "allow"\ntools = ["ops"]\ngroups = ["employees"]\n'
BROKEN = '[[rule]]\nid = "ops"\neffect = "allow"\ntools = ["opz"]\n'


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, action: str, *, outcome: str | None = None, **fields: Any) -> None:
        self.events.append((action, {"outcome": outcome, **fields}))

    def actions(self) -> list[str]:
        return [a for a, _ in self.events]


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # Force a visible mtime change even on coarse-timestamp file systems.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def can(store: PolicyStore, tool: str) -> bool:
    return store.current.decide(Request(user="alice", groups=["employees"], tool=tool, at=MONDAY_10)).allowed


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    write(d / "10-sales.toml", SALES)
    return d


def test_initial_load(pdir: Path) -> None:
    store = PolicyStore(pdir)
    assert store.version == content_version({"10-sales.toml": SALES.encode()})
    assert len(store.version) == 16
    assert can(store, "sales") and not can(store, "ops")
    assert store.last_error is None
    assert store.status()["files"] == ["10-sales.toml"]


def test_initial_load_failure_is_loud(pdir: Path) -> None:
    write(pdir / "20-ops.toml", BROKEN)
    with pytest.raises(PolicyLoadError) as exc:
        PolicyStore(pdir)
    assert "20-ops.toml:4" in str(exc.value) and "unknown tool 'opz'" in str(exc.value)


def test_initial_load_needs_files_and_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="no policy files"):
        PolicyStore(tmp_path)
    with pytest.raises(PolicyLoadError, match="does not exist"):
        PolicyStore(tmp_path / "missing")


def test_broken_edit_keeps_last_good_and_reports_once(pdir: Path) -> None:
    rec = Recorder()
    store = PolicyStore(pdir, emit=rec)
    good = store.version
    write(pdir / "10-sales.toml", SALES + BROKEN)
    assert store.reload() is False
    assert store.version == good
    assert can(store, "sales")
    assert store.last_error is not None and "10-sales.toml:9" in store.last_error and "opz" in store.last_error
    assert rec.actions() == ["policy.reload_rejected"]
    _, fields = rec.events[0]
    assert fields["outcome"] == "failure" and fields["policy_version"] == good
    assert "opz" in fields["reason"] and fields["details"]["rejected_version"] != good
    # same broken content again: not re-reported
    assert store.reload() is False
    assert rec.actions() == ["policy.reload_rejected"]
    # fixing it applies and clears the error
    write(pdir / "10-sales.toml", SALES + OPS)
    assert store.reload() is True
    assert store.last_error is None and can(store, "ops")
    assert rec.actions() == ["policy.reload_rejected", "policy.reloaded"]
    _, fields = rec.events[1]
    assert fields["details"]["old_version"] == good and fields["details"]["new_version"] == store.version
    assert fields["policy_version"] == store.version and fields["outcome"] == "success"


def test_reverting_a_broken_edit_clears_the_error_without_reload(pdir: Path) -> None:
    rec = Recorder()
    store = PolicyStore(pdir, emit=rec)
    write(pdir / "10-sales.toml", BROKEN)
    store.reload()
    write(pdir / "10-sales.toml", SALES)
    assert store.reload() is False
    assert store.last_error is None
    assert rec.actions() == ["policy.reload_rejected"]


def test_multi_file_change_is_all_or_nothing(pdir: Path) -> None:
    store = PolicyStore(pdir)
    # one good new file, one broken: neither is applied
    write(pdir / "20-ops.toml", OPS)
    write(pdir / "30-bad.toml", '[[rule]]\nid = "x"\neffect = "allow"\nnetworks = ["10.0.0.0/33"]\n')
    assert store.reload() is False
    assert not can(store, "ops")
    assert "30-bad.toml" in (store.last_error or "")
    (pdir / "30-bad.toml").unlink()
    assert store.reload() is True
    assert can(store, "ops")


def test_duplicate_id_in_new_file_is_rejected(pdir: Path) -> None:
    store = PolicyStore(pdir)
    write(pdir / "20-dup.toml", SALES.replace('tools = ["sales"]', 'tools = ["ops"]'))
    assert store.reload() is False
    assert "duplicate rule id 'sales'" in (store.last_error or "")
    assert not can(store, "ops")


def test_deleting_every_file_keeps_last_good(pdir: Path) -> None:
    store = PolicyStore(pdir)
    (pdir / "10-sales.toml").unlink()
    assert store.reload() is False
    assert can(store, "sales")
    assert "no policy files" in (store.last_error or "")


def test_hidden_and_non_toml_files_are_not_policy(pdir: Path) -> None:
    store = PolicyStore(pdir)
    write(pdir / ".10-sales.toml.swp.toml", BROKEN)
    write(pdir / "notes.txt", "nothing")
    (pdir / "sub.toml").mkdir()
    assert store.reload() is False
    assert store.last_error is None


def test_emit_failure_does_not_break_reload(pdir: Path) -> None:
    def bad_emit(action: str, **fields: Any) -> None:
        raise RuntimeError("audit down")

    store = PolicyStore(pdir, emit=bad_emit)
    write(pdir / "20-ops.toml", OPS)
    assert store.reload() is True and can(store, "ops")


def test_known_groups_are_enforced_on_reload(pdir: Path) -> None:
    store = PolicyStore(pdir, known_groups=["employees"])
    write(pdir / "20-ops.toml", OPS.replace("employees", "employes"))
    assert store.reload() is False
    assert "unknown group 'employes'" in (store.last_error or "")


async def test_run_picks_up_changes_and_stops(pdir: Path) -> None:
    rec = Recorder()
    store = PolicyStore(pdir, emit=rec, reload_interval_s=0.02)
    stop = asyncio.Event()
    task = asyncio.create_task(store.run(stop))
    write(pdir / "20-ops.toml", OPS)
    for _ in range(200):
        if can(store, "ops"):
            break
        await asyncio.sleep(0.01)
    assert can(store, "ops")
    write(pdir / "20-ops.toml", BROKEN)
    for _ in range(200):
        if store.last_error:
            break
        await asyncio.sleep(0.01)
    assert store.last_error and can(store, "ops")
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert rec.actions() == ["policy.reloaded", "policy.reload_rejected"]


async def test_run_catches_same_size_edit_by_hash(pdir: Path) -> None:
    store = PolicyStore(pdir, reload_interval_s=0.01)
    st = (pdir / "10-sales.toml").stat()
    # Same size, same mtime: only the periodic full hash check can see this.
    (pdir / "10-sales.toml").write_text(SALES.replace("sales", "ssles", 1))
    os.utime(pdir / "10-sales.toml", ns=(st.st_atime_ns, st.st_mtime_ns))
    stop = asyncio.Event()
    task = asyncio.create_task(store.run(stop))
    for _ in range(300):
        if store.current.rule("ssles"):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert store.current.rule("ssles") is not None


def test_save_validates_tests_and_writes_atomically(pdir: Path) -> None:
    store = PolicyStore(pdir)
    with_test = OPS + '[[test]]\nuser = "a"\ngroups = ["employees"]\ntool = "ops"\nexpect = "allow"\nexpect_rule = "ops"\n'
    store.save("20-ops.toml", with_test)
    assert can(store, "ops") and (pdir / "20-ops.toml").read_text() == with_test
    assert not [p for p in pdir.iterdir() if p.name.startswith(".")]
    before = store.version
    with pytest.raises(PolicyLoadError, match="unknown tool"):
        store.save("20-ops.toml", BROKEN)
    failing = OPS + '[[test]]\nuser = "a"\ntool = "ops"\nexpect = "allow"\n'
    with pytest.raises(PolicyLoadError, match="failed: expected allow"):
        store.save("20-ops.toml", failing)
    with pytest.raises(PolicyLoadError, match="file name"):
        store.save("../escape.toml", OPS)
    assert store.version == before and (pdir / "20-ops.toml").read_text() == with_test
    assert not (pdir.parent / "escape.toml").exists()


def test_version_depends_on_names_and_content_only(pdir: Path, tmp_path: Path) -> None:
    a = PolicyStore(pdir).version
    other = tmp_path / "copy"
    other.mkdir()
    (other / "10-sales.toml").write_text(SALES)
    assert PolicyStore(other).version == a
    (other / "10-sales.toml").rename(other / "11-sales.toml")
    assert PolicyStore(other).version != a


def test_a_poll_that_read_before_a_save_cannot_undo_the_save(tmp_path):
    """The poller reads old files, a save lands, then the poll applies: the save must win."""
    import threading

    from gateway.policy import PolicyStore

    d = tmp_path / "p"
    d.mkdir()
    rule = '[[rule]]\nid = "r"\neffect = "allow"\ndescription = "d"\ntools = ["{tool}"]\ngroups = ["employees"]\n'
    (d / "a.toml").write_text(rule.format(tool="sales"))
    store = PolicyStore(d)
    old_version = store.version

    read_done, save_may_finish = threading.Event(), threading.Event()
    real_prepare = store._prepare

    def slow_prepare(current):
        outcome = real_prepare(current)  # reads the pre-save files
        read_done.set()
        save_may_finish.wait(timeout=5)
        return outcome

    store._prepare = slow_prepare
    (d / "a.toml").write_text(rule.format(tool="ops"))  # an outside edit the poll will see
    poll = threading.Thread(target=store.reload)
    poll.start()
    assert read_done.wait(timeout=5)
    store._prepare = real_prepare
    saver = threading.Thread(target=store.save, args=("a.toml", rule.format(tool="audit")), kwargs={"require_tests": False})
    saver.start()
    saver.join(timeout=1)  # without the lock the save completes here, before the stale poll applies
    save_may_finish.set()
    poll.join(timeout=10)
    saver.join(timeout=10)
    assert store.version != old_version
    assert [r.id for r in store.current.rules] == ["r"]
    assert "audit" in (d / "a.toml").read_text()
    # What serves is what is on disk: the saved file, not the poll's stale read.
    assert store.current.decide(__import__("gateway.policy", fromlist=["Request"]).Request(user="u", groups=["employees"], tool="audit")).allowed
