"""How long does checking a session cookie take?  Prints microseconds per call.

    .venv/bin/python benchmarks/session_verify.py [--number N]

Measures, with timeit:
  * ``SessionManager.resolve()``: signature + timestamp check, store lookup,
    users-file revocation check (the work done on every request);
  * the same for a tampered cookie (the refusal path);
  * the session + authentication middleware pair around a no-op app, per
    http request (cookie parsing, header stripping and injection included).

The memory store and the resolve coroutine never suspend, so each coroutine
is driven to completion with ``send(None)``: no event-loop cost is counted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any, Callable, Coroutine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.responses import Response  # noqa: E402

from gateway.auth.keyring import KeyRing, new_session_key, write_private  # noqa: E402
from gateway.auth.sessions import MemorySessionStore, SessionManager  # noqa: E402
from gateway.auth.users import UserDirectory  # noqa: E402
from gateway.context import RequestContext  # noqa: E402
from gateway.middleware.authentication import AuthenticationMiddleware  # noqa: E402
from gateway.middleware.session import SessionMiddleware  # noqa: E402
from gateway.settings import SessionSettings  # noqa: E402


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("coroutine suspended; cannot time it synchronously")


def per_call_us(fn: Callable[[], Any], number: int) -> float:
    timer = timeit.Timer(fn)
    best = min(timer.repeat(repeat=5, number=number))
    return best / number * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=20_000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "session.keys"
        # two keys: the realistic state during a rotation
        write_private(keys, f"{new_session_key()}\n{new_session_key()}\n")
        ring = KeyRing(keys)
        users = UserDirectory(Path(tmp) / "users.toml", warm=False)
        mgr = SessionManager(SessionSettings(keys_file=keys), MemorySessionStore(), ring, users=users)
        resp = Response()
        run_sync(
            mgr.start(resp, user="alice", email="alice@example.com", groups=["employees"], auth_method="oidc", https=True)
        )
        cookie = resp.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
        assert run_sync(mgr.resolve(cookie, https=True))[1] == "ok"
        tampered = cookie[:-1] + ("A" if cookie[-1] != "A" else "B")

        async def noop(scope: Any, receive: Any, send: Any) -> None:
            return None

        chain = SessionMiddleware(AuthenticationMiddleware(noop, sessions=mgr), sessions=mgr)
        raw_headers = [
            (b"host", b"gw.example"),
            (b"user-agent", b"Mozilla/5.0"),
            (b"accept", b"text/html"),
            (b"cookie", f"_streamlit_xsrf=abc; __Host-toolgate_session={cookie}".encode()),
            (b"x-gateway-user", b"spoofed"),
        ]

        def one_request() -> None:
            scope = {"type": "http", "scheme": "https", "path": "/", "headers": list(raw_headers)}
            scope["gateway"] = RequestContext(request_id="r", client_ip="127.0.0.1", scheme="https", host="gw.example")
            run_sync(chain(scope, None, None))

        results = {
            "resolve() valid cookie": per_call_us(lambda: run_sync(mgr.resolve(cookie, https=True)), args.number),
            "resolve() tampered cookie": per_call_us(lambda: run_sync(mgr.resolve(tampered, https=True)), args.number),
            "session+auth middleware per request": per_call_us(one_request, args.number),
        }
    for name, us in results.items():
        print(f"{name:40s} {us:8.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
