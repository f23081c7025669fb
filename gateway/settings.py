"""Configuration: ``gateway.toml`` plus ``GATEWAY_*`` overrides, validated once.

Every key is checked at start-up so that a running gateway never discovers a
bad value on a request path.  A problem raises :class:`ConfigError` naming the
dotted key; the CLI turns that into one line on stderr and exit code 2.

Environment overrides: ``GATEWAY_<SECTION>_<KEY>`` (``GATEWAY_SERVER_PORT=9000``,
``GATEWAY_AUDIT_FAIL_CLOSED=false``, ``GATEWAY_AUTH_OIDC_CLIENT_ID=...``).
Values are read as TOML literals when they parse as one (numbers, booleans,
arrays) and as plain strings otherwise.  ``GATEWAY_CONFIG`` names the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

DEFAULT_CONFIG = "gateway.toml"
ENV_PREFIX = "GATEWAY_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A configuration value is missing or wrong; ``key`` is the dotted name."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8501
    public_url: str = "http://localhost:8501"
    trusted_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    trusted_proxies: tuple[IPNetwork, ...] = ()
    allowed_networks: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    max_body_bytes: int = 1_048_576
    max_header_bytes: int = 65_536  # request line + headers; over it: 431 and the connection closed
    header_timeout_s: float = 30.0  # a request head must arrive within this; else 408
    body_timeout_s: float = 60.0  # a request body may stall this long between reads; else 408
    tls_cert: Path | None = None
    tls_key: Path | None = None
    http_redirect_port: int = 0  # with tls_cert: a plain-http listener that only redirects
    security_contact: str = "mailto:security@example.com"
    access_contact: str = "your security team"
    brand: str = "Toolgate"

    @property
    def https(self) -> bool:
        """True when the browser sees https (directly or through a TLS proxy)."""
        return self.public_url.startswith("https://") or self.tls_cert is not None


@dataclass(frozen=True)
class SessionSettings:
    keys_file: Path = Path("secrets/session.keys")
    idle_timeout_s: int = 1800
    absolute_timeout_s: int = 43200


@dataclass(frozen=True)
class OIDCSettings:
    issuer: str
    client_id: str
    client_secret: str = ""
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    groups_claim: str = "groups"
    username_claim: str = "preferred_username"
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    display_name: str = "single sign-on"


@dataclass(frozen=True)
class UpstreamSettings:
    header: str
    jwks_url: str
    audience: str
    issuer: str = ""
    algorithms: tuple[str, ...] = ("ES256", "RS256")
    username_claim: str = "email"
    email_claim: str = "email"
    groups_claim: str = "groups"


@dataclass(frozen=True)
class AuthSettings:
    users_file: Path = Path("users.toml")
    token_key_file: Path = Path("secrets/token.keys")
    token_issuer: str = "toolgate"
    token_audience: str = "toolgate-api"
    token_max_ttl_s: int = 90 * 86400
    login_max_failures: int = 5
    login_window_s: int = 900
    oidc: OIDCSettings | None = None
    upstream: UpstreamSettings | None = None


@dataclass(frozen=True)
class PolicySettings:
    dir: Path = Path("policies")
    reload_interval_s: float = 2.0
    known_groups: tuple[str, ...] = ()


AUDIT_WRITERS = ("process", "thread")


@dataclass(frozen=True)
class AuditSettings:
    path: Path = Path("audit/audit.jsonl")
    key_file: Path = Path("secrets/audit.key")
    fail_closed: bool = True
    max_bytes: int = 100 * 1024 * 1024
    rotate_daily: bool = True
    queue_size: int = 10_000
    flush_interval_s: float = 0.2
    stdout: bool = False
    # One line per request on stderr, rendered by the writer from the trail's
    # records (gateway/audit/access_log.py); uvicorn's own access log is off.
    access_log: bool = True
    syslog: bool = False
    syslog_address: str = "/dev/log"
    # Where records are built, chained and written: "process" (a writer
    # process on another core; the gateway only queues and ships batches)
    # or "thread" (a thread of the gateway process, sharing its GIL).
    writer: str = "process"


@dataclass(frozen=True)
class StateSettings:
    """Where shared security state lives (sessions, sign-in counters, fleet registry)."""

    backend: str = "memory"  # memory (one process) | redis (workers and replicas)
    redis_url: str = "redis://127.0.0.1:6379/0"  # redis://, rediss:// (TLS) or unix://
    password_file: Path | None = None  # the Redis password (AUTH), one line, mode 0600
    tls_ca_file: Path | None = None  # rediss://: CA bundle to verify the server with
    tls_cert_file: Path | None = None  # rediss://: client certificate (mutual TLS)
    tls_key_file: Path | None = None
    key_prefix: str = "toolgate:"
    replica_id: str = ""  # stable name of this replica; default: the host name
    timeout_s: float = 1.0  # connect/read timeout of one Redis call
    health_interval_s: float = 1.0  # how often an outage is re-checked
    max_connections: int = 64
    # Seconds a replica may reuse a session record it read; revocations reach
    # every replica at once by pub/sub regardless.  0: ask Redis every request.
    session_cache_s: float = 1.0


_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


@dataclass(frozen=True)
class PlatformSettings:
    """Platform features: data API, MCP server, user guide, metrics, periodic self-checks."""

    api: bool = True  # FastAPI data API at /api/v1 (when fastapi is installed)
    mcp: bool = True  # MCP server at /mcp (when mcp is installed)
    docs_public: bool = False  # the user guide at /docs without signing in
    metrics_networks: tuple[IPNetwork, ...] = _LOCAL_NETWORKS  # /metrics only from these (and by policy)
    session_sweep_interval_s: float = 60.0
    integrity_check_interval_s: float = 900.0  # audit chain self-check; 0 = off


@dataclass(frozen=True)
class AlertSettings:
    """Security alerts by e-mail and webhook (each channel off while unset)."""

    smtp_host: str = ""
    smtp_port: int = 25
    smtp_security: str = "none"  # none | starttls | tls
    smtp_username: str = ""
    smtp_password_file: Path | None = None  # one line, mode 0600
    email_from: str = "toolgate@localhost"
    email_to: tuple[str, ...] = ()
    webhook_url: str = ""
    webhook_secret_file: Path | None = None  # HMAC key for X-Toolgate-Signature, mode 0600
    signin_failures: int = 5  # failed sign-ins (one user or one address) within window_s
    denied_burst: int = 20  # denied requests from one user within window_s
    window_s: int = 300
    cooldown_s: int = 900  # the same alert again only after this long
    policy_changes: bool = True
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Settings:
    config_path: Path
    base_dir: Path
    server: ServerSettings = field(default_factory=ServerSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    state: StateSettings = field(default_factory=StateSettings)
    platform: PlatformSettings = field(default_factory=PlatformSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)


# ---------------------------------------------------------------- raw loading


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except PermissionError:
        raise ConfigError("config", f"cannot read {path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None


_SECTIONS = ("server", "session", "auth.oidc", "auth.upstream", "auth", "policy", "audit", "state", "platform", "alerts")


def _env_literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Fold ``GATEWAY_SECTION_KEY=value`` variables into the raw config dict."""
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "GATEWAY_CONFIG":
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section in _SECTIONS:
            prefix = section.replace(".", "_") + "_"
            if rest.startswith(prefix) and len(rest) > len(prefix):
                node = raw
                for part in section.split("."):
                    child = node.setdefault(part, {})
                    if not isinstance(child, dict):
                        raise ConfigError(section, "must be a table")
                    node = child
                node[rest[len(prefix) :]] = _env_literal(value)
                break
        else:
            raise ConfigError(name, "unknown GATEWAY_* variable (no such section or key)")


# ---------------------------------------------------------------- validation


class _Section:
    """Typed, key-checked reads from one TOML table; unknown keys are errors."""

    def __init__(self, name: str, table: Any, base_dir: Path) -> None:
        if not isinstance(table, dict):
            raise ConfigError(name, "must be a table")
        self.name = name
        self.table = dict(table)
        self.base_dir = base_dir
        self.seen: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.name}.{k}"

    def get(self, k: str, default: Any) -> Any:
        self.seen.add(k)
        return self.table.get(k, default)

    def str(self, k: str, default: str, *, allow_empty: bool = True) -> str:
        v = self.get(k, default)
        if not isinstance(v, str):
            raise ConfigError(self.key(k), f"must be a string, got {type(v).__name__}")
        if not allow_empty and not v.strip():
            raise ConfigError(self.key(k), "must not be empty")
        if any(ord(c) < 32 for c in v):
            raise ConfigError(self.key(k), "must not contain control characters")
        return v

    def choice(self, k: str, default: str, choices: Sequence[str]) -> str:
        v = self.str(k, default, allow_empty=False)
        if v not in choices:
            named = ", ".join(f'"{c}"' for c in choices[:-1]) + f' or "{choices[-1]}"'
            raise ConfigError(self.key(k), f"must be {named}, got {v!r}")
        return v

    def int(self, k: str, default: int, *, lo: int, hi: int) -> int:
        v = self.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(self.key(k), f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(self.key(k), f"must be between {lo} and {hi}, got {v}")
        return v

    def float(self, k: str, default: float, *, lo: float, hi: float) -> float:
        v = self.get(k, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(self.key(k), f"must be a number, got {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(self.key(k), f"must be between {lo} and {hi}, got {v}")
        return float(v)

    def bool(self, k: str, default: bool) -> bool:
        v = self.get(k, default)
        if not isinstance(v, bool):
            raise ConfigError(self.key(k), f"must be true or false, got {v!r}")
        return v

    def strs(self, k: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self.get(k, list(default))
        if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
            raise ConfigError(self.key(k), "must be a list of strings")
        return tuple(v)

    def networks(self, k: str, default: tuple[IPNetwork, ...]) -> tuple[IPNetwork, ...]:
        out = []
        for item in self.strs(k, tuple(str(n) for n in default)):
            try:
                out.append(ipaddress.ip_network(item.strip(), strict=True))
            except ValueError as exc:
                raise ConfigError(self.key(k), f"{item!r} is not a CIDR network ({exc})") from None
        return tuple(out)

    def path(self, k: str, default: Path | str) -> Path:
        v = self.str(k, str(default), allow_empty=False)
        p = Path(v).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def optional_path(self, k: str) -> Path | None:
        v = self.str(k, "")
        if not v:
            return None
        p = Path(v).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def done(self, sub_tables: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(self.table) - self.seen - set(sub_tables))
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")


def _check_secret_file(key: str, path: Path, *, must_exist: bool = True) -> None:
    """Key files must exist, be regular files and be private to their owner."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(key, f"file not found: {path} (run `gateway init` or create it)") from None
        return
    except PermissionError:
        raise ConfigError(key, f"cannot read {path}: permission denied") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(key, f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            key, f"{path} is readable by others (mode {oct(st.st_mode & 0o777)}); chmod 600 it"
        )


def _check_url(key: str, url: str, *, https_only: bool = False) -> None:
    parts = urlsplit(url)
    allowed = ("https",) if https_only else ("http", "https")
    if parts.scheme not in allowed or not parts.hostname:
        raise ConfigError(key, f"must be an absolute {' or '.join(allowed)} URL, got {url!r}")


def _server(raw: Any, base: Path) -> ServerSettings:
    s = _Section("server", raw, base)
    d = ServerSettings()
    public_url = s.str("public_url", d.public_url, allow_empty=False).rstrip("/")
    _check_url(s.key("public_url"), public_url)
    if urlsplit(public_url).path not in ("", "/"):
        raise ConfigError(s.key("public_url"), "must not have a path (serving under a prefix is not supported)")
    hosts = tuple(h.strip().lower().rstrip(".") for h in s.strs("trusted_hosts", d.trusted_hosts))
    if not hosts or any(not h or "/" in h or " " in h for h in hosts):
        raise ConfigError(s.key("trusted_hosts"), "must list one or more host names (\"*\" or \"*.example.com\" allowed)")
    out = ServerSettings(
        host=s.str("host", d.host, allow_empty=False),
        port=s.int("port", d.port, lo=0, hi=65535),
        public_url=public_url,
        trusted_hosts=hosts,
        trusted_proxies=s.networks("trusted_proxies", d.trusted_proxies),
        allowed_networks=s.networks("allowed_networks", d.allowed_networks),
        max_body_bytes=s.int("max_body_bytes", d.max_body_bytes, lo=1024, hi=1 << 34),
        max_header_bytes=s.int("max_header_bytes", d.max_header_bytes, lo=8192, hi=1 << 20),
        header_timeout_s=s.float("header_timeout_s", d.header_timeout_s, lo=1.0, hi=600.0),
        body_timeout_s=s.float("body_timeout_s", d.body_timeout_s, lo=1.0, hi=3600.0),
        tls_cert=s.optional_path("tls_cert"),
        tls_key=s.optional_path("tls_key"),
        http_redirect_port=s.int("http_redirect_port", d.http_redirect_port, lo=0, hi=65535),
        security_contact=s.str("security_contact", d.security_contact, allow_empty=False),
        access_contact=s.str("access_contact", d.access_contact, allow_empty=False),
        brand=s.str("brand", d.brand, allow_empty=False),
    )
    if not out.allowed_networks:
        raise ConfigError(s.key("allowed_networks"), "must list at least one network (an empty list would refuse everyone)")
    if (out.tls_cert is None) != (out.tls_key is None):
        raise ConfigError(s.key("tls_key" if out.tls_cert else "tls_cert"), "tls_cert and tls_key must be set together")
    if out.http_redirect_port and out.tls_cert is None:
        raise ConfigError(s.key("http_redirect_port"), "only makes sense with tls_cert/tls_key set")
    if out.http_redirect_port and not out.public_url.startswith("https://"):
        raise ConfigError(s.key("public_url"), "must be https when http_redirect_port is set")
    for k, p in (("tls_cert", out.tls_cert), ("tls_key", out.tls_key)):
        if p is not None and not p.is_file():
            raise ConfigError(s.key(k), f"file not found: {p}")
    if out.tls_key is not None and out.tls_key != out.tls_cert:
        _check_secret_file(s.key("tls_key"), out.tls_key)
    s.done()
    return out


def _session(raw: Any, base: Path) -> SessionSettings:
    s = _Section("session", raw, base)
    d = SessionSettings()
    out = SessionSettings(
        keys_file=s.path("keys_file", d.keys_file),
        idle_timeout_s=s.int("idle_timeout_s", d.idle_timeout_s, lo=60, hi=30 * 86400),
        absolute_timeout_s=s.int("absolute_timeout_s", d.absolute_timeout_s, lo=60, hi=90 * 86400),
    )
    if out.idle_timeout_s > out.absolute_timeout_s:
        raise ConfigError(s.key("idle_timeout_s"), "must not exceed absolute_timeout_s")
    _check_secret_file(s.key("keys_file"), out.keys_file)
    s.done()
    return out


def _oidc(raw: Any, base: Path) -> OIDCSettings:
    s = _Section("auth.oidc", raw, base)
    d = OIDCSettings(issuer="", client_id="")
    issuer = s.str("issuer", "", allow_empty=False).rstrip("/")
    _check_url(s.key("issuer"), issuer)
    out = OIDCSettings(
        issuer=issuer,
        client_id=s.str("client_id", "", allow_empty=False),
        client_secret=s.str("client_secret", ""),
        scopes=s.strs("scopes", d.scopes),
        groups_claim=s.str("groups_claim", d.groups_claim, allow_empty=False),
        username_claim=s.str("username_claim", d.username_claim, allow_empty=False),
        algorithms=s.strs("algorithms", d.algorithms),
        display_name=s.str("display_name", d.display_name, allow_empty=False),
    )
    if "openid" not in out.scopes:
        raise ConfigError(s.key("scopes"), "must include \"openid\"")
    _check_algorithms(s.key("algorithms"), out.algorithms)
    s.done()
    return out


_ASYMMETRIC_ALGS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


def _check_algorithms(key: str, algs: tuple[str, ...]) -> None:
    # Only asymmetric algorithms: an HS* entry would let a public JWKS key be
    # used as an HMAC secret (the classic key-confusion attack).
    bad = [a for a in algs if a not in _ASYMMETRIC_ALGS]
    if not algs or bad:
        raise ConfigError(key, f"must be a non-empty list of asymmetric algorithms, not {bad or algs}")


def _upstream(raw: Any, base: Path) -> UpstreamSettings:
    s = _Section("auth.upstream", raw, base)
    d = UpstreamSettings(header="", jwks_url="", audience="")
    out = UpstreamSettings(
        header=s.str("header", "", allow_empty=False).lower(),
        jwks_url=s.str("jwks_url", "", allow_empty=False),
        audience=s.str("audience", "", allow_empty=False),
        issuer=s.str("issuer", ""),
        algorithms=s.strs("algorithms", d.algorithms),
        username_claim=s.str("username_claim", d.username_claim, allow_empty=False),
        email_claim=s.str("email_claim", d.email_claim, allow_empty=False),
        groups_claim=s.str("groups_claim", d.groups_claim, allow_empty=False),
    )
    _check_url(s.key("jwks_url"), out.jwks_url)
    _check_algorithms(s.key("algorithms"), out.algorithms)
    s.done()
    return out


def _auth(raw: Any, base: Path) -> AuthSettings:
    s = _Section("auth", raw, base)
    d = AuthSettings()
    oidc_raw = s.table.get("oidc")
    upstream_raw = s.table.get("upstream")
    out = AuthSettings(
        users_file=s.path("users_file", d.users_file),
        token_key_file=s.path("token_key_file", d.token_key_file),
        token_issuer=s.str("token_issuer", d.token_issuer, allow_empty=False),
        token_audience=s.str("token_audience", d.token_audience, allow_empty=False),
        token_max_ttl_s=s.int("token_max_ttl_s", d.token_max_ttl_s, lo=60, hi=400 * 86400),
        login_max_failures=s.int("login_max_failures", d.login_max_failures, lo=1, hi=1000),
        login_window_s=s.int("login_window_s", d.login_window_s, lo=10, hi=86400),
        oidc=_oidc(oidc_raw, base) if oidc_raw is not None else None,
        upstream=_upstream(upstream_raw, base) if upstream_raw is not None else None,
    )
    _check_secret_file(s.key("token_key_file"), out.token_key_file)
    s.done(sub_tables=("oidc", "upstream"))
    return out


def _policy(raw: Any, base: Path) -> PolicySettings:
    s = _Section("policy", raw, base)
    d = PolicySettings()
    out = PolicySettings(
        dir=s.path("dir", d.dir),
        reload_interval_s=s.float("reload_interval_s", d.reload_interval_s, lo=0.1, hi=3600),
        known_groups=s.strs("known_groups", d.known_groups),
    )
    if not out.dir.is_dir():
        raise ConfigError(s.key("dir"), f"not a directory: {out.dir}")
    s.done()
    return out


def _audit(raw: Any, base: Path) -> AuditSettings:
    s = _Section("audit", raw, base)
    d = AuditSettings()
    out = AuditSettings(
        path=s.path("path", d.path),
        key_file=s.path("key_file", d.key_file),
        fail_closed=s.bool("fail_closed", d.fail_closed),
        max_bytes=s.int("max_bytes", d.max_bytes, lo=4096, hi=1 << 40),
        rotate_daily=s.bool("rotate_daily", d.rotate_daily),
        queue_size=s.int("queue_size", d.queue_size, lo=16, hi=10_000_000),
        flush_interval_s=s.float("flush_interval_s", d.flush_interval_s, lo=0.01, hi=60),
        stdout=s.bool("stdout", d.stdout),
        access_log=s.bool("access_log", d.access_log),
        syslog=s.bool("syslog", d.syslog),
        syslog_address=s.str("syslog_address", d.syslog_address, allow_empty=False),
        writer=s.choice("writer", d.writer, AUDIT_WRITERS),
    )
    _check_secret_file(s.key("key_file"), out.key_file)
    s.done()
    return out


_REPLICA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _state(raw: Any, base: Path) -> StateSettings:
    s = _Section("state", raw, base)
    d = StateSettings()
    backend = s.choice("backend", d.backend, ("memory", "redis"))
    out = StateSettings(
        backend=backend,
        redis_url=s.str("redis_url", d.redis_url, allow_empty=False),
        password_file=s.optional_path("password_file"),
        tls_ca_file=s.optional_path("tls_ca_file"),
        tls_cert_file=s.optional_path("tls_cert_file"),
        tls_key_file=s.optional_path("tls_key_file"),
        key_prefix=s.str("key_prefix", d.key_prefix, allow_empty=False),
        replica_id=s.str("replica_id", d.replica_id),
        timeout_s=s.float("timeout_s", d.timeout_s, lo=0.05, hi=30),
        health_interval_s=s.float("health_interval_s", d.health_interval_s, lo=0.1, hi=60),
        max_connections=s.int("max_connections", d.max_connections, lo=4, hi=10_000),
        session_cache_s=s.float("session_cache_s", d.session_cache_s, lo=0, hi=5),
    )
    url = urlsplit(out.redis_url)
    if url.scheme not in ("redis", "rediss", "unix") or (url.scheme != "unix" and not url.hostname):
        raise ConfigError(s.key("redis_url"), "must be redis://host[:port][/db], rediss://... (TLS) or unix:///path")
    tls_files = (("tls_ca_file", out.tls_ca_file), ("tls_cert_file", out.tls_cert_file), ("tls_key_file", out.tls_key_file))
    if url.scheme != "rediss":
        for k, p in tls_files:
            if p is not None:
                raise ConfigError(s.key(k), "only applies to a rediss:// (TLS) redis_url")
    if (out.tls_cert_file is None) != (out.tls_key_file is None):
        raise ConfigError(s.key("tls_key_file" if out.tls_cert_file else "tls_cert_file"), "tls_cert_file and tls_key_file must be set together")
    if len(out.key_prefix) > 64 or any(c.isspace() for c in out.key_prefix):
        raise ConfigError(s.key("key_prefix"), "must be at most 64 characters without spaces")
    if out.replica_id and not _REPLICA_ID_RE.match(out.replica_id):
        raise ConfigError(s.key("replica_id"), "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if backend == "redis":
        for k, p in tls_files[:2]:
            if p is not None and not p.is_file():
                raise ConfigError(s.key(k), f"file not found: {p}")
        for k, p in (("password_file", out.password_file), ("tls_key_file", out.tls_key_file)):
            if p is not None:
                _check_secret_file(s.key(k), p)
    s.done()
    return out


def _platform(raw: Any, base: Path) -> PlatformSettings:
    s = _Section("platform", raw, base)
    d = PlatformSettings()
    out = PlatformSettings(
        api=s.bool("api", d.api),
        mcp=s.bool("mcp", d.mcp),
        docs_public=s.bool("docs_public", d.docs_public),
        metrics_networks=s.networks("metrics_networks", d.metrics_networks),
        session_sweep_interval_s=s.float("session_sweep_interval_s", d.session_sweep_interval_s, lo=1, hi=86400),
        integrity_check_interval_s=s.float("integrity_check_interval_s", d.integrity_check_interval_s, lo=0, hi=7 * 86400),
    )
    if not out.metrics_networks:
        raise ConfigError(s.key("metrics_networks"), "must list at least one network")
    s.done()
    return out


def _alerts(raw: Any, base: Path) -> AlertSettings:
    s = _Section("alerts", raw, base)
    d = AlertSettings()
    out = AlertSettings(
        smtp_host=s.str("smtp_host", d.smtp_host).strip(),
        smtp_port=s.int("smtp_port", d.smtp_port, lo=1, hi=65535),
        smtp_security=s.choice("smtp_security", d.smtp_security, ("none", "starttls", "tls")),
        smtp_username=s.str("smtp_username", d.smtp_username),
        smtp_password_file=s.optional_path("smtp_password_file"),
        email_from=s.str("email_from", d.email_from, allow_empty=False),
        email_to=s.strs("email_to", d.email_to),
        webhook_url=s.str("webhook_url", d.webhook_url).strip(),
        webhook_secret_file=s.optional_path("webhook_secret_file"),
        signin_failures=s.int("signin_failures", d.signin_failures, lo=1, hi=100_000),
        denied_burst=s.int("denied_burst", d.denied_burst, lo=1, hi=1_000_000),
        window_s=s.int("window_s", d.window_s, lo=1, hi=86400),
        cooldown_s=s.int("cooldown_s", d.cooldown_s, lo=0, hi=7 * 86400),
        policy_changes=s.bool("policy_changes", d.policy_changes),
        timeout_s=s.float("timeout_s", d.timeout_s, lo=0.5, hi=120),
    )
    if "@" not in out.email_from:
        raise ConfigError(s.key("email_from"), "must be an e-mail address")
    if out.smtp_host and (not out.email_to or any("@" not in a or any(c.isspace() for c in a) for a in out.email_to)):
        raise ConfigError(s.key("email_to"), "must list one or more e-mail addresses when smtp_host is set")
    if out.webhook_url:
        _check_url(s.key("webhook_url"), out.webhook_url)
    for k, p in (("smtp_password_file", out.smtp_password_file), ("webhook_secret_file", out.webhook_secret_file)):
        if p is not None:
            _check_secret_file(s.key(k), p)
    s.done()
    return out


def resolve_config_path(explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(explicit or environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG)


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, override and validate the configuration; raise ConfigError on any fault."""
    environ = os.environ if environ is None else environ
    path = resolve_config_path(config_path, environ).expanduser().resolve()
    raw = _read_toml(path)
    apply_env_overrides(raw, environ)
    base = path.parent
    known = {"server", "session", "auth", "policy", "audit", "state", "platform", "alerts"}
    for top in raw:
        if top not in known:
            raise ConfigError(top, "unknown section")
    return Settings(
        config_path=path,
        base_dir=base,
        server=_server(raw.get("server", {}), base),
        session=_session(raw.get("session", {}), base),
        auth=_auth(raw.get("auth", {}), base),
        policy=_policy(raw.get("policy", {}), base),
        audit=_audit(raw.get("audit", {}), base),
        state=_state(raw.get("state", {}), base),
        platform=_platform(raw.get("platform", {}), base),
        alerts=_alerts(raw.get("alerts", {}), base),
    )
