"""``gateway users ...``, ``gateway token create``, ``gateway keys rotate``.

Passwords are read from standard input only (``--password-stdin``; from a
terminal, a no-echo prompt asked twice), never from the command line where
``ps`` and shell history would keep them.  Every file written here is
replaced atomically and left with mode 0600.

Exit codes: 0 done, 1 refused (weak password, unknown user, ...), 2 bad
configuration or usage.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path
from typing import Callable

from gateway.auth.keyring import (
    KeyRing,
    KeyRingError,
    new_session_key,
    new_token_key_line,
    parse_session_keys,
    parse_token_keys,
    write_private,
)
from gateway.auth.passwords import WeakPasswordError
from gateway.auth.tokens import mint_token
from gateway.auth.users import UserDirectory, UserError
from gateway.settings import ConfigError, Settings, load_settings


def _err(message: str) -> None:
    sys.stderr.write(f"gateway: {message}\n")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _csv(text: str) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def read_password(*, confirm: bool) -> str:
    """One line from stdin (newline stripped); a no-echo prompt on a terminal."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != first:
            raise UserError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise UserError("no password on standard input")
    return line.rstrip("\r\n")


def _handled(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ConfigError as exc:
            _err(f"configuration error: {exc}")
            return 2
        except (UserError, WeakPasswordError, KeyRingError, ValueError) as exc:
            _err(str(exc))
            return 1

    run.__name__ = fn.__name__
    return run


# ------------------------------------------------------------------ users


def _directory(args: argparse.Namespace) -> UserDirectory:
    path = Path(args.users_file) if getattr(args, "users_file", None) else _settings(args).auth.users_file
    return UserDirectory(path, warm=False)


def _require_stdin_flag(args: argparse.Namespace) -> None:
    if not args.password_stdin:
        raise UserError("passwords are read from standard input only: pass --password-stdin")


@_handled
def users_add(args: argparse.Namespace) -> int:
    _require_stdin_flag(args)
    directory = _directory(args)
    password = read_password(confirm=True)
    user = directory.add(args.name, password, groups=_csv(args.groups), email=args.email or "")
    sys.stdout.write(f"added user {user.name} (groups: {', '.join(user.groups) or '-'}) to {directory.path}\n")
    return 0


@_handled
def users_passwd(args: argparse.Namespace) -> int:
    _require_stdin_flag(args)
    directory = _directory(args)
    if directory.get(args.name) is None:
        raise UserError(f"no such user {args.name!r}")
    password = read_password(confirm=True)
    directory.set_password(args.name, password)
    sys.stdout.write(f"password changed for {args.name}; their existing sessions are ended\n")
    return 0


@_handled
def users_disable(args: argparse.Namespace) -> int:
    _directory(args).set_disabled(args.name, True)
    sys.stdout.write(f"disabled {args.name}; their existing sessions are ended\n")
    return 0


@_handled
def users_enable(args: argparse.Namespace) -> int:
    _directory(args).set_disabled(args.name, False)
    sys.stdout.write(f"enabled {args.name}\n")
    return 0


@_handled
def users_groups(args: argparse.Namespace) -> int:
    user = _directory(args).set_groups(args.name, _csv(args.groups))
    sys.stdout.write(f"groups of {user.name}: {', '.join(user.groups) or '-'}\n")
    return 0


@_handled
def users_revoke(args: argparse.Namespace) -> int:
    _directory(args).revoke_sessions(args.subject)
    sys.stdout.write(f"ended every session of {args.subject} issued before now\n")
    return 0


@_handled
def users_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "EMAIL", "GROUPS", "STATUS")]
    for u in _directory(args).list_users():
        rows.append((u.name, u.email or "-", ",".join(u.groups) or "-", "disabled" if u.disabled else "active"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
    return 0


# ------------------------------------------------------------------ tokens


@_handled
def token_revoke(args: argparse.Namespace) -> int:
    """Refuse one API token from now on, by its jti, or by the token itself read from stdin."""
    s = _settings(args).auth
    jti, until = args.jti, time.time() + s.token_max_ttl_s + 60  # no expiry known: as long as any token can live
    if args.token_stdin:
        if jti:
            raise UserError("give the jti or --token-stdin, not both")
        claims = _unverified_claims(sys.stdin.readline().strip())
        jti = claims.get("jti")
        if isinstance(claims.get("exp"), (int, float)) and not isinstance(claims.get("exp"), bool):
            until = min(until, float(claims["exp"]) + 60)
    if not jti:
        raise UserError("name the token: its jti (printed by `gateway token create`), or --token-stdin")
    _directory(args).revoke_token(jti, until=until)
    kept = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
    sys.stdout.write(f"token {jti} is refused from now on (kept on the list until {kept}); the subject's other tokens still work\n")
    return 0


def _unverified_claims(token: str) -> dict:
    """A token's claims, signature not checked: only to find which token to refuse."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise UserError("that is not a JWT") from None
    return claims if isinstance(claims, dict) else {}


@_handled
def token_create(args: argparse.Namespace) -> int:
    s = _settings(args).auth
    ring = KeyRing(s.token_key_file, name="token", parser=parse_token_keys)
    if args.ttl > s.token_max_ttl_s:
        _err(f"--ttl {args.ttl} exceeds auth.token_max_ttl_s; capped to {s.token_max_ttl_s} seconds")
    token, claims = mint_token(
        ring,
        subject=args.sub,
        groups=_csv(args.groups),
        ttl_s=args.ttl,
        issuer=s.token_issuer,
        audience=s.token_audience,
        max_ttl_s=s.token_max_ttl_s,
        email=args.email or "",
    )
    sys.stdout.write(token + "\n")
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
    sys.stderr.write(f"token for {args.sub} (jti {claims['jti']}), expires {expires}\n")
    return 0


# ------------------------------------------------------------------ keys


def rotate_file(path: Path, *, ring: str, keep: int) -> str:
    """Prepend a fresh key, keep ``keep`` previous ones; returns the new key's id."""
    parser = parse_session_keys if ring == "session" else parse_token_keys
    text = path.read_text(encoding="utf-8")
    parser(text)  # refuse to rotate a file that does not parse
    old = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    line = new_session_key() if ring == "session" else new_token_key_line()
    new_text = (
        f"# {ring} keys: the first signs, all verify. Rotated {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}.\n"
        + "\n".join([line, *old[:keep]])
        + "\n"
    )
    entries = parser(new_text)
    write_private(path, new_text)
    return entries[0][0]


@_handled
def keys_rotate(args: argparse.Namespace) -> int:
    if args.keep < 0:
        raise UserError("--keep must not be negative")
    settings = _settings(args)
    targets = {"session": settings.session.keys_file, "token": settings.auth.token_key_file}
    names = ["session", "token"] if args.ring == "all" else [args.ring]
    for name in names:
        kid = rotate_file(targets[name], ring=name, keep=args.keep)
        sys.stdout.write(f"{name} keys rotated in {targets[name]}: new signing key {kid}, {args.keep} old kept\n")
    sys.stdout.write("running gateways pick the new keys up within seconds (audited as keys.rotated)\n")
    return 0


# ------------------------------------------------------------------ wiring


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``users``, ``token`` and ``keys`` to the ``gateway`` command."""
    users = sub.add_parser("users", help="manage local users (auth.users_file)")
    usub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")

    def leaf(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = usub.add_parser(name, parents=[common], help=help_text)
        p.add_argument("--users-file", help="edit this file instead of the configured auth.users_file")
        p.set_defaults(func=func)
        return p

    p = leaf("add", "add a user (password from stdin)", users_add)
    p.add_argument("name")
    p.add_argument("--groups", default="", help="comma-separated, e.g. employees,security")
    p.add_argument("--email", default="")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (required)")

    p = leaf("passwd", "change a password (ends the user's sessions)", users_passwd)
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (required)")

    p = leaf("disable", "disable a user (ends the user's sessions)", users_disable)
    p.add_argument("name")
    p = leaf("enable", "enable a disabled user", users_enable)
    p.add_argument("name")
    p = leaf("groups", "replace a user's groups", users_groups)
    p.add_argument("name")
    p.add_argument("--groups", required=True, help="comma-separated; empty string for none")
    p = leaf("revoke", "end every session and API token of a user or any other subject (OIDC, service, ...)", users_revoke)
    p.add_argument("subject")
    leaf("list", "list users", users_list)

    token = sub.add_parser("token", help="API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    p = tsub.add_parser("create", parents=[common], help="mint an API token (printed to stdout)")
    p.add_argument("--sub", required=True, help="the subject (user name) the token acts as")
    p.add_argument("--groups", default="")
    p.add_argument("--email", default="")
    p.add_argument("--ttl", type=int, required=True, help="lifetime in seconds (capped by auth.token_max_ttl_s)")
    p.set_defaults(func=token_create)
    p = tsub.add_parser("revoke", parents=[common], help="refuse one API token from now on (running gateways follow within seconds)")
    p.add_argument("jti", nargs="?", help="the token's id, as `token create` printed it")
    p.add_argument("--token-stdin", action="store_true", help="read the token itself from stdin instead")
    p.add_argument("--users-file", help="edit this file instead of the configured auth.users_file")
    p.set_defaults(func=token_revoke)

    keys = sub.add_parser("keys", help="signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    p = ksub.add_parser("rotate", parents=[common], help="put a fresh signing key first, keep old ones verifying")
    p.add_argument("--ring", choices=("session", "token", "all"), default="all")
    p.add_argument("--keep", type=int, default=2, help="how many previous keys keep verifying (default 2)")
    p.set_defaults(func=keys_rotate)
