"""The CLI contracts of DESIGN.md, run as a user would run them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers import run_cli as gateway


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("cli") / "demo"
    proc = gateway("init", str(target), "--demo", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    (target / "init.out").write_text(proc.stdout)
    return target


def test_init_writes_private_keys_and_prints_demo_passwords_once(demo: Path):
    out = (demo / "init.out").read_text()
    for user in ("alice", "sam", "aud"):
        assert user in out
    for name in ("session.keys", "token.keys", "audit.key"):
        mode = stat.S_IMODE((demo / "secrets" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE((demo / "secrets").stat().st_mode) == 0o700
    users = (demo / "users.toml").read_text()
    passwords = [line.split()[-1] for line in out.splitlines() if line.startswith("  ")]
    assert passwords and not any(p in users for p in passwords)  # only hashes are stored
    again = gateway("init", str(demo), cwd=ROOT)
    assert again.returncode == 2 and "refusing" in again.stderr


def test_users_add_reads_password_from_stdin_only(demo: Path):
    ok = gateway("users", "add", "bob", "--groups", "employees,security", "--email", "bob@example.com",
                 "--password-stdin", "--config", str(demo / "gateway.toml"), cwd=ROOT, stdin="a-long-passphrase-42\n")
    assert ok.returncode == 0, ok.stderr
    listed = gateway("users", "list", "--config", str(demo / "gateway.toml"), cwd=ROOT)
    assert "bob" in listed.stdout and "security" in listed.stdout
    assert stat.S_IMODE((demo / "users.toml").stat().st_mode) == 0o600
    weak = gateway("users", "add", "eve", "--groups", "employees", "--password-stdin",
                   "--config", str(demo / "gateway.toml"), cwd=ROOT, stdin="short\n")
    assert weak.returncode != 0


def test_config_from_environment_and_overrides(demo: Path):
    env = {"GATEWAY_CONFIG": str(demo / "gateway.toml")}
    assert gateway("policy", "check", cwd=ROOT, env=env).returncode == 0
    bad = gateway("policy", "check", cwd=ROOT, env={**env, "GATEWAY_POLICY_DIR": "/nonexistent"})
    assert bad.returncode == 2 and "policy.dir" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_policy_test_and_explain(demo: Path):
    cfg = ["--config", str(demo / "gateway.toml")]
    tested = gateway("policy", "test", *cfg, cwd=ROOT)
    assert tested.returncode == 0 and " passed, 0 failed" in tested.stdout
    allow = gateway("policy", "explain", "--user", "alice", "--groups", "employees", "--path", "/sales", *cfg, cwd=ROOT)
    deny = gateway("policy", "explain", "--user", "alice", "--groups", "employees", "--path", "/audit", "--method", "GET", *cfg, cwd=ROOT)
    assert allow.returncode == 0 and "ALLOW" in allow.stdout
    assert deny.returncode == 3 and "DENY" in deny.stdout and "audit-viewer" in deny.stdout


def test_broken_policy_file_is_reported_with_its_line(demo: Path, tmp_path: Path):
    broken = tmp_path / "policies"
    broken.mkdir()
    (broken / "bad.toml").write_text('[[rule]]\nid = "x"\neffect = "allow"\ndescription = "d"\ngroupz = ["a"]\n')
    proc = gateway("policy", "check", str(broken), cwd=ROOT)
    assert proc.returncode == 1
    assert "bad.toml" in proc.stdout + proc.stderr and "groupz" in proc.stdout + proc.stderr


def test_token_create_prints_a_jwt(demo: Path):
    proc = gateway("token", "create", "--sub", "ci", "--groups", "employees", "--ttl", "60",
                   "--config", str(demo / "gateway.toml"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().splitlines()[-1]
    assert token.count(".") == 2


def test_audit_verify_exit_codes(demo: Path, tmp_path: Path):
    from gateway.audit import AuditTrail
    from gateway.settings import load_settings

    settings = load_settings(demo / "gateway.toml", environ={})
    trail = AuditTrail(settings.audit)
    trail.start()
    for i in range(20):
        trail.emit("http.request", outcome="success", user="alice", path=f"/p{i}", status=200)
    trail.close()
    cfg = ["--config", str(demo / "gateway.toml")]
    audit_file = settings.audit.path
    ok = gateway("audit", "verify", str(audit_file), *cfg, cwd=ROOT)
    assert ok.returncode == 0 and "OK" in ok.stdout
    lines = audit_file.read_text().splitlines()
    record = json.loads(lines[5])
    lines[5] = lines[5].replace(record["url"]["path"] if "url" in record else "/p4", "/px", 1)
    audit_file.write_text("\n".join(lines) + "\n")
    bad = gateway("audit", "verify", str(audit_file), *cfg, cwd=ROOT)
    assert bad.returncode == 1
    assert ":6" in bad.stdout + bad.stderr  # the first bad record, by line


def test_init_without_starting_policies_writes_nothing(tmp_path: Path, monkeypatch):
    # An installation that lost its policies must refuse before it writes a
    # single key, not leave a folder with secrets and no policy behind.
    import gateway.init as init

    monkeypatch.setattr(init, "_SOURCE_CHECKOUT", tmp_path / "not-a-checkout")
    monkeypatch.setattr(init, "_PACKAGED_POLICIES", "gateway.no_such_policies")
    with pytest.raises(init.InitError, match="no starting policies"):
        init.init_dir(tmp_path / "deploy", demo=True)
    assert not (tmp_path / "deploy").exists()


def test_init_from_a_checkout_uses_its_policies_folder():
    from gateway.init import shipped_policies

    assert shipped_policies() == ROOT / "policies"
