"""``gateway policy check|test|explain``.

Exit codes: 0 fine; 1 policy errors, failing tests or bad input; 2 the
configuration could not be loaded; ``explain`` returns 3 when the request is
denied (0 when allowed), so scripts can branch on the answer.

DIR defaults to the configuration's ``policy.dir``.  With an explicit DIR
the configuration is only read (for ``policy.known_groups``) when
``--config`` or ``GATEWAY_CONFIG`` names one, so ``gateway policy check
policies/`` works in CI without a deployed gateway.toml.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_CONFIG = 2
EXIT_DENIED = 3


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="check, test and explain access policies")
    psub = p.add_subparsers(dest="policy_command", metavar="{check,test,explain}")
    psub.required = True

    c = psub.add_parser("check", parents=[common], help="parse and lint the policy files (exit 1 on errors)")
    c.add_argument("dir", nargs="?", help="policy directory (default: the config's policy.dir)")
    c.set_defaults(func=cmd_check)

    t = psub.add_parser("test", parents=[common], help="run the [[test]] cases in the policy files")
    t.add_argument("dir", nargs="?", help="policy directory (default: the config's policy.dir)")
    t.set_defaults(func=cmd_test)

    e = psub.add_parser("explain", parents=[common], help="decide one request and say why (exit 0 allow, 3 deny)")
    e.add_argument("--user", default="", help="user name; omit for an anonymous request")
    e.add_argument("--groups", default="", help="comma-separated groups")
    e.add_argument("--email", default="")
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--path", help="request path (normalised like the gateway does)")
    where.add_argument("--tool", help="tool id, for a page check")
    e.add_argument("--method", default="GET")
    e.add_argument("--ip", default="", help="client address")
    e.add_argument("--at", default="", help="RFC 3339 time (default: now)")
    e.add_argument("--dir", dest="dir", help="policy directory (default: the config's policy.dir)")
    e.set_defaults(func=cmd_explain)


# ---------------------------------------------------------------- helpers


def _err(msg: str) -> None:
    sys.stderr.write(msg.rstrip("\n") + "\n")


def _resolve(args: argparse.Namespace) -> tuple[Path, tuple[str, ...]] | int:
    """(policy dir, known groups), or an exit code after printing one line."""
    from gateway.settings import ConfigError, load_settings

    explicit_dir = getattr(args, "dir", None)
    config = getattr(args, "config", None)
    if explicit_dir and not (config or os.environ.get("GATEWAY_CONFIG")):
        return Path(explicit_dir), ()
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _err(f"gateway: configuration error: {exc}")
        return EXIT_CONFIG
    except Exception as exc:  # unreadable file etc.: still one clear line
        _err(f"gateway: cannot load configuration: {exc}")
        return EXIT_CONFIG
    directory = Path(explicit_dir) if explicit_dir else settings.policy.dir
    return directory, tuple(settings.policy.known_groups)


def _load_sources(directory: Path) -> dict[str, bytes] | int:
    from .sources import read_dir

    if not directory.is_dir():
        _err(f"{directory}: error: policy directory does not exist")
        return EXIT_FAIL
    try:
        return read_dir(directory)
    except OSError as exc:
        _err(f"{directory}: error: cannot read: {exc.strerror or exc}")
        return EXIT_FAIL


def _show(problem: object, directory: Path) -> str:
    from .model import Problem

    assert isinstance(problem, Problem)
    # Bare file names are shown under the directory so editors can jump to them.
    plain = problem.file.startswith("(") or "/" in problem.file
    name = problem.file if plain else str(directory / problem.file)
    where = f"{name}:{problem.line}" if problem.line else name
    return f"{where}: {problem.severity}: {problem.message}"


# ---------------------------------------------------------------- commands


def _parse(args: argparse.Namespace) -> tuple[Path, dict[str, bytes], Any] | int:
    """(directory, sources, parsed) for the policy the arguments name, or the exit code after printing why not."""
    from .loader import parse_sources

    resolved = _resolve(args)
    if isinstance(resolved, int):
        return resolved
    directory, known = resolved
    sources = _load_sources(directory)
    if isinstance(sources, int):
        return sources
    return directory, sources, parse_sources(sources, known_groups=known)


def cmd_check(args: argparse.Namespace) -> int:
    from .engine import compile_parsed

    loaded = _parse(args)
    if isinstance(loaded, int):
        return loaded
    directory, sources, parsed = loaded
    problems = list(parsed.problems)
    version = parsed.version
    rules = len(parsed.rules)
    if not parsed.errors:
        problems = list(compile_parsed(parsed, lint=True).warnings)
    errors = [p for p in problems if p.is_error]
    warnings = [p for p in problems if not p.is_error]
    for p in errors + warnings:
        print(_show(p, directory))
    status = "FAILED" if errors else "ok"
    print(
        f"{status}: {len(sources)} file(s), {rules} rule(s), {len(parsed.tests)} test(s), "
        f"{len(errors)} error(s), {len(warnings)} warning(s); version {version}"
    )
    return EXIT_FAIL if errors else EXIT_OK


def _load_policy(args: argparse.Namespace, consequence: str) -> tuple[Any, Any] | int:
    """(directory, parsed sources) ready to compile, or the exit code after printing why not."""
    loaded = _parse(args)
    if isinstance(loaded, int):
        return loaded
    directory, _sources, parsed = loaded
    if parsed.errors:
        for p in parsed.errors:
            print(_show(p, directory))
        print(f"policy does not load: {len(parsed.errors)} error(s); {consequence}")
        return EXIT_FAIL
    return directory, parsed


def cmd_test(args: argparse.Namespace) -> int:
    from .engine import compile_parsed
    from .testing import run_tests

    loaded = _load_policy(args, "no tests run")
    if isinstance(loaded, int):
        return loaded
    directory, parsed = loaded
    report = run_tests(compile_parsed(parsed))
    prefix = f"{directory}/"
    text = report.format_failures(file_prefix=prefix)
    if text:
        print(text, end="")
    if not report.results:
        print("no [[test]] cases found")
    print(f"{report.summary()} (policy version {report.policy_version})")
    return EXIT_OK if report.ok else EXIT_FAIL


def cmd_explain(args: argparse.Namespace) -> int:
    from .engine import compile_parsed
    from .model import Request
    from .paths import PathError

    loaded = _load_policy(args, "cannot explain")
    if isinstance(loaded, int):
        return loaded
    directory, parsed = loaded
    policy = compile_parsed(parsed)
    at = None
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            _err(f"--at: {args.at!r} is not an RFC 3339 time")
            return EXIT_FAIL
        if at.tzinfo is None:
            _err(f"--at: {args.at!r} needs a UTC offset (Z or +01:00)")
            return EXIT_FAIL
    groups = [g for g in (s.strip() for s in args.groups.split(",")) if g]
    try:
        req = Request(
            user=args.user or None,
            groups=groups,
            email=args.email or None,
            path=args.path,
            tool=args.tool,
            method=args.method,
            ip=args.ip or None,
            at=at,
        )
    except PathError as exc:
        print(f"path {args.path!r} is rejected before policy (the gateway answers 400): {exc.reason}")
        return EXIT_FAIL
    except ValueError as exc:
        _err(f"bad request: {exc}")
        return EXIT_FAIL
    explanation = policy.explain(req)
    print(explanation.to_text(), end="")
    return EXIT_OK if explanation.decision.allowed else EXIT_DENIED


# ---------------------------------------------------------------- standalone


def build_parser() -> argparse.ArgumentParser:
    """A parser with just the policy commands (``python -m gateway.policy.cli``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=None, help="gateway.toml (default: $GATEWAY_CONFIG or ./gateway.toml)")
    parser = argparse.ArgumentParser(prog="gateway")
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
