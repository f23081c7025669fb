"""`gateway policy check|test|explain`: output and exit codes."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.policy import cli

from .conftest import REPO, SHIPPED


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    for k in list(__import__("os").environ):
        if k.startswith("GATEWAY_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no ./gateway.toml unless a test writes one


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    d = tmp_path / "pol"
    shutil.copytree(SHIPPED, d, ignore=shutil.ignore_patterns("*.md"))
    return d


def make_config(tmp_path: Path, policy_dir: Path, extra: str = "") -> Path:
    sec = tmp_path / "secrets"
    sec.mkdir(exist_ok=True)
    for name in ("session.keys", "audit.key", "token.keys"):
        (sec / name).write_text("k1:" + "ab" * 32 + "\n")
        (sec / name).chmod(0o600)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[auth]\ntoken_key_file = "secrets/token.keys"\n'
        f'[policy]\ndir = "{policy_dir}"\n{extra}\n'
    )
    return cfg


def shipped_counts(pdir: Path) -> tuple[int, int, int]:
    """(files, rules, test cases) of the shipped policies, so new shipped files do not break these tests."""
    from gateway.policy import load_dir

    good = sorted(p for p in pdir.glob("*.toml") if not p.name.startswith("50-"))
    policy = load_dir(pdir) if len(good) == len(list(pdir.glob("*.toml"))) else None
    if policy is None:
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for f in good:
                shutil.copy(f, tmp)
            policy = load_dir(tmp)
    return len(good), len(policy.rules), len(policy.tests)


# ---------------------------------------------------------------- check

def test_check_ok(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "check", str(pdir)], capsys)
    assert code == 0
    files, rules, _ = shipped_counts(pdir)
    assert out.startswith(f"ok: {files} file(s), {rules} rule(s)") and "0 error(s), 0 warning(s)" in out


def test_check_errors_exit_1_with_file_and_line(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (pdir / "50-bad.toml").write_text('[[rule]]\nid = "x"\neffect = "allow"\nnetworks = ["10.0.0.1/8"]\n')
    code, out, _ = run(["policy", "check", str(pdir)], capsys)
    assert code == 1
    assert f"{pdir}/50-bad.toml:4: error: '10.0.0.1/8' is not a CIDR network" in out
    assert "FAILED" in out


def test_check_warnings_exit_0(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (pdir / "50-warn.toml").write_text('[[rule]]\nid = "deny-audit"\neffect = "deny"\ntools = ["audit"]\n')
    code, out, _ = run(["policy", "check", str(pdir)], capsys)
    assert code == 0
    assert "warning: allow rule 'audit-viewer' never takes effect: deny rule 'deny-audit'" in out


def test_check_uses_config_dir_and_known_groups(pdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path, pdir, 'known_groups = ["employees", "security"]')
    code, out, err = run(["policy", "check", "--config", str(cfg)], capsys)
    assert code == 1, err
    assert "unknown group 'auditors'" in out
    cfg = make_config(tmp_path, pdir, 'known_groups = ["employees", "security", "auditors", "operators", "metrics"]')
    assert run(["policy", "check", "--config", str(cfg)], capsys)[0] == 0


def test_bad_config_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["policy", "check"], capsys)  # no ./gateway.toml
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "config" in err
    cfg = make_config(tmp_path, tmp_path / "missing")
    code, _, err = run(["policy", "test", "--config", str(cfg)], capsys)
    assert code == 2 and "policy.dir" in err and len(err.strip().splitlines()) == 1


def test_missing_dir_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["policy", "check", str(tmp_path / "nope")], capsys)
    assert code == 1 and "does not exist" in err


# ---------------------------------------------------------------- test

def test_test_shipped_pass(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "test", str(pdir)], capsys)
    assert code == 0
    assert out.strip().splitlines()[-1].startswith(f"{shipped_counts(pdir)[2]} passed, 0 failed")


def test_test_failure_is_reported_like_pytest(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (pdir / "50-t.toml").write_text(
        '[[test]]\nname = "auditor on live"\nuser = "aud"\ngroups = ["auditors"]\npath = "/live"\nexpect = "allow"\nexpect_rule = "live-feed-security"\n'
    )
    code, out, _ = run(["policy", "test", str(pdir)], capsys)
    assert code == 1
    assert f"FAILED {pdir}/50-t.toml:1::auditor on live" in out
    assert "expected: allow (rule live-feed-security)" in out
    assert "actual:   deny (rule default-deny)" in out
    assert out.strip().splitlines()[-1].startswith(f"{shipped_counts(pdir)[2]} passed, 1 failed")


def test_test_with_broken_policy_exits_1(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (pdir / "50-bad.toml").write_text("[[rule]\n")
    code, out, _ = run(["policy", "test", str(pdir)], capsys)
    assert code == 1 and "not valid TOML" in out and "no tests run" in out


# ---------------------------------------------------------------- explain

def test_explain_allow_exit_0(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "explain", "--user", "alice", "--groups", "employees", "--path", "/Sales/", "--dir", str(pdir)], capsys)
    assert code == 0
    assert "decision: ALLOW" in out and "rule:     dashboards-employees (10-tools.toml:9)" in out
    assert "- audit-viewer" in out and "no match: tool is sales" in out


def test_explain_deny_exit_3(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "explain", "--user", "sam", "--groups", "security", "--path", "/audit", "--ip", "10.99.0.1",
            "--method", "get", "--at", "2025-01-06T10:00:00Z", "--dir", str(pdir)]
    code, out, _ = run(argv, capsys)
    assert code == 3
    assert "decision: DENY" in out and "no-security-tools-from-guest-wifi" in out
    assert "matches, but deny rule no-security-tools-from-guest-wifi overrides it" in out


def test_explain_hostile_path_and_bad_input(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "explain", "--user", "a", "--path", "/a%2faudit", "--dir", str(pdir)], capsys)
    assert code == 1 and "encoded slash" in out
    code, _, err = run(["policy", "explain", "--user", "a", "--path", "/", "--at", "yesterday", "--dir", str(pdir)], capsys)
    assert code == 1 and "--at" in err
    code, _, err = run(["policy", "explain", "--user", "a", "--path", "/", "--ip", "nope", "--dir", str(pdir)], capsys)
    assert code == 1


def test_explain_uses_config_dir(pdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path, pdir)
    code, out, _ = run(["policy", "explain", "--config", str(cfg), "--user", "x", "--tool", "home"], capsys)
    assert code == 0 and "rule:     home" in out


def test_register_builds_leaves_with_handlers() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="cmd"), common)
    args = parser.parse_args(["policy", "check", "some/dir", "--config", "c.toml"])
    assert args.func is cli.cmd_check and args.dir == "some/dir" and args.config == "c.toml"


def test_module_entry_point_runs(pdir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.policy.cli", "policy", "test", str(pdir)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{shipped_counts(pdir)[2]} passed, 0 failed" in proc.stdout
