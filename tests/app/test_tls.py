"""Serving https directly: TLS, HSTS, the plain-http redirect, and the Observatory grade."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess

import httpx
import pytest
import trustme

from tests.app.conftest import stop
from tests.helpers import ROOT, free_port, make_config_dir

OBSERVATORY = ROOT.parent / "shared" / "tools" / "observatory.sh"


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory):
    work = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca_pem = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    server_pem = work / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    server_pem.chmod(0o600)
    port, http_port = free_port(), free_port()
    config = make_config_dir(
        work / "cfg",
        port=port,
        server_extra=(
            f'tls_cert = "{server_pem}"\ntls_key = "{server_pem}"\nhttp_redirect_port = {http_port}\n'
        ),
    )
    text = config.read_text().replace(f'public_url = "http://localhost:{port}"', f'public_url = "https://localhost:{port}"')
    config.write_text(text)
    log = (config.parent / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [os.sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"https://localhost:{port}"
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", verify=ssl.create_default_context(cafile=str(ca_pem)), timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError((config.parent / "gateway.log").read_text()[-3000:])
        time.sleep(0.2)
    yield {"base": base, "ca": ca_pem, "http": f"http://localhost:{http_port}", "port": port, "log": config.parent / "gateway.log"}
    stop(proc)


def test_https_with_hsts_and_secure_host_cookies(tls_gateway):
    with httpx.Client(base_url=tls_gateway["base"], verify=ssl.create_default_context(cafile=str(tls_gateway["ca"]))) as c:
        r = c.get("/", follow_redirects=False)
        login = c.get("/auth/login")
    assert r.status_code == 303
    assert r.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    cookies = login.headers.get_list("set-cookie")
    assert cookies, "the sign-in form sets its CSRF cookie"
    for cookie in cookies:
        assert cookie.startswith("__Host-"), cookie
        assert "Secure" in cookie and "HttpOnly" in cookie


def test_plain_http_port_redirects_to_https(tls_gateway):
    r = httpx.get(tls_gateway["http"] + "/sales?x=1", follow_redirects=False)
    assert r.status_code == 308
    assert r.headers["location"] == f"https://localhost:{tls_gateway['port']}/sales?x=1"
    evil = httpx.get(tls_gateway["http"] + "//evil.example/", follow_redirects=False)
    assert evil.headers["location"].startswith(f"https://localhost:{tls_gateway['port']}/")


@pytest.mark.skipif(not OBSERVATORY.exists(), reason="shared/tools/observatory.sh is not beside the checkout")
@pytest.mark.skipif(shutil.which("node") is None, reason="node is needed by the Observatory scanner")
def test_mdn_observatory_grades_a_plus(tls_gateway):
    proc = subprocess.run(
        ["bash", str(OBSERVATORY), f"https://localhost:{tls_gateway['port']}/"],
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(tls_gateway["ca"])},
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    grade = re.search(r"^observatory: (\S+) \((\d+)\)$", proc.stdout, re.M)
    assert grade is not None, proc.stdout
    artifacts = ROOT / "tests" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "observatory.txt").write_text(proc.stdout)
    assert grade.group(1) == "A+", proc.stdout


def test_gateway_run_uses_uvloop(tls_gateway):
    """`gateway run` drives uvicorn itself; it must pick uvloop as uvicorn.run() would (measured: it matters)."""
    pytest.importorskip("uvloop")
    text = tls_gateway["log"].read_text()
    assert "gateway.started" in text
    assert "event_loop=uvloop" in text or '"event_loop": "uvloop' in text, text[-2000:]


def _handshake(port: int, ca: str, *, version: ssl.TLSVersion | None = None, ciphers: str | None = None) -> str:
    """The negotiated "protocol cipher", or the error's name."""
    import socket

    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")  # the client offers anything: the server decides
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return f"{tls.version()} {tls.cipher()[0]}"
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {type(exc).__name__}"


@pytest.fixture(scope="module")
def permissive_server(tls_gateway):
    """A local TLS server that accepts old versions and CBC suites: proof this client can offer them."""
    import socket
    import threading

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tls_gateway["ca"].parent / "server.pem"))
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop_flag = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop_flag.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    stop_flag.set()
    t.join(2)
    listener.close()


@pytest.mark.parametrize(
    ("version", "ciphers"),
    [
        (ssl.TLSVersion.TLSv1, None),
        (ssl.TLSVersion.TLSv1_1, None),
        # The test certificate is ECDSA: these are the CBC suites it could use.
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA"),
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-SHA384"),
    ],
)
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_old_protocols_and_weak_suites_are_refused(tls_gateway, permissive_server, version, ciphers):
    ca = str(tls_gateway["ca"])
    offered = _handshake(permissive_server, ca, version=version, ciphers=ciphers)
    if offered.startswith("refused"):
        pytest.skip(f"this machine's TLS client cannot offer {version.name} {ciphers or ''} at all ({offered})")
    assert _handshake(tls_gateway["port"], ca, version=version, ciphers=ciphers).startswith("refused")


def test_modern_handshakes_are_accepted(tls_gateway):
    ca = str(tls_gateway["ca"])
    assert _handshake(tls_gateway["port"], ca, version=ssl.TLSVersion.TLSv1_3).startswith("TLSv1.3 ")
    from gateway.server import TLS12_CIPHERS

    version, cipher = _handshake(tls_gateway["port"], ca, version=ssl.TLSVersion.TLSv1_2).split(" ", 1)
    assert version == "TLSv1.2" and cipher in TLS12_CIPHERS.split(":")


def test_healthcheck_probes_the_tls_listener(tls_gateway):
    config = tls_gateway["log"].parent / "gateway.toml"
    r = subprocess.run(
        [os.sys.executable, "-m", "gateway.cli", "healthcheck", "--config", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"https://127.0.0.1:{tls_gateway['port']}/healthz: 200" in r.stdout
