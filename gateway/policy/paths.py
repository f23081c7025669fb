"""Request-path normalisation and the path patterns policy rules use.

The gateway decides on a *normalised* path so that every spelling of a page
(``/AUDIT``, ``//audit``, ``/%61udit``, ``/sales/../audit``, ``\\audit``)
is judged as the same page.  Spellings that cannot be normalised without
guessing (encoded slashes, control characters, ``..`` above the root) raise
:class:`PathError`; the authorization middleware answers those with 400
rather than picking an interpretation an attacker chose.

Pass the *raw* request path (ASGI ``scope["raw_path"]``, without the query
string).  ``scope["path"]`` has already been percent-decoded by the server, so
an encoded slash (``%2F``) is no longer visible there.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["PathError", "PathPattern", "normalize_path", "path_problem"]

_ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c)", re.IGNORECASE)
# Already canonical: lower-case segments of plain characters, none starting
# with a dot.  Most real paths look like this and skip the full pipeline.
_CANONICAL = re.compile(r"(?:/[a-z0-9_~-][a-z0-9_.~-]*)+")
# Double-encoding deeper than this is not a browser, it is a probe.
_MAX_DECODE_ROUNDS = 6


class PathError(ValueError):
    """The path is hostile or ambiguous; answer 400, do not decide on it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _bad_char(c: str) -> bool:
    o = ord(c)
    # C0, DEL, C1 controls and the Unicode line/paragraph separators.
    return o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029)


def normalize_path(raw: str | bytes) -> str:
    """Return the canonical, lower-case form of ``raw`` or raise :class:`PathError`.

    Steps: percent-decode until stable (an encoded ``/`` or ``\\`` at any
    level is rejected), reject control characters, ``?`` and ``#``, treat
    ``\\`` as ``/``, lower-case, drop empty and ``.`` segments, resolve
    ``..`` (rejecting any that would climb above ``/``), strip the trailing
    slash.  The result starts with ``/`` and never contains ``//``, ``\\``,
    ``..`` or a ``.`` segment; ``normalize_path(normalize_path(p)) ==
    normalize_path(p)``.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            s = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise PathError("path is not valid UTF-8") from None
    elif isinstance(raw, str):
        s = raw
    else:
        raise TypeError(f"path must be str or bytes, not {type(raw).__name__}")
    if _CANONICAL.fullmatch(s) and ".." not in s:
        return s
    return _normalize_slow(s)


def _normalize_slow(s: str) -> str:
    for _ in range(_MAX_DECODE_ROUNDS):
        # Lower-casing first keeps the result a fixed point: nothing decodable
        # can appear after the final lower() below.
        s = s.lower()
        if _ENCODED_SEPARATOR.search(s):
            raise PathError("encoded slash or backslash in path")
        try:
            decoded = unquote(s, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise PathError("percent-encoding in path is not valid UTF-8") from None
        if decoded == s:
            break
        s = decoded
    else:
        raise PathError("path is percent-encoded too many times")

    for c in s:
        if _bad_char(c):
            raise PathError("control character in path")
        if c == "?" or c == "#":
            # A decoded ? or # means the client hid a query or fragment in
            # the path; the application may split it differently than we do.
            raise PathError(f"{'query' if c == '?' else 'fragment'} delimiter inside path")

    out: list[str] = []
    for seg in s.replace("\\", "/").split("/"):
        if not seg or seg == ".":
            continue
        if seg == "..":
            if not out:
                raise PathError("path climbs above the root")
            out.pop()
            continue
        if ".." in seg:
            raise PathError("ambiguous dot sequence in path segment")
        out.append(seg)
    return "/" + "/".join(out)


def path_problem(raw: str | bytes) -> str | None:
    """Why ``raw`` is hostile or ambiguous, or None when it normalises cleanly."""
    try:
        normalize_path(raw)
    except PathError as exc:
        return exc.reason
    return None


# ---------------------------------------------------------------- patterns

_PATTERN_CHARS = re.compile(r"^[^\s?#%\\]*$")


class PathPattern:
    """A glob over normalised paths.

    ``*`` matches within one segment (``/docs/*`` matches ``/docs/a``, not
    ``/docs`` or ``/docs/a/b``); a segment that is exactly ``**`` matches zero
    or more whole segments (``/api/v1/**`` matches ``/api/v1`` and
    ``/api/v1/x/y``).  Everything else is literal.  Patterns are lower-cased
    like the paths they are matched against.
    """

    __slots__ = ("text", "kind", "literal", "prefix_segments", "_regex", "_literal_slash")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValueError("path pattern must be a string")
        if not text.startswith("/"):
            raise ValueError(f"path pattern {text!r} must start with /")
        if any(_bad_char(c) for c in text) or not _PATTERN_CHARS.match(text):
            raise ValueError(
                f"path pattern {text!r} may not contain whitespace, control characters, "
                "?, #, % or backslash (write the decoded path)"
            )
        norm = text.lower()
        body = norm[1:]
        if body.endswith("/"):
            body = body[:-1]
        segs = body.split("/") if body else []
        for seg in segs:
            if seg == "":
                raise ValueError(f"path pattern {text!r} contains an empty segment (//)")
            if seg in (".", "..") or ".." in seg:
                raise ValueError(f"path pattern {text!r} contains a dot segment; it could never match a normalised path")
            if "**" in seg and seg != "**":
                raise ValueError(f"path pattern {text!r}: ** must be a whole segment")
        self.text = "/" + "/".join(segs)
        prefix: list[str] = []
        for seg in segs:
            if "*" in seg:
                break
            prefix.append(seg)
        self.prefix_segments: tuple[str, ...] = tuple(prefix)
        self.literal = "/" + "/".join(prefix)
        self._literal_slash = self.literal.rstrip("/") + "/"
        self._regex: re.Pattern[str] | None = None
        if len(prefix) == len(segs):
            self.kind = "exact"
        elif len(prefix) == len(segs) - 1 and segs[-1] == "**":
            self.kind = "prefix"
        else:
            self.kind = "glob"
            parts = []
            for seg in segs:
                if seg == "**":
                    parts.append(r"(?:/[^/]+)*")
                elif seg == "*":
                    parts.append(r"/[^/]+")
                else:
                    parts.append("/" + "[^/]*".join(re.escape(p) for p in seg.split("*")))
            self._regex = re.compile("".join(parts))

    def matches(self, path: str) -> bool:
        """Does the normalised ``path`` match?"""
        kind = self.kind
        if kind == "exact":
            return path == self.literal
        if kind == "prefix":
            return path == self.literal or path.startswith(self._literal_slash)
        assert self._regex is not None
        return self._regex.fullmatch("" if path == "/" else path) is not None

    def covers(self, other: "PathPattern") -> bool:
        """True only when every path ``other`` matches is surely matched by self."""
        if self.text == other.text:
            return True
        if self.kind == "prefix":
            # other's fixed part lies inside our subtree
            other_fixed = other.literal if other.kind != "glob" else "/" + "/".join(other.prefix_segments)
            if self.literal == "/":
                return True
            return other_fixed == self.literal or other_fixed.startswith(self._literal_slash)
        if self.kind == "glob" and other.kind == "exact":
            return self.matches(other.literal)
        return False

    def __repr__(self) -> str:
        return f"PathPattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PathPattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)
