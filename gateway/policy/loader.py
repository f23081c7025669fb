"""Parse and validate policy files into rules, test cases and file metadata.

Every key is checked: unknown keys, wrong types, unknown tools, bad CIDRs,
bad time zones and duplicate rule ids are errors that name the file and, when
it can be found, the line.  ``tomllib`` keeps no positions, so lines are
recovered by scanning the text for the table header and the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from datetime import time as dtime
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.tools import tool_by_id, tool_ids

from .model import DEFAULT_DENY, Problem, Request
from .paths import PathError, PathPattern
from .rules import DAY_NAMES, Rule, TimeWindow

RULE_KEYS = frozenset({
    "id", "effect", "description", "tools", "paths", "methods", "users", "groups",
    "email_domains", "networks", "time", "authenticated",
})
TEST_KEYS = frozenset({
    "name", "user", "groups", "email", "path", "tool", "method", "ip", "at", "expect", "expect_rule",
})
META_KEYS = frozenset({"owner", "description", "contact"})
TIME_KEYS = frozenset({"days", "hours", "tz"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "WEBSOCKET"})

RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_DOMAIN = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_TOML_LINE = re.compile(r"line (\d+)")

# Tests without `at` run at this fixed instant (a Monday, 10:00 UTC) so that
# time-window rules give the same answer on every run.
DEFAULT_TEST_TIME = datetime(2025, 1, 6, 10, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FileMeta:
    file: str
    owner: str = ""
    description: str = ""
    contact: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TestCase:
    file: str
    line: int | None
    name: str
    request: Request
    expect: str  # "allow" | "deny"
    expect_rule: str | None = None

    __test__ = False  # not a pytest class


@dataclass
class ParsedSet:
    rules: list[Rule]
    tests: list[TestCase]
    metas: list[FileMeta]
    problems: list[Problem]
    version: str
    sources: dict[str, str]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]


def content_version(sources: Mapping[str, str | bytes]) -> str:
    """A stable hash of the whole file set (names and bytes), 16 hex digits."""
    h = hashlib.sha256()
    for name in sorted(sources):
        data = sources[name]
        raw = data.encode("utf-8") if isinstance(data, str) else data
        h.update(name.encode("utf-8") + b"\0" + str(len(raw)).encode() + b"\0" + raw)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- line finding


class _Locator:
    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str, bool]] = []
        self.arrays: dict[str, list[int]] = {}
        for n, line in enumerate(self.lines, 1):
            m = self._HEADER.match(line)
            if m:
                name = re.sub(r"\s*\.\s*", ".", m.group(2)).replace('"', "").replace("'", "")
                is_array = m.group(1) == "[["
                self.headers.append((n, name, is_array))
                if is_array:
                    self.arrays.setdefault(name, []).append(n)

    def table_line(self, kind: str, index: int) -> int | None:
        if kind == "meta":
            return next((n for n, name, arr in self.headers if name == "meta" and not arr), None)
        lines = self.arrays.get(kind, [])
        return lines[index] if index < len(lines) else None

    def key_line(self, kind: str, index: int, key: str) -> int | None:
        start = self.table_line(kind, index)
        if start is None:
            return None
        end = len(self.lines) + 1
        for n, name, _ in self.headers:
            if n > start and not name.startswith(kind + "."):
                end = n
                break
        pat = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[.=]""")
        sub = f"{kind}.{key}"
        for n in range(start + 1, end):
            if pat.match(self.lines[n - 1]):
                return n
            if any(h == n and name.startswith(sub) for h, name, _ in self.headers):
                return n
        return start

    def id_line(self, rule_id: str) -> int | None:
        pat = re.compile(rf"""^\s*id\s*=\s*["']{re.escape(rule_id)}["']""")
        return next((n for n, line in enumerate(self.lines, 1) if pat.match(line)), None)


class _Bad(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


# ---------------------------------------------------------------- value readers


def _clean_str(key: str, v: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(v, str):
        raise _Bad(key, f"{key} must be a string, got {_tname(v)}")
    if not allow_empty and not v.strip():
        raise _Bad(key, f"{key} must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise _Bad(key, f"{key} must not contain control characters")
    return v


def _tname(v: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _str_list(key: str, v: Any) -> list[str]:
    if not isinstance(v, list):
        raise _Bad(key, f'{key} must be a list of strings, e.g. {key} = ["..."], got {_tname(v)}')
    if not v:
        raise _Bad(key, f"{key} is empty and would never match; remove the key to leave it unconstrained")
    out = []
    for item in v:
        if not isinstance(item, str):
            raise _Bad(key, f"{key} must contain only strings, found {_tname(item)} {item!r}")
        out.append(_clean_str(key, item).strip())
    return out


def _parse_tools(v: Any) -> tuple[frozenset[str], bool]:
    items = [i.lower() for i in _str_list("tools", v)]
    if "*" in items:
        if len(items) > 1:
            raise _Bad("tools", 'tools: use either "*" (any tool page) or a list of tool ids, not both')
        return frozenset(), True
    known = tool_ids()
    for i in items:
        if i not in known:
            raise _Bad("tools", f"unknown tool {i!r} (known tools: {', '.join(sorted(known))}, or \"*\")")
    return frozenset(items), False


def _parse_paths(v: Any) -> tuple[PathPattern, ...]:
    out = []
    for item in _str_list("paths", v):
        try:
            out.append(PathPattern(item))
        except ValueError as exc:
            raise _Bad("paths", str(exc)) from None
    return tuple(out)


def _parse_methods(v: Any) -> frozenset[str]:
    out = set()
    for item in _str_list("methods", v):
        m = item.upper()
        if m not in METHODS:
            raise _Bad("methods", f"unknown method {item!r} (one of {', '.join(sorted(METHODS))})")
        out.add(m)
    return frozenset(out)


def _parse_domains(v: Any) -> frozenset[str]:
    out = set()
    for item in _str_list("email_domains", v):
        d = item.lower()
        if d.startswith("@") or "@" in d:
            raise _Bad("email_domains", f"{item!r}: write the domain only, e.g. \"example.com\" (\"*.example.com\" for its subdomains)")
        if not _DOMAIN.match(d):
            raise _Bad("email_domains", f"{item!r} is not a domain name")
        out.add(d)
    return frozenset(out)


def _parse_networks(v: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for item in _str_list("networks", v):
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            hint = ""
            if "host bits set" in str(exc):
                hint = f" (did you mean {ipaddress.ip_network(item, strict=False)}?)"
            raise _Bad("networks", f"{item!r} is not a CIDR network: {exc}{hint}") from None
    return tuple(out)


def _parse_days(v: Any) -> tuple[frozenset[int], str]:
    days: set[int] = set()
    items = _str_list("time.days", v)
    for item in items:
        token = item.lower()
        ends = token.split("-")
        if len(ends) > 2 or any(e not in DAY_NAMES for e in ends):
            raise _Bad("time", f"time.days: {item!r} is not a day or range (use mon..sun, e.g. \"mon-fri\")")
        a = DAY_NAMES.index(ends[0])
        b = DAY_NAMES.index(ends[-1])
        i = a
        while True:
            days.add(i)
            if i == b:
                break
            i = (i + 1) % 7
    return frozenset(days), ",".join(i.lower() for i in items)


def _parse_hours(v: Any) -> tuple[int, int]:
    s = _clean_str("time.hours", v)
    m = _HOURS.match(s.strip())
    if not m:
        raise _Bad("time", f'time.hours: {s!r} must look like "08:00-18:00"')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise _Bad("time", f"time.hours: {s!r} is not a valid time range")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise _Bad("time", f"time.hours: {s!r} is empty (start equals end)")
    return start, end


def _parse_time(v: Any) -> TimeWindow:
    if not isinstance(v, dict):
        raise _Bad("time", f'time must be a table, e.g. time = {{ days = ["mon-fri"], hours = "08:00-18:00", tz = "Europe/Berlin" }}, got {_tname(v)}')
    unknown = sorted(set(v) - TIME_KEYS)
    if unknown:
        raise _Bad("time", f"time: unknown key {unknown[0]!r} (allowed: days, hours, tz)")
    if "days" not in v and "hours" not in v:
        raise _Bad("time", "time needs days, hours or both")
    days, days_text = _parse_days(v["days"]) if "days" in v else (None, "")
    start, end = _parse_hours(v["hours"]) if "hours" in v else (None, None)
    tz = _clean_str("time.tz", v.get("tz", "UTC")).strip()
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Bad("time", f"time.tz: unknown time zone {tz!r} (use an IANA name such as \"Europe/Berlin\" or \"UTC\")") from None
    hours_text = v["hours"].strip() if "hours" in v else ""
    return TimeWindow(days=days, start=start, end=end, tz_name=tz, days_text=days_text, hours_text=hours_text)


def _parse_bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(key, f"{key} must be true or false, got {_tname(v)} {v!r}")
    return v


# ---------------------------------------------------------------- tables


def _parse_rule(t: dict[str, Any], *, file: str, order: int) -> Rule:
    unknown = sorted(set(t) - RULE_KEYS)
    if unknown:
        raise _Bad(unknown[0], f"unknown key {unknown[0]!r} in rule (allowed: {', '.join(sorted(RULE_KEYS))})")
    if "id" not in t:
        raise _Bad("id", "rule has no id")
    rid = _clean_str("id", t["id"])
    if not RULE_ID.match(rid):
        raise _Bad("id", f"rule id {rid!r} must be letters, digits, '_', '.', ':' or '-' (max 128)")
    if rid == DEFAULT_DENY:
        raise _Bad("id", f"rule id {DEFAULT_DENY!r} is reserved")
    if "effect" not in t:
        raise _Bad("effect", f"rule {rid!r} has no effect (\"allow\" or \"deny\")")
    effect = t["effect"]
    if effect not in ("allow", "deny"):
        raise _Bad("effect", f"rule {rid!r}: effect must be \"allow\" or \"deny\", got {effect!r}")
    description = _clean_str("description", t["description"], allow_empty=True) if "description" in t else ""
    authenticated = _parse_bool("authenticated", t["authenticated"]) if "authenticated" in t else True
    tools, any_tool = _parse_tools(t["tools"]) if "tools" in t else (None, False)
    rule = Rule(
        id=rid,
        effect=effect,
        description=description.strip(),
        file=file,
        order=order,
        authenticated=authenticated,
        tools=tools,
        any_tool=any_tool,
        paths=_parse_paths(t["paths"]) if "paths" in t else None,
        methods=_parse_methods(t["methods"]) if "methods" in t else None,
        users=frozenset(u.casefold() for u in _str_list("users", t["users"])) if "users" in t else None,
        groups=frozenset(g.casefold() for g in _str_list("groups", t["groups"])) if "groups" in t else None,
        email_domains=_parse_domains(t["email_domains"]) if "email_domains" in t else None,
        networks=_parse_networks(t["networks"]) if "networks" in t else None,
        time=_parse_time(t["time"]) if "time" in t else None,
    )
    if not authenticated:
        for k in ("users", "groups", "email_domains"):
            if k in t:
                raise _Bad("authenticated", f"rule {rid!r}: authenticated = false cannot be combined with {k} (an anonymous request has none)")
        if effect == "allow" and rule.tools is None and rule.paths is None:
            raise _Bad("authenticated", f"rule {rid!r} would let anonymous users open everything; restrict it with paths or tools")
    return rule


def _parse_at(v: Any) -> datetime:
    if isinstance(v, datetime):
        at = v
    elif isinstance(v, (date, dtime)):
        raise _Bad("at", "at must be a full date and time with offset, e.g. 2025-01-06T09:30:00+01:00")
    elif isinstance(v, str):
        try:
            at = datetime.fromisoformat(v.strip())
        except ValueError:
            raise _Bad("at", f"at: {v!r} is not an RFC 3339 time, e.g. 2025-01-06T09:30:00Z") from None
    else:
        raise _Bad("at", f"at must be an RFC 3339 time string, got {_tname(v)}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise _Bad("at", f"at: {v!s} has no UTC offset (add Z or +01:00)")
    return at


def _parse_test(t: dict[str, Any], *, file: str, index: int, line: int | None) -> TestCase:
    unknown = sorted(set(t) - TEST_KEYS)
    if unknown:
        raise _Bad(unknown[0], f"unknown key {unknown[0]!r} in test (allowed: {', '.join(sorted(TEST_KEYS))})")
    name = _clean_str("name", t["name"]).strip() if "name" in t else f"test #{index + 1}"
    if "expect" not in t:
        raise _Bad("expect", f"test {name!r} has no expect (\"allow\" or \"deny\")")
    expect = t["expect"]
    if expect not in ("allow", "deny"):
        raise _Bad("expect", f"test {name!r}: expect must be \"allow\" or \"deny\", got {expect!r}")
    if "path" not in t and "tool" not in t:
        raise _Bad("path", f"test {name!r} needs a path or a tool")
    user = _clean_str("user", t["user"], allow_empty=True) if "user" in t else None
    groups = _str_list("groups", t["groups"]) if "groups" in t and t["groups"] != [] else []
    email = _clean_str("email", t["email"]) if "email" in t else None
    path = _clean_str("path", t["path"]) if "path" in t else None
    tool = _clean_str("tool", t["tool"]).lower() if "tool" in t else None
    if tool is not None and tool_by_id(tool) is None:
        raise _Bad("tool", f"test {name!r}: unknown tool {tool!r} (known tools: {', '.join(sorted(tool_ids()))})")
    method = _clean_str("method", t["method"]).upper() if "method" in t else "GET"
    if method not in METHODS:
        raise _Bad("method", f"test {name!r}: unknown method {method!r}")
    ip = _clean_str("ip", t["ip"]) if "ip" in t else None
    at = _parse_at(t["at"]) if "at" in t else DEFAULT_TEST_TIME
    expect_rule = _clean_str("expect_rule", t["expect_rule"]) if "expect_rule" in t else None
    try:
        request = Request(user=user, groups=groups, email=email, path=path, tool=tool, method=method, ip=ip, at=at)
    except PathError as exc:
        raise _Bad("path", f"test {name!r}: path {path!r} is rejected as hostile: {exc.reason}") from None
    except ValueError as exc:
        key = "ip" if "ip" in str(exc).lower() or "address" in str(exc).lower() else "tool"
        raise _Bad(key, f"test {name!r}: {exc}") from None
    return TestCase(file=file, line=line, name=name, request=request, expect=expect, expect_rule=expect_rule)


def _parse_meta(t: Any, *, file: str) -> FileMeta:
    if not isinstance(t, dict):
        raise _Bad("meta", "meta must be a table: [meta]")
    unknown = sorted(set(t) - META_KEYS)
    if unknown:
        raise _Bad(unknown[0], f"unknown key {unknown[0]!r} in [meta] (allowed: owner, description, contact)")
    owner = _clean_str("owner", t["owner"], allow_empty=True) if "owner" in t else ""
    description = _clean_str("description", t["description"], allow_empty=True) if "description" in t else ""
    contact: dict[str, str] = {}
    if "contact" in t:
        c = t["contact"]
        if not isinstance(c, dict):
            raise _Bad("contact", 'contact must be a table of tool id -> whom to ask, e.g. contact = { sales = "sales-ops@example.com", "*" = "it@example.com" }')
        known = tool_ids()
        for k, v in c.items():
            if k != "*" and k not in known:
                raise _Bad("contact", f"contact: unknown tool {k!r} (known tools: {', '.join(sorted(known))}, or \"*\")")
            contact[k] = _clean_str(f"contact.{k}", v).strip()
    return FileMeta(file=file, owner=owner.strip(), description=description.strip(), contact=contact)


# ---------------------------------------------------------------- the file set


def _tables(doc: dict[str, Any], key: str, problems: list[Problem], file: str, loc: _Locator) -> list[dict[str, Any]]:
    v = doc.get(key)
    if v is None:
        return []
    if isinstance(v, dict):
        problems.append(Problem("error", file, loc.key_line(key, 0, key) or _first_line(loc, f"[{key}]"), f"use [[{key}]] (an array of tables), not [{key}]"))
        return []
    if not isinstance(v, list) or not all(isinstance(i, dict) for i in v):
        problems.append(Problem("error", file, None, f"{key} must be written as [[{key}]] tables"))
        return []
    return v


def _first_line(loc: _Locator, needle: str) -> int | None:
    return next((n for n, line in enumerate(loc.lines, 1) if line.strip().startswith(needle)), None)


def parse_sources(sources: Mapping[str, str | bytes], *, known_groups: Iterable[str] = ()) -> ParsedSet:
    """Parse and validate a whole file set (file name -> content), in name order.

    Rule order (for "which rule decided") is file name order, then position in
    the file.  Never raises for bad content: everything is in ``problems``.
    """
    problems: list[Problem] = []
    rules: list[Rule] = []
    tests: list[TestCase] = []
    metas: list[FileMeta] = []
    texts: dict[str, str] = {}
    first_seen: dict[str, Rule] = {}
    contact_owner: dict[str, str] = {}
    if not sources:
        problems.append(Problem("error", "(policy directory)", None, "no policy files (*.toml) found; refusing to run without a policy"))

    for file in sorted(sources):
        data = sources[file]
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(Problem("error", file, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"))
                continue
        else:
            text = data
        texts[file] = text
        loc = _Locator(text)
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = _TOML_LINE.search(str(exc))
            problems.append(Problem("error", file, int(m.group(1)) if m else None, f"not valid TOML: {exc}"))
            continue

        for top in sorted(set(doc) - {"meta", "rule", "test"}):
            line = _first_line(loc, f"[{top}") or _first_line(loc, top)
            problems.append(Problem("error", file, line, f"unknown top-level key {top!r} (a policy file has [meta], [[rule]] and [[test]] tables)"))

        if "meta" in doc:
            try:
                meta = _parse_meta(doc["meta"], file=file)
                metas.append(meta)
                for tool_id in meta.contact:
                    if tool_id in contact_owner:
                        problems.append(Problem("error", file, loc.key_line("meta", 0, "contact"), f"contact for {tool_id!r} is already set in {contact_owner[tool_id]}"))
                    else:
                        contact_owner[tool_id] = file
            except _Bad as bad:
                problems.append(Problem("error", file, loc.key_line("meta", 0, bad.key), bad.message))

        for i, t in enumerate(_tables(doc, "rule", problems, file, loc)):
            header = loc.table_line("rule", i)
            rid = t.get("id") if isinstance(t.get("id"), str) else None
            try:
                rule = _parse_rule(t, file=file, order=len(rules))
            except _Bad as bad:
                line = loc.key_line("rule", i, bad.key) or (loc.id_line(rid) if rid else None)
                problems.append(Problem("error", file, line, bad.message, rid))
                continue
            rule.line = header if header is not None else loc.id_line(rule.id)
            prev = first_seen.get(rule.id.casefold())
            if prev is not None:
                problems.append(Problem("error", file, rule.line, f"duplicate rule id {rule.id!r} (first defined at {prev.where()})", rule.id))
                continue
            first_seen[rule.id.casefold()] = rule
            rules.append(rule)

        for i, t in enumerate(_tables(doc, "test", problems, file, loc)):
            line = loc.table_line("test", i)
            try:
                tests.append(_parse_test(t, file=file, index=i, line=line))
            except _Bad as bad:
                problems.append(Problem("error", file, loc.key_line("test", i, bad.key) or line, bad.message))

    ids = {r.id for r in rules}
    for tc in tests:
        if tc.expect_rule is not None and tc.expect_rule not in ids and tc.expect_rule != DEFAULT_DENY:
            problems.append(Problem("error", tc.file, tc.line, f"test {tc.name!r}: expect_rule {tc.expect_rule!r} is not a rule id (or {DEFAULT_DENY!r})"))

    known = frozenset(g.casefold() for g in known_groups)
    if known:
        for r in rules:
            for g in sorted((r.groups or frozenset()) - known):
                problems.append(Problem("error", r.file, r.line, f"rule {r.id!r}: unknown group {g!r} (known groups: {', '.join(sorted(known))})", r.id))

    return ParsedSet(rules=rules, tests=tests, metas=metas, problems=problems, version=content_version(sources), sources=texts)
