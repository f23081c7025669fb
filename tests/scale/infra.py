"""Real infrastructure for the scale-out tests: redis-server, nginx, gateway replicas.

Everything runs on loopback with its own temporary folder, in the
foreground (no daemon mode), and is stopped by its fixture.  Binaries come
from Debian (``redis-server``, ``nginx``); when one is missing the tests
that need it are skipped with the package to install.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from tests.helpers import ROOT, free_port

REDIS_BIN = shutil.which("redis-server")
NGINX_BIN = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
SKIP_REDIS = "redis-server not installed (Debian package redis-server; `make system-deps`)"
SKIP_NGINX = "nginx not installed (Debian package nginx; `make system-deps`)"

# The client, the proxy's outgoing address and the gateways use different
# loopback addresses, so "who is the proxy" and "who is the client" differ
# the way they do on a real network.
CLIENT_IP = "127.0.0.2"
PROXY_IP = "127.0.0.3"


# ------------------------------------------------------------------ certificates


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_certs(folder: Path, *, name: str = "Toolgate test CA") -> Certs:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: bool) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )  # fmt: skip
        if san:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key

    out = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem", folder / "client.key")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert, key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, True)
    out.cert.write_bytes(cert)
    write_key(out.key, key)
    cert, key = leaf("toolgate-gateway", ExtendedKeyUsageOID.CLIENT_AUTH, False)
    out.client_cert.write_bytes(cert)
    write_key(out.client_key, key)
    return out


# ------------------------------------------------------------------ redis


def _wait_port(host: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port}:\n{log.read_text(errors='replace')[-3000:]}")


class RedisServer:
    """``redis-server`` in the foreground on a free loopback port, no persistence."""

    def __init__(self, folder: Path, *, password: str | None = None, tls: Certs | None = None, tls_auth_clients: bool = False) -> None:
        assert REDIS_BIN is not None
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "redis.log"

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{'localhost' if self.tls else '127.0.0.1'}:{self.port}/0"

    def start(self) -> "RedisServer":
        args = [
            REDIS_BIN, "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(self.log),
        ]  # fmt: skip
        if self.tls:
            args += [
                "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "yes" if self.tls_auth_clients else "no",
            ]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_port("127.0.0.1", self.port, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)


# ------------------------------------------------------------------ nginx

NGINX_CONF = """
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
{user}
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server_tokens off;

  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
{upstreams}
  ssl_certificate {cert};
  ssl_certificate_key {key};
  ssl_protocols TLSv1.2 TLSv1.3;

  proxy_http_version 1.1;
  proxy_bind {proxy_ip};
  proxy_set_header Host $http_host;
  # Append the peer to whatever the client sent: the gateway believes only
  # the right-most hop that is not this proxy.
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $http_host;
  proxy_set_header X-Request-ID $request_id;
  proxy_set_header Upgrade $http_upgrade;
  proxy_set_header Connection $connection_upgrade;
  proxy_read_timeout 60s;
{servers}
}}
"""


class Nginx:
    """nginx terminating TLS on loopback; one port per upstream group."""

    def __init__(self, folder: Path, certs: Certs, groups: dict[str, list[int]], *, workers: str = "1") -> None:
        assert NGINX_BIN is not None
        self.workers = workers
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.certs = certs
        self.groups = groups
        self.ports = {name: free_port() for name in groups}
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, group: str) -> str:
        return f"https://localhost:{self.ports[group]}"

    def write_conf(self) -> Path:
        upstreams = "".join(
            f"  upstream gw_{name} {{\n" + "".join(f"    server 127.0.0.1:{p} max_fails=0;\n" for p in ports) + "    keepalive 16;\n  }\n"
            for name, ports in self.groups.items()
        )
        servers = "".join(
            f"  server {{\n    listen 127.0.0.1:{self.ports[name]} ssl;\n    location / {{ proxy_pass http://gw_{name}; }}\n  }}\n"
            for name in self.groups
        )
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        conf = self.folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            tmp=self.folder, user=user, upstreams=upstreams, servers=servers, cert=self.certs.cert,
            key=self.certs.key, proxy_ip=PROXY_IP, workers=self.workers,
        ))  # fmt: skip
        return conf

    def start(self) -> "Nginx":
        conf = self.write_conf()
        log = self.folder / "error.log"
        self.proc = subprocess.Popen(
            [NGINX_BIN, "-p", str(self.folder), "-c", str(conf), "-e", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "stderr.log").open("wb"),
        )
        for port in self.ports.values():
            _wait_port("127.0.0.1", port, self.proc, self.folder / "stderr.log")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ------------------------------------------------------------------ gateway processes


class Replica:
    """``gateway run`` with its own replica id and log file."""

    def __init__(self, config: Path, name: str, *, port: int | None = None, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.name = name
        self.port = port or free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = config.parent / f"gateway-{name}.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "GATEWAY_STATE_REPLICA_ID": name, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config), "--port", str(self.port)]
        return cmd + (["--workers", str(self.workers)] if self.workers != 1 else [])

    def start(self, timeout: float = 60) -> "Replica":
        return self.launch().wait_ready(timeout)

    def launch(self) -> "Replica":
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def wait_ready(self, timeout: float = 60) -> "Replica":
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited early:\n{self.log()[-4000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.15)
        self.stop()
        raise RuntimeError(f"replica {self.name} did not become ready:\n{self.log()[-4000:]}")

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return self.proc.returncode if self.proc else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def csrf_token(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no csrf_token in the form"
    return m.group(1)


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
