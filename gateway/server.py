"""``gateway run``: uvicorn with the settings the gateway's security relies on.

- ``proxy_headers=False``: uvicorn would otherwise believe ``X-Forwarded-For``
  from 127.0.0.1 and rewrite the client address before the gateway sees it;
  the request-context middleware decides which proxies to trust.
- ``server_header=False``: no ``Server`` banner.
- the HTTP protocol is httptools with bounds on the request head's size and
  time (:mod:`gateway.http_protocol`): uvicorn has neither.
- graceful shutdown: in-flight requests finish, the lifespan drains the audit
  queue and closes websockets.
- ``--workers N``: N processes on one socket, each built by the factory in
  :mod:`gateway.asgi`.  Only with ``[state] backend = "redis"``: with the
  memory backend each process would hold its own sessions and counters, so a
  sign-out in one would not end the session in the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
from collections.abc import Callable

import structlog
import uvicorn

from gateway import logging as gateway_logging
from gateway.http_protocol import PROTOCOL_PATH, ConnectionLimits, set_connection_limits
from gateway.settings import ConfigError, Settings

log = structlog.get_logger(__name__)

GRACEFUL_SHUTDOWN_S = 15


def uvicorn_config(app: object, settings: Settings, *, host: str, port: int, **extra: object) -> uvicorn.Config:
    s = settings.server
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=False,
        server_header=False,
        date_header=True,
        access_log=False,  # the audit middleware records every request
        log_config=None,
        lifespan="on",
        ws="websockets-sansio",
        ws_max_size=16 * 1024 * 1024,
        ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
        ssl_keyfile=str(s.tls_key) if s.tls_key else None,
        ssl_context_factory=hardened_tls_context if s.tls_cert else None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        http=PROTOCOL_PATH,  # httptools with bounds on the request head's size and time
        **extra,  # type: ignore[arg-type]
    )
    set_connection_limits(config, ConnectionLimits.of(s))
    return config


# Mozilla's "intermediate" TLS 1.2 suites (forward secret AEAD only); TLS 1.3
# suites are all acceptable and are not affected by this list.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
    )
)  # fmt: skip


def hardened_tls_context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's context with an explicit floor: TLS 1.2+, forward-secret AEAD suites, no renegotiation.

    Stated here rather than left to the system OpenSSL policy, which differs
    between base images (uvicorn's own default cipher string is "TLSv1").
    Module-level so uvicorn can pickle the config into worker processes.
    """
    ctx = default()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx



def serve(settings: Settings, *, host: str | None = None, port: int | None = None, workers: int = 1) -> int:
    gateway_logging.configure()
    if workers < 1:
        raise ConfigError("--workers", f"must be at least 1, got {workers}")
    if workers > 1:
        return _serve_workers(settings, host=host, port=port, workers=workers)
    from gateway.app import create_app

    app = create_app(settings, freeze_heap=True)
    h = host or settings.server.host
    p = port if port is not None else settings.server.port
    scheme = "https" if settings.server.tls_cert else "http"
    log.info("gateway.listening", url=f"{scheme}://{h}:{p}", public_url=settings.server.public_url)
    server = uvicorn.Server(uvicorn_config(app, settings, host=h, port=p))
    # The loop uvicorn.run() would pick (uvloop when installed): asyncio.run()
    # alone would silently fall back to the slower default loop.
    try:
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(_serve_all(server, settings, h))
    except KeyboardInterrupt:
        pass
    return 0


def _serve_workers(settings: Settings, *, host: str | None, port: int | None, workers: int) -> int:
    if settings.state.backend != "redis":
        raise ConfigError(
            "state.backend",
            f'--workers {workers} needs state.backend = "redis" (with "memory" each worker would keep its own sessions)',
        )
    if settings.server.http_redirect_port:
        raise ConfigError("server.http_redirect_port", "is not supported with --workers; redirect to https on the proxy")
    from uvicorn.supervisors import Multiprocess

    from gateway.services import build_services

    # Build everything once here so a bad policy, key or users file stops
    # start-up with one line, rather than N workers crash-looping on it.
    build_services(settings).state.release()
    os.environ["GATEWAY_CONFIG"] = str(settings.config_path)
    h = host or settings.server.host
    p = port if port is not None else settings.server.port
    config = uvicorn_config("gateway.asgi:create_app", settings, host=h, port=p, factory=True, workers=workers)
    scheme = "https" if settings.server.tls_cert else "http"
    log.info("gateway.listening", url=f"{scheme}://{h}:{p}", public_url=settings.server.public_url, workers=workers)
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


class _QuietServer(uvicorn.Server):
    """A second listener in the same loop: the main server owns the signals."""

    def capture_signals(self):  # type: ignore[override]
        return contextlib.nullcontext()


async def _serve_all(server: uvicorn.Server, settings: Settings, host: str) -> None:
    port = settings.server.http_redirect_port
    if not port:
        await server.serve()
        return
    from gateway.middleware.https_redirect import RedirectOnlyApp

    app = RedirectOnlyApp(settings.server.public_url)
    config = uvicorn.Config(app, host=host, port=port, proxy_headers=False, server_header=False,
                            access_log=False, log_config=None, lifespan="off", http=PROTOCOL_PATH)  # fmt: skip
    set_connection_limits(config, ConnectionLimits.of(settings.server))
    redirect = _QuietServer(config)
    log.info("gateway.listening", url=f"http://{host}:{port}", role="redirect-to-https")
    task = asyncio.create_task(redirect.serve())
    try:
        await server.serve()
    finally:
        redirect.should_exit = True
        await task


if __name__ == "__main__":  # pragma: no cover
    from gateway.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
