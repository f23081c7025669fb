"""The wheel the container image installs carries the whole product, and an installed copy runs.

Built from exactly what the Dockerfile's build stage copies, the way that
stage builds it (``pip install .``, here offline with this venv's
setuptools), then installed into a folder of its own and run from there: a
file missing from the package data shows up here instead of as a 404 or a
crash in the image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, GatewayProcess, free_port, run_cli, submit_sign_in

pytestmark = pytest.mark.slow

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def _build_stage_inputs() -> list[str]:
    """What the Dockerfile's build stage copies into its source folder."""
    text = (ROOT / "Dockerfile").read_text()
    build_stage = text.split("\nFROM ", 2)[0] if text.startswith("FROM ") else text.split("\nFROM ", 2)[1]
    inputs: list[str] = []
    for line in build_stage.splitlines():
        if line.startswith("COPY "):
            inputs.extend(line.split()[1:-1])
    assert {"pyproject.toml", "gateway", "tools_ui", "policies"} <= set(inputs), inputs
    return inputs


def _pip(*args: str) -> None:
    """Offline: everything comes from this venv and the files given."""
    r = subprocess.run(
        [sys.executable, "-m", "pip", args[0], "--quiet", *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"},
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in _build_stage_inputs():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=_SKIP)
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src))
    (built,) = dist.glob("toolgate-*.whl")
    return built


def _product_files() -> set[str]:
    """Every file the running product may open, as the wheel names it."""
    out: set[str] = set()
    for package in ("gateway", "tools_ui"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                out.add(path.relative_to(ROOT).as_posix())
    for policy in (ROOT / "policies").glob("*.toml"):
        out.add(f"gateway/shipped_policies/{policy.name}")
    return out


def test_wheel_carries_every_product_file(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = sorted(_product_files() - names)
    assert not missing, f"left out of the wheel (pyproject.toml packages / package-data): {missing}"
    # Nothing from the test tree or the repository's own folders rides along.
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "deploy/", "policies/"))]


@pytest.fixture(scope="module")
def installed(wheel) -> Iterator[Path]:
    # Outside pytest's private (0700) temporary folder: the unprivileged test
    # below must be able to read it, as the image's user reads /opt/toolgate.
    target = Path(tempfile.mkdtemp(prefix="toolgate-site-"))
    target.chmod(0o755)
    _pip("install", "--no-deps", "--no-compile", "--target", str(target), str(wheel))
    try:
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _env(site: Path) -> dict[str, str]:
    # The installed copy first on the path; -P keeps the working folder off it.
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def _gateway(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env=_env(site), python_args=("-P",))


def _sign_in(c: httpx.Client, user: str, password: str) -> None:
    r = submit_sign_in(c, user, password)
    assert r.status_code == 303, r.text


def _passwords(init: subprocess.CompletedProcess[str]) -> dict[str, str]:
    passwords = dict(re.findall(r"^  (\w+)\s+(\S+)$", init.stdout, re.M))
    assert {"alice", "sam"} <= passwords.keys(), init.stdout
    return passwords


def test_installed_copy_initialises_and_serves(installed, tmp_path):
    # It really is the installed copy that runs, not this checkout.
    where = subprocess.run(
        [sys.executable, "-P", "-c", "import gateway, tools_ui; print(gateway.__file__); print(tools_ui.__file__)"],
        cwd=tmp_path, env=_env(installed), capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(installed) for p in where), where

    port = free_port()
    init = _gateway(installed, tmp_path, "init", str(tmp_path / "deploy"), "--demo", "--port", str(port))
    assert init.returncode == 0, init.stderr
    config = tmp_path / "deploy" / "gateway.toml"
    shipped = sorted(p.name for p in (ROOT / "policies").glob("*.toml"))
    assert sorted(p.name for p in (tmp_path / "deploy" / "policies").iterdir()) == shipped
    passwords = _passwords(init)

    gw = GatewayProcess(config, port, env=_env(installed), python_args=("-P",), cwd=tmp_path).start()
    try:
        check = _gateway(installed, tmp_path, "healthcheck", "--config", str(config))
        assert check.returncode == 0, check.stderr

        with httpx.Client(base_url=gw.url, timeout=20) as c:
            css = re.search(r'href="(/_gateway/static/[^"]+\.css)"', c.get("/auth/login").text)
            assert css and c.get(css.group(1)).status_code == 200
            _sign_in(c, "sam", passwords["sam"])
            # The Streamlit app from the installed tools_ui, a tool page, the guide, the feed's script.
            assert "<noscript>" in c.get("/").text
            assert c.get("/sales").status_code == 200
            assert c.get("/docs").status_code == 200
            feed = c.get("/ws/security-feed/client.js")
            assert feed.status_code == 200, feed.text[:200]
            assert "javascript" in feed.headers["content-type"]
    finally:
        gw.stop()
    assert "Traceback" not in gw.log(), gw.log()[-3000:]


NOBODY = 65534
RUN_AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


def _interpreter_for_nobody(site: Path) -> tuple[str, dict[str, str]] | None:
    """A Python 3.11 the unprivileged user can run, with this venv's libraries, or None.

    This venv's interpreter may live where only root can read (pyenv under
    /root): it starts, but cannot start the audit writer as a child.  The
    image has its interpreter in /usr/local, so any 3.11 the user can run
    stands in, importing the libraries from this venv's site-packages.
    """
    libs = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    env = {**_env(site), "PYTHONPATH": os.pathsep.join([str(site), *libs])}
    probe = "import subprocess, sys, streamlit; subprocess.run([sys.executable, '-c', 'import json'], check=True); print(sys.version_info[:2])"
    for candidate in dict.fromkeys([sys.executable, "/usr/local/bin/python3.11", "/usr/bin/python3.11"]):
        if not os.access(candidate, os.X_OK):
            continue
        r = subprocess.run([*RUN_AS_NOBODY, candidate, "-P", "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and r.stdout.strip() == "(3, 11)":
            return candidate, env
    return None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to serve as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop privileges")
def test_installed_copy_serves_unprivileged_from_a_read_only_tree(installed):
    """The image's promise: a non-root user, read-only code and config, only the audit folder and HOME writable."""
    base = Path(tempfile.mkdtemp(prefix="toolgate-ro-"))
    try:
        base.chmod(0o755)
        port = free_port()
        deploy = base / "config"
        init = _gateway(installed, base, "init", str(deploy), "--demo", "--port", str(port))
        assert init.returncode == 0, init.stderr
        passwords = _passwords(init)
        home, workdir = base / "home", base / "app"
        home.mkdir(mode=0o700)
        workdir.mkdir(mode=0o755)  # root's, like the image's /app
        # Owned by the serving user (its keys must be 0600-private to it), but
        # nothing writable except the audit folder; HOME stands in for the tmpfs.
        for path in [deploy, *deploy.rglob("*"), home]:
            os.chown(path, NOBODY, NOBODY)
        for path in [deploy, *deploy.rglob("*")]:
            if path.is_dir() and path.name != "audit":
                path.chmod(0o500)
            elif path.is_file():
                path.chmod(0o400)
        found = _interpreter_for_nobody(installed)
        if found is None:
            pytest.skip("no Python 3.11 here that an unprivileged user can run (and start children with)")
        python, env = found
        env["HOME"] = str(home)

        gw = GatewayProcess(deploy / "gateway.toml", port, env=env, python=python, python_args=("-P",), run_as=RUN_AS_NOBODY, cwd=workdir)
        gw.log_path = base / "gateway.log"  # the config folder is not writable to the server
        gw.start()
        try:
            with httpx.Client(base_url=gw.url, timeout=20) as c:
                _sign_in(c, "alice", passwords["alice"])
                assert "<noscript>" in c.get("/").text
                assert c.get("/sales").status_code == 200
                assert c.get("/api/whoami").json()["user"] == "alice"
            assert httpx.get(gw.url + "/readyz", timeout=5).status_code == 200
        finally:
            gw.stop()
        log = gw.log()
        assert "Traceback" not in log and "PermissionError" not in log, log[-3000:]
        # The trail was written, as that user, and verifies.
        trail = sorted((deploy / "audit").glob("*.jsonl"))
        assert trail and all(p.stat().st_uid == NOBODY for p in trail)
        verify = _gateway(installed, base, "audit", "verify", "--config", str(deploy / "gateway.toml"), *map(str, trail))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        # Nothing was written anywhere else: not beside the code, the config or the working folder.
        assert not [p for p in installed.rglob("__pycache__")]
        assert sorted(p.name for p in workdir.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
