"""``gateway audit verify``: exit 0 intact, 1 naming the first bad record, 2 on config/key/path problems."""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.audit.cli import register

from .audit_helpers import emit_requests, lines_of, write_key

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=None)
    parser = argparse.ArgumentParser(prog="gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub, common)
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trail_dir(make_trail, audit_dir: Path) -> Path:
    t = make_trail(max_bytes=4096)
    emit_requests(t, 20)
    assert t.close()
    return audit_dir


def _config(tmp_path: Path, key_file: Path) -> Path:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    for name in ("session.keys", "token.keys"):
        write_key(secrets_dir / name)
    (tmp_path / "policies").mkdir(exist_ok=True)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[audit]\npath = "audit/audit.jsonl"\nkey_file = "{key_file}"\n')
    return cfg


def test_intact_exit_0_with_key_from_config(trail_dir: Path, tmp_path: Path, key_file: Path, capsys) -> None:
    cfg = _config(tmp_path, key_file)
    code, out, err = run(["audit", "verify", str(trail_dir), "--config", str(cfg)], capsys)
    n_files = len(list(trail_dir.glob("*.jsonl")))
    assert code == 0, err
    assert out.strip().endswith(f"OK: {20 + n_files - 1} records in {n_files} files")


def test_intact_exit_0_with_key_file_option(trail_dir: Path, key_file: Path, capsys) -> None:
    code, out, _ = run(["audit", "verify", str(trail_dir / "audit.jsonl"), "--key-file", str(key_file)], capsys)
    assert code == 0 and "OK:" in out


def test_tampered_exit_1_names_file_and_line(trail_dir: Path, key_file: Path, capsys) -> None:
    p = trail_dir / "audit.jsonl"
    lines = lines_of(p)
    lines[1] = lines[1].replace(b'"status_code":200', b'"status_code":201')
    p.write_bytes(b"".join(line + b"\n" for line in lines))
    code, out, _ = run(["audit", "verify", str(trail_dir), "--key-file", str(key_file)], capsys)
    assert code == 1
    assert f"FAIL: {p}:2: edited:" in out


def test_torn_tail_exit_1_but_explained(trail_dir: Path, key_file: Path, capsys) -> None:
    p = trail_dir / "audit.jsonl"
    p.write_bytes(p.read_bytes()[:-10])
    code, out, _ = run(["audit", "verify", str(trail_dir), "--key-file", str(key_file)], capsys)
    assert code == 1 and "torn_tail" in out and "not evidence" in out


def test_wrong_key_exit_1(trail_dir: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.key"
    write_key(other)
    code, out, _ = run(["audit", "verify", str(trail_dir), "--key-file", str(other)], capsys)
    assert code == 1 and "wrong_key" in out


def test_bad_config_exit_2_naming_the_key(trail_dir: Path, tmp_path: Path, key_file: Path, capsys) -> None:
    cfg = _config(tmp_path, key_file)
    cfg.write_text(cfg.read_text() + "colour = 3\n")
    code, out, err = run(["audit", "verify", str(trail_dir), "--config", str(cfg)], capsys)
    assert code == 2 and "audit.colour" in err and out == ""


def test_missing_key_file_exit_2(trail_dir: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(["audit", "verify", str(trail_dir), "--key-file", str(tmp_path / "nope.key")], capsys)
    assert code == 2 and "--key-file" in err


def test_missing_path_exit_2(tmp_path: Path, key_file: Path, capsys) -> None:
    code, _, err = run(["audit", "verify", str(tmp_path / "nothing-here"), "--key-file", str(key_file)], capsys)
    assert code == 2 and "nothing-here" in err


def test_module_entry_point(trail_dir: Path, key_file: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "gateway.audit.cli", "verify", str(trail_dir), "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "OK:" in r.stdout


def test_older_key_can_be_added(make_trail, audit_dir: Path, key_file: Path, tmp_path: Path, capsys) -> None:
    t = make_trail()
    emit_requests(t, 2)
    t.close()
    old = tmp_path / "old.key"
    old.write_bytes(key_file.read_bytes())
    write_key(key_file, secrets.token_bytes(32))
    t2 = make_trail()
    emit_requests(t2, 2)
    t2.close()
    code, out, _ = run(["audit", "verify", str(audit_dir), "--key-file", str(key_file), "--key-file", str(old)], capsys)
    assert code == 0, out
