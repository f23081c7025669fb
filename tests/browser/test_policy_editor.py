"""The policy editor as the security team uses it, in a real browser against a real gateway.

The gateway here is this module's own (its own config and policy folder), so
the edits made below never reach other tests.  The tests run in file order:
the rollback undoes the save before it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.app.conftest import Gateway, running_gateway
from tests.browser.conftest import ARTIFACTS, shot, sign_in

pytestmark = pytest.mark.browser

FILE = "10-tools.toml"
OPS_TEST_ALLOW = 'tool = "ops"\nexpect = "allow"\nexpect_rule = "dashboards-employees"'
OPS_TEST_DENY = 'tool = "ops"\nexpect = "deny"\nexpect_rule = "default-deny"'


@pytest.fixture(scope="module")
def editor_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("editor"), host="localhost") as gw:
        yield gw


def policy_file(gw: Gateway) -> Path:
    return gw.config.parent / "policies" / FILE


def status_for(gw: Gateway, user: str, path: str) -> int:
    with gw.signed_in(user) as c:
        return c.get(path).status_code


def open_editor(page, gw: Gateway) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, gw, "sam", "/policies")
    page.get_by_text("Policy editor").first.wait_for(timeout=30_000)
    page.get_by_label("Policy file").click()
    page.get_by_role("option", name=FILE).click()
    page.locator("textarea").first.wait_for()
    # Each file has its own text area: wait until the previous file's is gone.
    page.wait_for_function(
        "() => { const t = document.querySelectorAll('textarea');"
        " return t.length === 1 && t[0].value.includes('dashboards-employees'); }"
    )


# Streamlit shows "Press Enter to apply" while a typed value is not yet sent
# to the server; a button clicked before that goes would act on the old value
# (a Save of the *previous* draft).  Wait until every typed value is applied.
_UNAPPLIED = (
    "() => ![...document.querySelectorAll('[data-testid=\"InputInstructions\"]')]"
    ".some(e => e.textContent.includes('to apply'))"
)


def set_draft(page, text: str) -> None:  # type: ignore[no-untyped-def]
    box = page.get_by_label("Policy text", exact=True)
    box.fill(text)
    box.press("Control+Enter")  # commit the text area without waiting for a blur
    page.wait_for_function(_UNAPPLIED, timeout=30_000)


def set_message(page, label: str, text: str) -> None:  # type: ignore[no-untyped-def]
    box = page.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(_UNAPPLIED, timeout=30_000)


# Streamlit reruns the page after each widget change; on a loaded 2-core CI
# machine one rerun with the impact preview can take well over 20 s.
def wait_text(page, text: str, timeout: float = 60_000) -> None:  # type: ignore[no-untyped-def]
    try:
        page.get_by_text(text).first.wait_for(timeout=timeout)
    except Exception:
        # This wait has timed out in loaded full runs and never alone: keep
        # what the page showed, for whoever chases it (tests/artifacts/).
        shot(page, "FAILED-policy-editor")
        (ARTIFACTS / "FAILED-policy-editor.txt").write_text(page.locator("body").inner_text())
        raise


def audit_records(gw: Gateway, action: str) -> list[dict]:
    folder = gw.config.parent / "audit"
    out = []
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if rec["event"]["action"] == action:
                out.append(rec)
    return out


def test_edit_blocked_by_a_failing_test_then_fixed_previewed_saved_and_enforced(browser, editor_gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    gw = editor_gateway
    assert status_for(gw, "alice", "/ops") == 200  # recorded: the impact preview replays it
    original = policy_file(gw).read_text()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    open_editor(page, gw)
    shot(page, "policy-editor")

    # Employees lose ops, but the file's own [[test]] still says they have it.
    set_draft(page, original.replace('tools = ["sales", "ops"]', 'tools = ["sales"]'))
    set_message(page, "Change message", "Operations is for the SRE team only")
    page.get_by_role("button", name="Save").click()
    wait_text(page, "Not saved.")
    wait_text(page, "employee opens ops by tool id")
    page.get_by_text("FAILED 10-tools.toml").first.scroll_into_view_if_needed()
    shot(page, "policy-editor-test-blocks-save")
    assert policy_file(gw).read_text() == original

    fixed = original.replace('tools = ["sales", "ops"]', 'tools = ["sales"]').replace(OPS_TEST_ALLOW, OPS_TEST_DENY)
    set_draft(page, fixed)
    page.get_by_role("button", name="Show diff").click()
    wait_text(page, "Diff against the policy in force")
    body = page.locator("body").inner_text()
    assert '-tools = ["sales", "ops"]' in body and '+tools = ["sales"]' in body
    page.get_by_text("+++ b/10-tools.toml").first.scroll_into_view_if_needed()
    shot(page, "policy-editor-diff")

    page.get_by_role("tab", name="Impact preview").click()
    page.get_by_role("button", name="Preview impact").click()
    impact = page.locator(".st-key-pe-impact")
    impact.get_by_text("allow→deny").first.wait_for(timeout=20_000)
    rows = impact.locator("table tbody tr").all_inner_texts()
    assert any("alice" in r and "Operations" in r and "allow→deny" in r for r in rows), rows
    shot(page, "policy-editor-impact")

    page.get_by_role("tab", name="Edit").click()
    page.get_by_role("button", name="Save").click()
    wait_text(page, "Saved: v1")
    page.get_by_text("Saved: v1").first.scroll_into_view_if_needed()
    shot(page, "policy-editor-saved")
    # Enforced on the very next request: no restart, no waiting for the poller.
    assert status_for(gw, "alice", "/ops") == 403
    assert status_for(gw, "alice", "/sales") == 200
    [change] = audit_records(gw, "policy.changed")
    assert change["user"]["name"] == "sam" and change["event"]["outcome"] == "success"
    details = change["gateway"]["details"]
    assert details["file"] == FILE and details["new_version"] == "v2" and details["message"] == "Operations is for the SRE team only"
    assert '+tools = ["sales"]' in details["diff"]
    context.close()


def test_rollback_restores_the_previous_rule(browser, editor_gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    gw = editor_gateway
    assert status_for(gw, "alice", "/ops") == 403  # the save above is in force
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    open_editor(page, gw)
    page.get_by_role("tab", name="History").click()
    wait_text(page, "Operations is for the SRE team only")
    page.get_by_label("Version").click()
    page.get_by_role("option", name="v1", exact=True).click()
    wait_text(page, "Rolling back to v1 would change")
    set_message(page, "Rollback message", "Ops back for employees")
    page.get_by_role("button", name="Roll back to v1").click()
    wait_text(page, "Rolled back to v1")
    shot(page, "policy-editor-rollback")
    assert status_for(gw, "alice", "/ops") == 200
    last = audit_records(gw, "policy.changed")[-1]["gateway"]["details"]
    assert (last["rollback_of"], last["new_version"]) == ("v1", "v3")

    # Simulate: the default question (alice, employees, /ops) against the restored policy.
    page.get_by_role("tab", name="Simulate").click()
    page.get_by_role("button", name="Simulate").click()
    wait_text(page, "Explanation")
    assert "dashboards-employees" in page.locator("body").inner_text()
    shot(page, "policy-editor-simulate")
    context.close()


def test_a_concurrent_edit_is_refused_with_the_three_way_view(browser, editor_gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    gw = editor_gateway
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    open_editor(page, gw)
    draft = policy_file(gw).read_text() + "\n# sam's edit\n"
    theirs = policy_file(gw).read_text() + "\n# edited by someone else meanwhile\n"
    policy_file(gw).write_text(theirs)

    set_draft(page, draft)
    set_message(page, "Change message", "my change")
    page.get_by_role("button", name="Save").click()
    wait_text(page, "Not saved: the file changed on disk since you opened it")
    conflict = page.locator(".st-key-pe-conflict")
    # Their line and yours, anywhere in the three-way view.  Polled on the
    # container's whole text: Streamlit splits highlighted code into spans
    # and may still be re-rendering the block on a loaded machine, so a
    # locator for one text node can miss what a reader sees.
    page.wait_for_function(
        """() => { const c = document.querySelector('.st-key-pe-conflict');
                   return !!c && c.textContent.includes('edited by someone else meanwhile')
                              && c.textContent.includes("sam's edit"); }""",
        timeout=60_000,
    )
    conflict.scroll_into_view_if_needed()
    shot(page, "policy-editor-conflict")
    assert policy_file(gw).read_text() == theirs
    context.close()


def test_an_employee_gets_the_not_allowed_view_and_no_editor(browser, editor_gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, editor_gateway, "alice")
    page.get_by_text("Welcome, alice").first.wait_for(timeout=30_000)
    response = page.goto(editor_gateway.url + "/policies")
    assert response is not None and response.status == 403
    text = page.locator("body").inner_text()
    assert "Access not granted" in text and "Policy text" not in text
    assert page.locator("textarea").count() == 0
    shot(page, "policy-editor-denied-alice")
    context.close()
