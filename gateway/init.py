"""``gateway init DIR [--demo]``: a ready configuration with fresh secrets.

Secrets are written 0600 inside a 0700 folder; nothing existing is
overwritten (a second ``init`` into the same folder refuses), so a mistyped
command can never replace the keys of a running deployment.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

# In a source checkout the starting policies are the top-level ``policies/``;
# an installed wheel carries the same files as ``gateway.shipped_policies``
# (pyproject.toml maps the folder), where ``../policies`` would name whatever
# else sits in site-packages.
_SOURCE_CHECKOUT = Path(__file__).resolve().parent.parent
_PACKAGED_POLICIES = "gateway.shipped_policies"


def shipped_policies() -> Path:
    """The folder of policy files ``gateway init`` starts a deployment with."""
    if (_SOURCE_CHECKOUT / "pyproject.toml").is_file() and (_SOURCE_CHECKOUT / "policies").is_dir():
        return _SOURCE_CHECKOUT / "policies"
    try:
        spec = importlib.util.find_spec(_PACKAGED_POLICIES)
    except ModuleNotFoundError:
        spec = None
    for location in (spec.submodule_search_locations or ()) if spec else ():
        if any(Path(location).glob("*.toml")):
            return Path(location)
    raise InitError("this installation carries no starting policies (reinstall the toolgate package)")

DEMO_USERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("alice", ("employees",), "alice@example.com"),
    ("sam", ("employees", "security"), "sam@example.com"),
    ("aud", ("auditors",), "aud@example.com"),
)

CONFIG_TEMPLATE = """\
# Toolgate configuration. Relative paths are relative to this file's folder.
# Every key can be overridden by GATEWAY_<SECTION>_<KEY> environment variables.

[server]
host = "{host}"
port = {port}
public_url = "http://localhost:{port}"      # scheme+host the browser sees
trusted_hosts = ["localhost", "127.0.0.1"]
trusted_proxies = []                       # CIDRs whose X-Forwarded-* is believed
allowed_networks = {networks}
max_body_bytes = 1048576
tls_cert = ""                              # serve https directly when set
tls_key = ""

[session]
keys_file = "secrets/session.keys"         # one key a line; the first signs
idle_timeout_s = 1800
absolute_timeout_s = 43200

[auth]
users_file = "users.toml"
token_key_file = "secrets/token.keys"

[policy]
dir = "policies"

[audit]
path = "audit/audit.jsonl"
key_file = "secrets/audit.key"
fail_closed = true
"""


@dataclass
class InitResult:
    config_path: Path
    demo_passwords: dict[str, str]


class InitError(Exception):
    pass


def _write_secret(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)


def new_key() -> str:
    return secrets.token_hex(32)


def demo_password() -> str:
    # Four groups of five from an unambiguous alphabet: ~100 bits, easy to type.
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


def init_dir(target: Path, *, demo: bool = False, host: str = "127.0.0.1", port: int = 8501) -> InitResult:
    target = target.resolve()
    config_path = target / "gateway.toml"
    if config_path.exists():
        raise InitError(f"{config_path} already exists; refusing to overwrite it")
    # Found before anything is written: a failed init leaves no half-made folder.
    starting_policies = shipped_policies()
    target.mkdir(parents=True, exist_ok=True)
    secrets_dir = target / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    (target / "audit").mkdir(mode=0o700, exist_ok=True)

    from gateway.auth.keyring import new_session_key, new_token_key_line

    _write_secret(secrets_dir / "session.keys", new_session_key() + "\n")
    _write_secret(secrets_dir / "token.keys", new_token_key_line() + "\n")
    _write_secret(secrets_dir / "audit.key", new_key() + "\n")

    policies = target / "policies"
    if not policies.exists():
        shutil.copytree(starting_policies, policies, ignore=shutil.ignore_patterns("README.md", "__pycache__"))

    networks = '["127.0.0.0/8", "::1/128"]' if demo else '["0.0.0.0/0", "::/0"]'
    config_path.write_text(CONFIG_TEMPLATE.format(host=host, port=port, networks=networks), encoding="utf-8")

    passwords: dict[str, str] = {}
    users_file = target / "users.toml"
    from gateway.auth.users import UserDirectory

    users = UserDirectory(users_file)
    if demo:
        for name, groups, email in DEMO_USERS:
            pw = demo_password()
            users.add(name, password=pw, groups=list(groups), email=email)
            passwords[name] = pw
    elif not users_file.exists():
        _write_secret(users_file, "# Local users: add them with `gateway users add NAME --groups a,b --password-stdin`.\n")
    return InitResult(config_path=config_path, demo_passwords=passwords)
