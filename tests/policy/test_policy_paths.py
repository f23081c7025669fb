"""Path normalisation: every spelling of a page is one path; hostile ones are refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy import PathError, PathPattern, normalize_path, path_problem


@pytest.mark.parametrize(
    "raw",
    ["/audit", "/AUDIT", "//audit", "/%61udit", "/%2561udit", "/sales/../audit", "/./audit/", "\\audit",
     "/Audit//", "/x/y/../../audit", "/%2e%2e/audit".replace("/%2e%2e", "/sales/%2e%2e"), b"/audit", "audit",
     "/sales/..\\audit", "/%41UDIT/."],
)
def test_spellings_of_audit_are_one_path(raw: str | bytes) -> None:
    assert normalize_path(raw) == "/audit"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("/", "/"), ("", "/"), ("//", "/"), ("/./", "/"), ("/a/b/", "/a/b"), ("/a/./b", "/a/b"),
     ("/a/b/..", "/a"), ("/café", "/café"), ("/100%", "/100%"), ("/a%20b", "/a b"),
     ("/_stcore/stream", "/_stcore/stream"), ("/static/js/index.DormvYxC.js", "/static/js/index.dormvyxc.js")],
)
def test_normal_forms(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/a%2fb", "encoded slash"),
        ("/a%2Fb", "encoded slash"),
        ("/a%5cb", "encoded slash"),
        ("/a%252fb", "encoded slash"),           # double-encoded slash
        ("/a%25252Fb", "encoded slash"),         # triple
        ("/audit%00", "control character"),
        ("/audit\x00", "control character"),
        ("/au\ndit", "control character"),
        ("/au%0ddit", "control character"),
        ("/au%7fdit", "control character"),
        ("/au%c2%85dit", "control character"),   # U+0085 NEL
        ("/..", "above the root"),
        ("/../audit", "above the root"),
        ("/a/../../audit", "above the root"),
        ("/%2e%2e/audit", "above the root"),
        ("/a..b", "dot sequence"),
        ("/...", "dot sequence"),
        ("/audit%3fx=1", "query"),
        ("/audit?x=1", "query"),
        ("/audit%23top", "fragment"),
        ("/%ff", "UTF-8"),
        (b"/\xff", "UTF-8"),
        ("/a%" + "25" * 10 + "41", "too many"),
    ],
)
def test_hostile_paths_are_refused(raw: str | bytes, why: str) -> None:
    with pytest.raises(PathError) as exc:
        normalize_path(raw)
    assert why in exc.value.reason
    assert path_problem(raw) == exc.value.reason


def test_path_problem_is_none_for_clean_paths() -> None:
    assert path_problem("/sales") is None


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        normalize_path(42)  # type: ignore[arg-type]


_alphabet = st.sampled_from(list("aAbZ/\\.%25fF0123456789_-~?#é\x00\x1f ") + ["%2e", "%2E", "%2f", "%5c", "%25", "%41", "..", "//"])
paths = st.lists(_alphabet, max_size=30).map("".join)


@settings(max_examples=600, deadline=None)
@given(paths)
def test_normalize_is_idempotent_and_clean(raw: str) -> None:
    try:
        out = normalize_path(raw)
    except PathError:
        return
    assert normalize_path(out) == out
    assert out.startswith("/")
    assert ".." not in out and "//" not in out and "\\" not in out
    assert out == "/" or not out.endswith("/")
    assert out == out.lower()
    assert "/./" not in out + "/" or out == "/"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(list("/ab.-_~Z0%") + [".."]), max_size=20).map("".join))
def test_fast_path_equals_full_pipeline(raw: str) -> None:
    from gateway.policy.paths import _normalize_slow

    try:
        slow = _normalize_slow(raw)
    except PathError:
        with pytest.raises(PathError):
            normalize_path(raw)
        return
    assert normalize_path(raw) == slow


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_normalize_arbitrary_text(raw: str) -> None:
    try:
        out = normalize_path(raw)
    except PathError:
        return
    assert normalize_path(out) == out
    assert ".." not in out and "//" not in out and "\\" not in out
    assert not any(ord(c) < 32 for c in out)


# ---------------------------------------------------------------- patterns

@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("/api/whoami", ["/api/whoami"], ["/api/whoami/x", "/api", "/api/whoamix"]),
        ("/docs/*", ["/docs/a", "/docs/b.c"], ["/docs", "/docs/a/b", "/docsx/a"]),
        ("/api/v1/**", ["/api/v1", "/api/v1/x", "/api/v1/x/y"], ["/api/v10", "/api", "/api/v2/x"]),
        ("/**", ["/", "/a", "/a/b"], []),
        ("/", ["/"], ["/a"]),
        ("/**/edit", ["/edit", "/a/edit", "/a/b/edit"], ["/a/edit/x", "/editx"]),
        ("/a*/x", ["/a/x", "/abc/x"], ["/b/x", "/a/y/x"]),
        ("/Docs/", ["/docs"], ["/docs/a"]),
        ("/a.b/*", ["/a.b/c"], ["/axb/c"]),
    ],
)
def test_pattern_matching(pattern: str, yes: list[str], no: list[str]) -> None:
    p = PathPattern(pattern)
    for path in yes:
        assert p.matches(path), (pattern, path)
    for path in no:
        assert not p.matches(path), (pattern, path)


@pytest.mark.parametrize("bad", ["api", "/a//b", "/a/../b", "/a/./b", "/a**", "/a\\b", "/a?b", "/a%2fb", "/a b", "/a\x00", "/x..y"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(ValueError):
        PathPattern(bad)


@pytest.mark.parametrize(
    ("broad", "narrow", "covered"),
    [("/a/**", "/a/b", True), ("/a/**", "/a/**", True), ("/a/**", "/a/b/**", True), ("/a/**", "/ab", False),
     ("/**", "/x/*/y", True), ("/a/*", "/a/b", True), ("/a/b", "/a/**", False), ("/a/*", "/a/**", False)],
)
def test_pattern_cover(broad: str, narrow: str, covered: bool) -> None:
    assert PathPattern(broad).covers(PathPattern(narrow)) is covered
