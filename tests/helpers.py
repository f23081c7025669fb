"""Test helpers shared by every suite: config folders, free ports, servers."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(
    *args: str,
    cwd: Path = ROOT,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    python_args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``gateway ARGS`` as a real process (``python -m gateway.cli``), output captured as text."""
    return subprocess.run(
        [PYTHON, *python_args, "-m", "gateway.cli", *args],
        cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def submit_sign_in(client: httpx.Client, user: str, password: str, next_path: str = "/") -> httpx.Response:
    """The real sign-in form, filled in and posted: its answer (303 on success)."""
    form = client.get("/auth/login")
    assert form.status_code == 200, form.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None, "the sign-in form has no csrf_token"
    data = {"username": user, "password": password, "csrf_token": token.group(1), "next": next_path}
    return client.post("/auth/login", data=data)


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    path.chmod(0o600)


def make_config_dir(
    target: Path,
    *,
    port: int = 8501,
    server_extra: str = "",
    sections_extra: str = "",
    audit_extra: str = "",
) -> Path:
    """A complete config folder (keys, shipped policies) without demo users."""
    target.mkdir(parents=True, exist_ok=True)
    write_secret(target / "secrets" / "session.keys", secrets.token_hex(32) + "\n")
    write_secret(target / "secrets" / "audit.key", secrets.token_hex(32) + "\n")
    from gateway.auth.keyring import new_token_key_line

    write_secret(target / "secrets" / "token.keys", new_token_key_line() + "\n")
    if not (target / "policies").exists():
        shutil.copytree(ROOT / "policies", target / "policies", ignore=shutil.ignore_patterns("README.md"))
    users = target / "users.toml"
    if not users.exists():
        write_secret(users, "")
    (target / "gateway.toml").write_text(
        f"""
[server]
port = {port}
public_url = "http://localhost:{port}"
trusted_hosts = ["localhost", "127.0.0.1", "testserver"]
{server_extra}

[policy]
dir = "policies"

[audit]
path = "audit/audit.jsonl"
key_file = "secrets/audit.key"
{audit_extra}
{sections_extra}
"""
    )
    return target / "gateway.toml"


class GatewayProcess:
    """A real ``gateway run`` in a subprocess, on a free loopback port."""

    def __init__(
        self,
        config: Path,
        port: int,
        env: dict[str, str] | None = None,
        *,
        python: str = PYTHON,
        python_args: tuple[str, ...] = (),
        run_as: tuple[str, ...] = (),
        cwd: Path = ROOT,
        host_header: str | None = None,
    ) -> None:
        self.config = config
        self.port = port
        self._python = python
        self._python_args = python_args
        self._run_as = run_as  # a command prefix such as setpriv's, to serve as another user
        self._cwd = cwd
        # The start-up probe's Host, for configurations that serve only a public name.
        self._probe_headers = {"host": host_header} if host_header else {}
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = config.parent / "gateway.log"
        self._env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> "GatewayProcess":
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*self._run_as, self._python, *self._python_args, "-m", "gateway.cli", "run", "--config", str(self.config), "--port", str(self.port)],
            cwd=self._cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(self.url + "/healthz", headers=self._probe_headers, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gateway did not start:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
