"""``gateway audit verify PATH...``: prove an audit trail was not altered.

Exit codes: 0 intact, 1 a problem (the first one named as file:line), 2 the
configuration, key or paths could not be used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.settings import ConfigError, load_settings

from .chain import load_key
from .verify import TORN_TAIL, VerifyResult, chain_groups, verify_paths


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="audit trail tools", description="Audit trail tools.")
    asub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    v = asub.add_parser(
        "verify",
        parents=[common],
        help="verify the HMAC chain of audit files",
        description=(
            "Verify audit files: each PATH is a file or a directory (all its *.jsonl files, sub-folders included). "
            "Files are checked as one series per chain, ordered by their chain links; a directory holding the "
            "trails of several replicas or workers is checked chain by chain (grouped by the replica id in "
            "the records). "
            "Exit 0 when intact, 1 naming the first bad record, 2 on a configuration/key problem."
        ),
    )
    v.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    v.add_argument(
        "--key-file",
        action="append",
        type=Path,
        metavar="FILE",
        help="audit key file instead of the config's audit.key_file; repeat to add keys used before a key change",
    )
    v.set_defaults(func=cmd_verify)


def _err(msg: str) -> None:
    sys.stderr.write(msg.rstrip("\n") + "\n")


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        if args.key_file:
            keys = [load_key(p, source="--key-file") for p in args.key_file]
        else:
            settings = load_settings(getattr(args, "config", None))
            keys = [load_key(settings.audit.key_file)]
    except ConfigError as exc:
        _err(f"configuration error: {exc}")
        return 2
    try:
        groups = chain_groups(args.paths)
        if len(groups) > 1:
            return _verify_chains(groups, keys)
        res = verify_paths(groups[0][1] if groups else args.paths, keys)
    except FileNotFoundError as exc:
        _err(f"error: {exc}")
        return 2
    except OSError as exc:
        _err(f"error: cannot read {exc.filename}: {exc.strerror}")
        return 2
    return _report(res)


def _verify_chains(groups: list[tuple[str, list[Path]]], keys: list[bytes]) -> int:
    """Several chains (replicas/workers): each verified on its own, one summary."""
    out = sys.stdout
    failed = records = files = 0
    for label, paths in groups:
        out.write(f"== chain {label}\n")
        res = verify_paths(paths, keys)
        failed += _report(res) != 0
        records += res.records
        files += len(res.files)
    if failed:
        out.write(f"FAIL: {failed} of {len(groups)} chains have a problem\n")
        return 1
    out.write(f"OK: {len(groups)} chains, {records} records in {files} files\n")
    return 0


def _report(res: VerifyResult) -> int:
    out = sys.stdout
    if res.starts_after is not None:
        out.write(f"note: the first file continues from {res.starts_after[0]} (seq {res.starts_after[1]}), which was not given\n")
    for w in res.warnings:
        out.write(f"warning: {w}\n")
    if res.problem is None:
        out.write(f"OK: {res.records} records in {len(res.files)} files\n")
        return 0
    out.write(f"FAIL: {res.problem}\n")
    if res.problem.kind == TORN_TAIL:
        out.write("  (an incomplete last line is what a crash mid-write leaves; it is not evidence that a record was edited)\n")
    else:
        out.write(f"  ({res.records} records verified before it)\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m gateway.audit.cli [audit] verify PATH...``; ``gateway audit`` is the usual one."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="gateway.toml (default: $GATEWAY_CONFIG or ./gateway.toml)")
    parser = argparse.ArgumentParser(prog="gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub, common)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["audit"]:
        argv.insert(0, "audit")
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
