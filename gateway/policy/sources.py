"""Reading a policy directory, and checking a draft before it is saved."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from .model import Problem

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.toml$")


def policy_files(directory: Path) -> list[Path]:
    """The ``*.toml`` files the policy is made of, in name order.

    Names starting with ``.`` are skipped: editors and :meth:`PolicyStore.save`
    write their temporary files under such names, and a half-written file must
    never be read as policy.  Sub-directories are not read.
    """
    out = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith(".") or not entry.name.endswith(".toml"):
                continue
            if entry.is_file():
                out.append(Path(entry.path))
    return sorted(out, key=lambda p: p.name)


def signature(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(name, mtime_ns, size, inode) per file: cheap change detection for polling."""
    sig = []
    for p in policy_files(directory):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        sig.append((p.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(sig)


def read_dir(directory: Path) -> dict[str, bytes]:
    """File name -> bytes for every policy file; OSError if the directory cannot be read."""
    return {p.name: p.read_bytes() for p in policy_files(Path(directory))}


def check_file_name(filename: str) -> str | None:
    """Why ``filename`` cannot be a policy file name (it must not be a path), or None."""
    if not isinstance(filename, str) or not _FILE_NAME.match(filename) or ".." in filename:
        return "file name must look like 20-team.toml: letters, digits, '_', '.', '-', ending in .toml, no directories"
    return None


def check_sources(sources: Mapping[str, str | bytes], *, known_groups: Iterable[str] = ()) -> list[Problem]:
    """Every error and warning for a file set: validation, then lint when it compiles."""
    from .engine import compile_parsed
    from .loader import parse_sources

    parsed = parse_sources(sources, known_groups=known_groups)
    if parsed.errors:
        return parsed.problems
    policy = compile_parsed(parsed, lint=True)
    return list(policy.warnings)


def validate_text(
    filename: str,
    text: str,
    other_files: Mapping[str, str | bytes] | None = None,
    *,
    known_groups: Iterable[str] = (),
) -> list[Problem]:
    """Problems with a draft of ``filename`` judged together with the other files.

    The policy editor calls this before saving.  ``other_files`` are the
    current files (name -> text); an entry for ``filename`` there is replaced
    by the draft.  Duplicate rule ids and contact clashes across files are
    found because the whole set is checked.  Errors block saving; warnings
    (lint) do not.
    """
    bad_name = check_file_name(filename)
    if bad_name:
        return [Problem("error", str(filename), None, bad_name)]
    sources = dict(other_files or {})
    sources[filename] = text
    return check_sources(sources, known_groups=known_groups)
