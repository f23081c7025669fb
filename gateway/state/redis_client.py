"""One redis-py asyncio client per process, built from ``[state]``.

* Password from ``state.password_file`` (or the URL's user info); never logged:
  :func:`target` is what logs, audit records and /readyz name.
* TLS with ``rediss://``: the server certificate is always verified (system
  CAs, or ``tls_ca_file``), host name included, TLS 1.2 or newer; a client
  certificate is presented when ``tls_cert_file``/``tls_key_file`` are set.
* A bounded, *blocking* pool: under a burst a call waits up to ``timeout_s``
  for a free connection instead of failing, and the connection count stays
  predictable for the Redis server.
* Short timeouts and one retry on a broken connection (a pooled connection
  that died with a Redis restart), no retry on a timeout: an outage must show
  quickly, not hide behind back-off.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.settings import ConfigError, StateSettings


def target(settings: StateSettings) -> str:
    """``host:port/db`` or the unix socket path: the URL without credentials."""
    u = urlsplit(settings.redis_url)
    if u.scheme == "unix":
        return f"unix:{u.path}"
    db = u.path.strip("/") or "0"
    return f"{u.scheme}://{u.hostname}:{u.port or 6379}/{db}"


def _password(settings: StateSettings) -> str | None:
    if settings.password_file is None:
        return None
    try:
        text = settings.password_file.read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError("state.password_file", f"cannot read {settings.password_file}: {exc.strerror}") from None
    if not text or "\n" in text:
        raise ConfigError("state.password_file", "must hold the password on one line")
    return text


def connect(settings: StateSettings, *, client_name: str | None = None, max_connections: int | None = None) -> aioredis.Redis:
    """A client for ``settings``; no connection is made until the first call."""
    kwargs: dict[str, object] = {
        "socket_timeout": settings.timeout_s,
        "socket_connect_timeout": settings.timeout_s,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "decode_responses": False,
    }
    password = _password(settings)
    if password is not None:
        kwargs["password"] = password
    if client_name:
        kwargs["client_name"] = client_name
    if urlsplit(settings.redis_url).scheme == "rediss":
        kwargs.update(
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
            ssl_min_version=ssl.TLSVersion.TLSv1_2,
        )
        if settings.tls_ca_file is not None:
            kwargs["ssl_ca_certs"] = str(settings.tls_ca_file)
        if settings.tls_cert_file is not None:
            kwargs["ssl_certfile"] = str(settings.tls_cert_file)
            kwargs["ssl_keyfile"] = str(settings.tls_key_file)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections or settings.max_connections,
        timeout=settings.timeout_s,
        **kwargs,
    )
    return aioredis.Redis(connection_pool=pool)
