"""Validation: every mistake is an error naming file and line; nothing is ignored."""

from __future__ import annotations

import textwrap

import pytest

from gateway.policy import PolicyLoadError, compile_sources, parse_sources, validate_text


def problems(text: str, **kw: object) -> list[str]:
    parsed = parse_sources({"f.toml": textwrap.dedent(text)}, **kw)  # type: ignore[arg-type]
    return [str(p) for p in parsed.errors]


def one_error(text: str, **kw: object) -> str:
    errs = problems(text, **kw)
    assert len(errs) == 1, errs
    return errs[0]


RULE = '[[rule]]\nid = "r"\neffect = "allow"\n'


@pytest.mark.parametrize(
    ("extra", "line", "needle"),
    [
        ('colour = "red"', 4, "unknown key 'colour'"),
        ('tools = "sales"', 4, "tools must be a list"),
        ('tools = ["salse"]', 4, "unknown tool 'salse'"),
        ('tools = ["*", "sales"]', 4, 'either "*"'),
        ('tools = []', 4, "empty"),
        ('paths = ["api/x"]', 4, "must start with /"),
        ('paths = ["/a/../b"]', 4, "dot segment"),
        ('paths = ["/a%2fb"]', 4, "may not contain"),
        ('paths = [1]', 4, "only strings"),
        ('methods = ["FETCH"]', 4, "unknown method"),
        ('users = [""]', 4, "must not be empty"),
        ('groups = "admins"', 4, "must be a list"),
        ('email_domains = ["@example.com"]', 4, "domain only"),
        ('email_domains = ["exa mple.com"]', 4, "not a domain"),
        ('networks = ["10.0.0.1/8"]', 4, "did you mean 10.0.0.0/8"),
        ('networks = ["10.0.0.0/33"]', 4, "not a CIDR"),
        ('networks = ["office"]', 4, "not a CIDR"),
        ('time = "9-5"', 4, "time must be a table"),
        ('time = { tz = "UTC" }', 4, "needs days, hours"),
        ('time = { days = ["monday"] }', 4, "not a day"),
        ('time = { hours = "9-17" }', 4, '"08:00-18:00"'),
        ('time = { hours = "09:00-09:00" }', 4, "empty"),
        ('time = { hours = "25:00-26:00" }', 4, "not a valid time"),
        ('time = { days = ["mon"], tz = "Mars/Olympus" }', 4, "unknown time zone"),
        ('time = { days = ["mon"], zone = "UTC" }', 4, "unknown key 'zone'"),
        ('authenticated = "no"', 4, "true or false"),
        ('authenticated = false\ngroups = ["g"]', 4, "cannot be combined"),
        ('authenticated = false', 4, "anonymous users open everything"),
        ('description = 5', 4, "must be a string"),
    ],
)
def test_rule_errors_name_file_and_line(extra: str, line: int, needle: str) -> None:
    err = one_error(RULE + extra + "\n")
    assert err.startswith(f"f.toml:{line}: error:"), err
    assert needle in err, err


def test_subtable_time_error_points_at_its_header() -> None:
    err = one_error(RULE + '\n[rule.time]\ndays = ["funday"]\n')
    assert err.startswith("f.toml:5:") and "funday" in err


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[rule]]\neffect = "allow"\n', "no id"),
        ('[[rule]]\nid = "r"\n', "no effect"),
        ('[[rule]]\nid = "r"\neffect = "permit"\n', 'effect must be "allow" or "deny"'),
        ('[[rule]]\nid = "bad id!"\neffect = "allow"\n', "must be letters"),
        ('[[rule]]\nid = "default-deny"\neffect = "allow"\n', "reserved"),
        ('[rule]\nid = "r"\neffect = "allow"\n', "use [[rule]]"),
        ('[[rules]]\nid = "r"\n', "unknown top-level key 'rules'"),
        ('[meta]\nowner = "x"\nteam = "y"\n', "unknown key 'team' in [meta]"),
        ('[meta]\ncontact = { salse = "x" }\n', "unknown tool 'salse'"),
        ('[meta]\ncontact = "x"\n', "contact must be a table"),
        ("[[rule]\nid = 1\n", "not valid TOML"),
    ],
)
def test_structure_errors(text: str, needle: str) -> None:
    err = one_error(text)
    assert needle in err, err
    assert err.startswith("f.toml:")


def test_toml_syntax_error_has_line() -> None:
    err = one_error('[[rule]]\nid = "r"\neffect = "allow"\npaths = ["/a",\n')
    assert "not valid TOML" in err and err.startswith("f.toml:")


def test_error_lines_for_second_rule() -> None:
    text = RULE + "\n" + '[[rule]]\nid = "s"\neffect = "allow"\nbogus = 1\n'
    err = one_error(text)
    assert err.startswith("f.toml:8:"), err


def test_duplicate_ids_across_files() -> None:
    parsed = parse_sources({"a.toml": RULE, "b.toml": "# x\n" + RULE})
    errs = [str(p) for p in parsed.errors]
    assert errs == ["b.toml:2: error: duplicate rule id 'r' (first defined at a.toml:1)"]


def test_duplicate_ids_are_case_insensitive() -> None:
    parsed = parse_sources({"a.toml": RULE + '[[rule]]\nid = "R"\neffect = "deny"\n'})
    assert any("duplicate rule id 'R'" in str(p) for p in parsed.errors)


def test_contact_clash_across_files() -> None:
    parsed = parse_sources({"a.toml": '[meta]\ncontact = { sales = "x" }\n', "b.toml": '[meta]\ncontact = { sales = "y" }\n'})
    assert [p.message for p in parsed.errors] == ["contact for 'sales' is already set in a.toml"]


@pytest.mark.parametrize(
    ("test", "needle"),
    [
        ('path = "/x"', "has no expect"),
        ('expect = "allow"', "needs a path or a tool"),
        ('path = "/x"\nexpect = "yes"', 'expect must be "allow" or "deny"'),
        ('path = "/x"\nexpect = "allow"\nexpect_rule = "nope"', "expect_rule 'nope' is not a rule id"),
        ('path = "/a%2fb"\nexpect = "deny"', "rejected as hostile"),
        ('tool = "nope"\nexpect = "deny"', "unknown tool"),
        ('path = "/x"\nexpect = "deny"\nip = "10.0.0.300"', "does not appear to be"),
        ('path = "/x"\nexpect = "deny"\nat = "2025-01-06T10:00:00"', "no UTC offset"),
        ('path = "/x"\nexpect = "deny"\nat = "monday"', "not an RFC 3339"),
        ('path = "/x"\nexpect = "deny"\nat = 2025-01-06', "full date and time"),
        ('path = "/x"\nexpect = "deny"\nwho = "me"', "unknown key 'who' in test"),
        ('path = "/x"\nexpect = "deny"\ntool = "sales"', "does not match path"),
    ],
)
def test_test_case_errors(test: str, needle: str) -> None:
    err = one_error(RULE + "\n[[test]]\n" + test + "\n")
    assert needle in err, err
    assert err.startswith("f.toml:5:") or err.startswith("f.toml:6:") or err.startswith("f.toml:7:") or err.startswith("f.toml:8:"), err


def test_toml_datetime_accepted_for_at() -> None:
    assert problems(RULE + '[[test]]\npath = "/x"\nuser = "u"\nexpect = "allow"\nat = 2025-01-06T10:00:00+01:00\n') == []


def test_unknown_groups_are_errors_when_known_groups_configured() -> None:
    text = RULE + 'groups = ["employees", "emploees"]\n'
    assert problems(text) == []
    err = one_error(text, known_groups=["employees", "security"])
    assert "unknown group 'emploees'" in err and err.startswith("f.toml:1:")


def test_no_files_is_an_error() -> None:
    with pytest.raises(PolicyLoadError, match="no policy files"):
        compile_sources({})


def test_invalid_utf8() -> None:
    parsed = parse_sources({"f.toml": b"# \xff\n"})
    assert "not valid UTF-8" in str(parsed.errors[0])


def test_compile_raises_with_all_errors() -> None:
    with pytest.raises(PolicyLoadError) as exc:
        compile_sources({"a.toml": RULE + "x = 1\n", "b.toml": '[[rule]]\nid = "s"\neffect = "nope"\n'})
    assert len(exc.value.problems) == 2
    assert "a.toml:4" in str(exc.value) and "b.toml:3" in str(exc.value)


# ---------------------------------------------------------------- validate_text (editor)

def test_validate_text_checks_the_draft_with_the_other_files() -> None:
    others = {"a.toml": RULE, "b.toml": '[[rule]]\nid = "s"\neffect = "allow"\ntools = ["ops"]\n'}
    assert not [p for p in validate_text("b.toml", '[[rule]]\nid = "s2"\neffect = "allow"\ntools = ["ops"]\n', others) if p.is_error]
    probs = validate_text("c.toml", RULE, others)
    assert [p.message for p in probs if p.is_error] == ["duplicate rule id 'r' (first defined at a.toml:1)"]


def test_validate_text_replaces_the_saved_version() -> None:
    others = {"a.toml": RULE}
    assert [p for p in validate_text("a.toml", RULE + 'tools = ["ops"]\n', others) if p.is_error] == []


@pytest.mark.parametrize("name", ["../x.toml", "sub/x.toml", ".hidden.toml", "x.txt", "", "a\\b.toml"])
def test_validate_text_rejects_file_names_that_are_paths(name: str) -> None:
    probs = validate_text(name, RULE, {})
    assert len(probs) == 1 and probs[0].is_error and "file name" in probs[0].message


def test_validate_text_includes_lint_warnings() -> None:
    probs = validate_text("a.toml", RULE, {})
    assert [p.severity for p in probs] == ["warning"]
    assert "no conditions" in probs[0].message
