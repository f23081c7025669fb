"""The real gateway plus two test-only routes, served by uvicorn like ``gateway run``.

``/api/test/echo`` returns the headers and client address it received, so a
test can assert on exactly what reaches the application behind the chain;
``/api/test/boom`` raises.  Both sit behind the full chain and policy.

    python tests/app/probe_server.py CONFIG PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import uvicorn  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from gateway import logging as gateway_logging  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.server import uvicorn_config  # noqa: E402
from gateway.settings import load_settings  # noqa: E402


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "client": request.scope["client"][0] if request.scope.get("client") else None,
        }
    )


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("internal detail: /srv/secret/config.py password=hunter2")


def main() -> None:
    config, port = sys.argv[1], int(sys.argv[2])
    gateway_logging.configure(json=True)
    settings = load_settings(config)
    app = create_app(settings, extra_routes=[Route("/api/test/echo", echo, methods=["GET", "POST"]), Route("/api/test/boom", boom)])
    uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=port)).run()


if __name__ == "__main__":
    main()
