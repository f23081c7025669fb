"""The deployment files hold what the issue asks of them, and their configurations load."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import load_settings
from tests.helpers import ROOT, make_config_dir, write_secret

from .infra import NGINX_BIN, SKIP_NGINX, make_certs

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for f in sorted(K8S.glob("*.yaml")) if f.name != "kustomization.yaml" for d in docs(f) if d.get("kind") == kind]


# ------------------------------------------------------------------ kubernetes


def test_kustomization_lists_existing_manifests() -> None:
    k = docs(K8S / "kustomization.yaml")[0]
    for res in k["resources"]:
        assert (K8S / res).is_file(), res
    assert [g["name"] for g in k["configMapGenerator"]] == ["toolgate-config"]
    assert set(k["secretGenerator"][0]["files"]) >= {"secrets/session.keys", "secrets/audit.key", "secrets/redis.password"}


def test_gateway_deployment_is_hardened_and_probed() -> None:
    (dep,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "toolgate"]
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] >= 2
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0 and pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for c in spec["initContainers"] + spec["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
    (gw,) = spec["containers"]
    assert gw["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gw["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert gw["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in gw["env"]}
    assert env["GATEWAY_STATE_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["secrets-mounted"]["secret"]["secretName"] == "toolgate-secrets"
    assert volumes["policies"]["configMap"]["name"] == "toolgate-policies"
    assert volumes["config"]["configMap"]["name"] == "toolgate-config"
    # Everything the process writes is a volume: the root file system stays read-only.
    mounts = {m["mountPath"] for m in gw["volumeMounts"]}
    assert {"/tmp", "/var/lib/toolgate/audit", "/secrets"} <= mounts
    # Mount points never nest inside a ConfigMap volume (kubelet cannot create them there).
    for a in mounts:
        for b in mounts:
            assert a == b or not b.startswith(a.rstrip("/") + "/"), (a, b)


def test_disruption_budget_covers_the_gateway_pods() -> None:
    (pdb,) = by_kind("PodDisruptionBudget")
    (dep,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "toolgate"]
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] >= 1


def test_policies_configmap_renders_from_the_policy_files(tmp_path: Path) -> None:
    out = tmp_path / "cm.yaml"
    r = subprocess.run([sys.executable, str(K8S / "render_policies.py"), str(ROOT / "policies"), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cm = docs(out)[0]
    assert cm["metadata"]["name"] == "toolgate-policies"
    assert cm["data"] == {p.name: p.read_text() for p in sorted((ROOT / "policies").glob("*.toml"))}


def test_kubernetes_gateway_config_loads(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path / "cfg")
    s = tmp_path / "cfg" / "secrets"
    write_secret(s / "redis.password", "pw\n")
    env = {
        "GATEWAY_SESSION_KEYS_FILE": str(s / "session.keys"),
        "GATEWAY_AUTH_USERS_FILE": str(cfg.parent / "users.toml"),
        "GATEWAY_AUTH_TOKEN_KEY_FILE": str(s / "token.keys"),
        "GATEWAY_POLICY_DIR": str(cfg.parent / "policies"),
        "GATEWAY_AUDIT_KEY_FILE": str(s / "audit.key"),
        "GATEWAY_AUDIT_PATH": str(tmp_path / "audit" / "audit.jsonl"),
        "GATEWAY_STATE_PASSWORD_FILE": str(s / "redis.password"),
    }
    settings = load_settings(K8S / "gateway.toml", environ=env)
    assert settings.state.backend == "redis" and settings.server.trusted_proxies
    assert settings.audit.stdout is True  # pod-local files are ephemeral


# ------------------------------------------------------------------ compose


def test_compose_puts_two_replicas_behind_the_trusted_proxy() -> None:
    compose = docs(DEPLOY / "compose.yaml")[0]
    services = compose["services"]
    gateways = {name: s for name, s in services.items() if name.startswith("gateway-")}
    assert len(gateways) == 2
    ids = {s["environment"]["GATEWAY_STATE_REPLICA_ID"] for s in gateways.values()}
    assert len(ids) == 2
    proxy_ip = services["proxy"]["networks"]["edge"]["ipv4_address"]
    conf = tomllib.loads((DEPLOY / "gateway.toml").read_text())
    assert conf["server"]["trusted_proxies"] == [f"{proxy_ip}/32"]
    assert conf["state"]["backend"] == "redis"
    for name, s in services.items():
        assert s["read_only"] is True and s["user"] == "10001:10001" and s["cap_drop"] == ["ALL"], name
    assert services["redis"]["networks"] == ["backend"] and compose["networks"]["backend"]["internal"] is True
    assert "ports" not in gateways["gateway-a"]  # reachable only through the proxy


def test_compose_gateway_config_loads(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path / "cfg")
    write_secret(cfg.parent / "secrets" / "redis.password", "pw\n")
    shutil.copy(DEPLOY / "gateway.toml", cfg)
    settings = load_settings(cfg, environ={"GATEWAY_AUDIT_PATH": str(tmp_path / "audit" / "audit.jsonl")})
    assert settings.server.public_url.startswith("https://")


@pytest.mark.skipif(NGINX_BIN is None, reason=SKIP_NGINX)
def test_nginx_config_is_valid_and_appends_forwarded_for(tmp_path: Path) -> None:
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    certs = make_certs(tmp_path / "pki")
    # Local stand-ins for the container's names and paths; the rest is checked as shipped.
    text = (
        text.replace("/tmp/", f"{tmp_path}/").replace("/dev/stderr", str(tmp_path / "error.log"))
        .replace("gateway-a:8501", "127.0.0.1:1").replace("gateway-b:8501", "127.0.0.1:2")
        .replace("/etc/nginx/tls/tls.crt", str(certs.cert)).replace("/etc/nginx/tls/tls.key", str(certs.key))
    )  # fmt: skip
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    r = subprocess.run([NGINX_BIN, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
