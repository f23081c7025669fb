"""The ``gateway`` command: run, init, healthcheck, users, policy, audit, token, keys.

Exit codes: 0 success, 1 a check failed (policy test, audit verify, healthcheck), 2 bad
usage or bad configuration (one line on stderr naming the key).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

from gateway.settings import ConfigError, load_settings

# Domain packages that add their own subcommands (see each one's cli.py).
_DOMAIN_CLIS = ("gateway.auth.cli", "gateway.policy.cli", "gateway.audit.cli")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="configuration file (default: $GATEWAY_CONFIG or ./gateway.toml)",
    )
    return common


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.server import serve

    settings = load_settings(args.config)
    return serve(settings, host=args.host, port=args.port, workers=args.workers)


def _cmd_init(args: argparse.Namespace) -> int:
    from gateway.init import InitError, init_dir

    try:
        result = init_dir(Path(args.dir), demo=args.demo, host=args.host, port=args.port)
    except InitError as exc:
        sys.stderr.write(f"gateway: {exc}\n")
        return 2
    out = sys.stdout
    out.write(f"Wrote {result.config_path} and fresh secret keys (mode 0600).\n")
    if result.demo_passwords:
        out.write("\nDemo users (these passwords are shown once; they are stored only as scrypt hashes):\n")
        for name, pw in result.demo_passwords.items():
            out.write(f"  {name:<8} {pw}\n")
    return 0


def _cmd_healthcheck(args: argparse.Namespace) -> int:
    from gateway.healthcheck import LIVENESS, READINESS, build_probe, run_probe

    settings = load_settings(args.config)
    healthy, line = run_probe(build_probe(settings, path=READINESS if args.ready else LIVENESS), timeout=args.timeout)
    (sys.stdout if healthy else sys.stderr).write(f"gateway: {line}\n")
    return 0 if healthy else 1


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="gateway", description="Toolgate: a gateway for internal Streamlit tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", parents=[common], help="serve the gateway")
    run.add_argument("--host", default=None, help="override server.host")
    run.add_argument("--port", type=int, default=None, help="override server.port")
    run.add_argument("--workers", type=int, default=1, help="worker processes (needs a shared state backend)")
    run.set_defaults(func=_cmd_run)

    init = sub.add_parser("init", parents=[common], help="write a ready configuration with fresh keys")
    init.add_argument("dir", nargs="?", default=".", help="folder to write into (default: .)")
    init.add_argument("--demo", action="store_true", help="also create demo users and print their passwords once")
    init.add_argument("--host", default="127.0.0.1")
    init.add_argument("--port", type=int, default=8501)
    init.set_defaults(func=_cmd_init)

    check = sub.add_parser(
        "healthcheck",
        parents=[common],
        help="probe the local gateway with the configured address, scheme and Host (for container health checks)",
    )
    check.add_argument("--ready", action="store_true", help="probe /readyz instead of /healthz")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default: 3)")
    check.set_defaults(func=_cmd_healthcheck)

    for module in _DOMAIN_CLIS:
        importlib.import_module(module).register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        sys.stderr.write(f"gateway: configuration error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
