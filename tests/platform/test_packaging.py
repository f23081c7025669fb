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
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, GatewayProcess, free_port

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
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
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
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return target


def _env(site: Path) -> dict[str, str]:
    # The installed copy first on the path; -P keeps the working folder off it.
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def _gateway(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "gateway.cli", *args],
        cwd=cwd,
        env=_env(site),
        capture_output=True,
        text=True,
        timeout=120,
    )


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
    passwords = dict(re.findall(r"^  (\w+)\s+(\S+)$", init.stdout, re.M))
    assert {"alice", "sam"} <= passwords.keys(), init.stdout

    gw = GatewayProcess(config, port, env=_env(installed), python_args=("-P",), cwd=tmp_path).start()
    try:
        check = _gateway(installed, tmp_path, "healthcheck", "--config", str(config))
        assert check.returncode == 0, check.stderr

        with httpx.Client(base_url=gw.url, timeout=20) as c:
            form = c.get("/auth/login")
            assert form.status_code == 200
            css = re.search(r'href="(/_gateway/static/[^"]+\.css)"', form.text)
            assert css and c.get(css.group(1)).status_code == 200
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
            r = c.post("/auth/login", data={"username": "sam", "password": passwords["sam"], "csrf_token": token, "next": "/"})
            assert r.status_code == 303, r.text
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
