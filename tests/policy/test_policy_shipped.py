"""The shipped policies implement DESIGN.md, and their own tests pass and cover every rule."""

from __future__ import annotations

import re

import pytest

from gateway.policy import PolicyStore, Request, compile_sources, load_dir, run_tests
from gateway.tools import TOOLS

from .conftest import MONDAY_10, SHIPPED


def test_shipped_policy_loads_without_warnings() -> None:
    policy = load_dir(SHIPPED, lint=True)
    assert policy.warnings == ()
    assert PolicyStore(SHIPPED).version == policy.version


def test_shipped_tests_pass() -> None:
    report = run_tests(SHIPPED)
    assert report.results and report.ok, report.format_failures()


def test_every_shipped_rule_is_tested() -> None:
    policy = load_dir(SHIPPED)
    tested = {t.expect_rule for t in policy.tests}
    assert {r.id for r in policy.rules} <= tested
    assert "default-deny" in tested


# who may open which page, from DESIGN.md "The shipped tools and groups"
MATRIX = {
    "home": {"employees", "security", "auditors", "none"},
    "sales": {"employees"},
    "ops": {"employees"},
    "policies": {"security"},
    "audit": {"auditors", "security"},
    "live": {"security"},
}


@pytest.mark.parametrize("tool", [t.id for t in TOOLS])
@pytest.mark.parametrize("group", ["employees", "security", "auditors", "none"])
def test_design_matrix(tool: str, group: str) -> None:
    policy = load_dir(SHIPPED)
    groups = [] if group == "none" else [group]
    d = policy.decide(Request(user="someone", groups=groups, tool=tool, at=MONDAY_10))
    assert d.allowed is (group in MATRIX[tool]), (tool, group, d)
    # and by URL, however it is spelled
    path = "/" + tool.upper() + "/" if tool != "home" else "//"
    assert policy.decide(Request(user="someone", groups=groups, path=path, at=MONDAY_10)).allowed is d.allowed


@pytest.mark.parametrize("path", ["/_stcore/stream", "/_stcore/health", "/static/js/a.js", "/media/x.png",
                                  "/component/c/index.html", "/favicon.png", "/manifest.json",
                                  "/api/whoami", "/api/tools", "/api/policy/decision"])
def test_app_shell_and_api_for_any_signed_in_user_only(path: str) -> None:
    policy = load_dir(SHIPPED)
    assert policy.decide(Request(user="nobody-special", path=path, at=MONDAY_10)).allowed
    assert not policy.decide(Request(path=path, at=MONDAY_10)).allowed


def test_anonymous_gets_nothing() -> None:
    policy = load_dir(SHIPPED)
    for t in TOOLS:
        assert not policy.decide(Request(tool=t.id, at=MONDAY_10)).allowed


def test_page_check_over_websocket_is_by_tool_not_stcore_path() -> None:
    # The app shell rule allows /_stcore/**; a page switch must still be decided by tool.
    policy = load_dir(SHIPPED)
    assert policy.decide(Request(user="x", path="/_stcore/stream", at=MONDAY_10)).allowed
    assert not policy.decide(Request(user="x", tool="audit", at=MONDAY_10)).allowed


def test_readme_examples_are_valid_and_their_tests_pass() -> None:
    text = (SHIPPED / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    for i, block in enumerate(blocks):
        if block.lstrip().startswith("time ="):
            block = '[[rule]]\nid = "t"\neffect = "deny"\nusers = ["x"]\n' + block
        policy = compile_sources({f"example{i}.toml": block})
        report = run_tests(policy)
        assert report.ok, report.format_failures()
