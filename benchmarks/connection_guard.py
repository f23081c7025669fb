"""What the request-head bounds cost: uvicorn's httptools protocol against the gateway's guarded one.

Drives both protocol classes in one process with the same keep-alive
requests (a typical signed-in GET, whole in one read, as nearly all are)
through a stub transport and a trivial ASGI app, alternating rounds, and
prints the per-request time of each, the difference and the ratio.

    .venv/bin/python benchmarks/connection_guard.py [--requests 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from uvicorn.config import Config  # noqa: E402
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from gateway.http_protocol import GuardedHttpToolsProtocol  # noqa: E402

REQUEST = (
    b"GET /_stcore/health HTTP/1.1\r\nHost: localhost:8501\r\nUser-Agent: wrk\r\n"
    b"Cookie: toolgate_session=" + b"s" * 120 + b"\r\n\r\n"
)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class StubTransport:
    def __init__(self) -> None:
        self.protocol: asyncio.Protocol | None = None
        self.closing = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_protocol(self) -> asyncio.Protocol | None:
        return self.protocol

    def get_extra_info(self, key: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8501)}.get(key, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def per_request_us(cls: type[HttpToolsProtocol], n: int) -> float:
    config = Config(app, lifespan="off", access_log=False, log_config=None)
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    transport = StubTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for _ in range(n):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - t0
    protocol.connection_lost(None)
    return elapsed / n * 1e6


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    plain: list[float] = []
    guarded: list[float] = []
    for _ in range(args.rounds):
        plain.append(await per_request_us(HttpToolsProtocol, args.requests))
        guarded.append(await per_request_us(GuardedHttpToolsProtocol, args.requests))
    p, g = statistics.median(plain), statistics.median(guarded)
    print(f"{'protocol':<24}{'us/request (median of ' + str(args.rounds) + ')':>30}")
    print(f"{'uvicorn httptools':<24}{p:>30.2f}")
    print(f"{'gateway guarded':<24}{g:>30.2f}")
    print(f"difference {g - p:+.2f} us/request; ratio plain/guarded {p / g:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
