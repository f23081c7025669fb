"""The policy editor and home pages run for real (AppTest) against real services: store, trail, history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from streamlit.testing.v1 import AppTest

from gateway import runtime
from gateway.audit import read_events
from gateway.services import Services, build_services
from gateway.settings import load_settings
from tests.app.conftest import USERS, add_users
from tests.helpers import make_config_dir

PAGES = Path(__file__).resolve().parents[2] / "tools_ui" / "tool_pages"
FILE = "10-tools.toml"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    config = make_config_dir(tmp_path / "gw", port=9)
    add_users(config)
    s = build_services(load_settings(config))
    s.audit.start()
    runtime.install(s)
    try:
        yield s
    finally:
        runtime.install(None)
        s.audit.close(timeout=2.0)


def as_user(name: str, groups: str | None = None) -> dict[str, str]:
    _, default_groups, email = USERS[name]
    return {"user": name, "email": email, "groups": groups if groups is not None else ",".join(default_groups), "auth_method": "password"}


def run(page: str, user: dict[str, str]) -> AppTest:
    """Run one page script; "app.py" runs the whole app (guard and navigation) on its home page."""
    at = AppTest.from_file(str(PAGES.parent / page if page == "app.py" else PAGES / page), default_timeout=30)
    at.user = user
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def events(s: Services, action: str, wait: float = 3.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + wait
    while True:
        found = list(read_events([Path(s.settings.audit.path).parent], actions={action}))
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("title", "error", "success", "warning", "info", "markdown", "code", "caption") for e in at.get(kind))


def open_file(at: AppTest, name: str = FILE) -> None:
    at.selectbox(key="pe.file").set_value(name).run()


@pytest.mark.parametrize("groups", ["auditors", "employees", "auditors,security", ""])
def test_the_editor_refuses_anyone_but_security_even_if_the_page_guard_let_them_in(services: Services, groups: str) -> None:
    at = run("policies.py", as_user("aud", groups))
    assert [t.value for t in at.title] == ["Access not granted"]
    assert len(at.text_area) == 0 and len(at.button) == 0 and len(at.selectbox) == 0
    [denied] = events(services, "page.denied")
    assert denied["user"]["name"] == "aud" and denied["gateway"]["tool"] == "policies"


def test_a_failing_test_blocks_the_save_then_the_fix_saves_and_applies(services: Services) -> None:
    pdir = Path(services.policy.dir)
    before = (pdir / FILE).read_text()
    at = run("policies.py", as_user("sam"))
    open_file(at)
    ta = at.text_area(key=f"pe.draft::{FILE}")
    ta.set_value(before.replace('tools = ["sales", "ops"]', 'tools = ["sales"]'))
    at.text_input(key=f"pe.msg::{FILE}").set_value("ops is for SRE")
    at.button[4].click().run()  # Save
    assert "Not saved" in texts(at) and "employee opens ops by tool id" in texts(at)
    assert (pdir / FILE).read_text() == before

    fixed = at.text_area(key=f"pe.draft::{FILE}").value.replace(
        'tool = "ops"\nexpect = "allow"\nexpect_rule = "dashboards-employees"', 'tool = "ops"\nexpect = "deny"\nexpect_rule = "default-deny"'
    )
    at.text_area(key=f"pe.draft::{FILE}").set_value(fixed)
    at.button[4].click().run()
    assert "Saved: v1 → **v2**" in texts(at), texts(at)
    assert (pdir / FILE).read_text() == fixed
    alice = type("U", (), {"name": "alice", "groups": ("employees",), "email": "", "ip": ""})()
    from gateway.tools import tool_by_id

    assert not services.page_allowed(alice, tool_by_id("ops"))
    [changed] = events(services, "policy.changed")
    assert changed["user"]["name"] == "sam" and changed["gateway"]["details"]["new_version"] == "v2"
    assert '+tools = ["sales"]' in changed["gateway"]["details"]["diff"]


def test_a_syntax_error_is_shown_at_its_line(services: Services) -> None:
    at = run("policies.py", as_user("sam"))
    open_file(at)
    ta = at.text_area(key=f"pe.draft::{FILE}")
    lines = ta.value.splitlines()
    lines[9] = 'effect = "allow'  # line 10: an unterminated string
    ta.set_value("\n".join(lines) + "\n")
    at.button[0].click().run()  # Validate
    errors = [e.value for e in at.error]
    assert any(e.startswith("**Line 10**") for e in errors), errors
    assert any("→ 10 │ effect = \"allow" in c.value for c in at.code)


def test_a_file_changed_on_disk_since_it_was_opened_is_not_overwritten(services: Services) -> None:
    pdir = Path(services.policy.dir)
    at = run("policies.py", as_user("sam"))
    open_file(at)
    theirs = (pdir / FILE).read_text() + "\n# their edit\n"
    (pdir / FILE).write_text(theirs)
    ta = at.text_area(key=f"pe.draft::{FILE}")
    ta.set_value(ta.value + "\n# my edit\n")
    at.text_input(key=f"pe.msg::{FILE}").set_value("mine")
    at.button[4].click().run()
    t = texts(at)
    assert "file changed on disk since you opened it" in t and "Three-way view" in t
    assert "+# their edit" in t and "+# my edit" in t
    assert (pdir / FILE).read_text() == theirs
    assert events(services, "policy.changed", wait=0.3) == []


def test_home_shows_my_activity_and_nobody_elses(services: Services) -> None:
    services.emit("auth.login", outcome="success", user="alice", auth_method="password", client_ip="10.9.9.9")
    services.emit("http.request", user="alice", path="/sales", tool="sales", method="GET", status=200, decision="allow")
    services.emit("http.request", user="sam", path="/live", tool="live", method="GET", status=200, decision="allow")
    events(services, "http.request")
    time.sleep(0.3)
    at = run("app.py", as_user("alice"))
    [table] = at.table
    frame = table.value
    assert list(frame["Where"]) == ["/sales", ""] and list(frame["What"]) == ["Opened Sales", "Signed in (password)"]
    assert "sam" not in frame.to_string() and "/live" not in frame.to_string()
    assert "Welcome, alice" in texts(at)


def test_simulate_explains_the_draft_next_to_the_policy_in_force(services: Services) -> None:
    at = AppTest.from_file(str(PAGES / "policies.py"), default_timeout=30)
    at.user = as_user("sam")
    at.session_state["pe.file"] = FILE
    at.session_state["pe.tab"] = "Simulate"
    at.run()
    # The draft (not saved) gives employees the audit viewer.
    draft = (Path(services.policy.dir) / FILE).read_text().replace('groups = ["auditors", "security"]', 'groups = ["auditors", "security", "employees"]')
    at.session_state[f"pe.draft::{FILE}"] = draft
    [path_box] = [t for t in at.text_input if t.label == "Path"]
    path_box.set_value("/audit")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    verdicts = [m.value for m in at.markdown if m.value.startswith("**")]
    assert verdicts[0].startswith("**In force**: :red-badge") and "`default-deny`" in verdicts[0]
    assert verdicts[1].startswith("**Draft**: :green-badge") and "`audit-viewer`" in verdicts[1]
    assert any("* audit-viewer" in c.value for c in at.code)


def test_a_new_file_is_created_validated_and_listed(services: Services) -> None:
    at = run("policies.py", as_user("sam"))
    at.selectbox(key="pe.file").set_value("➕ New file…").run()
    at.text_input(key="pe.newname").set_value("50-team.toml")
    at.text_input(key="pe.msg::➕ New file…").set_value("a team file")
    at.button[4].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (Path(services.policy.dir) / "50-team.toml").exists(), texts(at)
    assert services.policy.current.rule("example-rule") is not None
    assert at.selectbox(key="pe.file").value == "50-team.toml"
    assert "Saved: new file → **v1**" in texts(at)


def test_an_untouched_draft_follows_a_change_made_elsewhere(services: Services) -> None:
    pdir = Path(services.policy.dir)
    at = run("policies.py", as_user("sam"))
    open_file(at)
    theirs = (pdir / FILE).read_text() + "\n# saved from another session\n"
    (pdir / FILE).write_text(theirs)
    at.run()
    assert at.text_area(key=f"pe.draft::{FILE}").value == theirs
    assert "changed on disk by someone else" in texts(at)
    # ...and saving from there is based on their version, so it is not a conflict.
    at.text_area(key=f"pe.draft::{FILE}").set_value(theirs + "# and mine\n")
    at.text_input(key=f"pe.msg::{FILE}").set_value("on top of theirs")
    at.button[4].click().run()
    assert (pdir / FILE).read_text() == theirs + "# and mine\n", texts(at)


def path_of(node: Any, want: Any, here: tuple[int, ...] = ()) -> tuple[int, ...] | None:
    """Where ``want`` sits in the page's element tree (the browser keys widgets' components by it)."""
    if node is want:
        return here
    for i, child in getattr(node, "children", {}).items():
        found = path_of(child, want, (*here, i))
        if found is not None:
            return found
    return None


def test_a_rerun_never_pushes_typed_values_back_and_they_survive_other_tabs(services: Services) -> None:
    at = run("policies.py", as_user("sam"))
    open_file(at)
    draft = at.text_area(key=f"pe.draft::{FILE}").value + "\n# mine\n"
    at.text_area(key=f"pe.draft::{FILE}").set_value(draft)
    at.text_input(key=f"pe.msg::{FILE}").set_value("why")
    at.button[0].click().run()  # Validate
    # A value sent back from the server replaces what the browser shows: a run
    # that began before the user's last keystroke arrived would undo it.
    assert not at.text_area(key=f"pe.draft::{FILE}").proto.set_value
    assert not at.text_input(key=f"pe.msg::{FILE}").proto.set_value
    at.session_state["pe.tab"] = "History"
    at.run()
    assert len(at.text_area) == 0  # the editor is not drawn on this run
    at.session_state["pe.tab"] = "Edit"
    at.run()
    assert at.text_area(key=f"pe.draft::{FILE}").value == draft
    assert at.text_input(key=f"pe.msg::{FILE}").value == "why"


def test_an_on_disk_notice_does_not_move_the_widgets_under_the_users_hands(services: Services) -> None:
    at = run("policies.py", as_user("sam"))
    open_file(at)
    ta = at.text_area(key=f"pe.draft::{FILE}")
    ta.set_value(ta.value + "\n# mine\n").run()
    before = (path_of(at.main, at.text_area(key=f"pe.draft::{FILE}")), path_of(at.main, at.text_input(key=f"pe.msg::{FILE}")))
    (Path(services.policy.dir) / FILE).write_text((Path(services.policy.dir) / FILE).read_text() + "\n# theirs\n")
    at.run()
    assert "changed on disk since you opened it" in texts(at)
    after = (path_of(at.main, at.text_area(key=f"pe.draft::{FILE}")), path_of(at.main, at.text_input(key=f"pe.msg::{FILE}")))
    assert None not in before and before == after
