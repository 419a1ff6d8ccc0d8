"""A small real ASGI app (Starlette) for the backend cluster's lab tests.

Deployed onto the lab's API host by the real deploy (deploys/phase4.py with
`--data backends_app_source=brainall_ops/lab/backend_app --data backends_app=lab_app:app`).
Every answer says which instance served it: the port, the worker's pid, the mode and workers it
was started with (the environment backendctl gives each instance).
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

MAX_DELAY_S = 5.0


def _identity() -> dict[str, object]:
    return {
        "port": int(os.environ.get("BRAINALL_BACKEND_PORT", "0")),
        "pid": os.getpid(),
        "mode": os.environ.get("BRAINALL_BACKEND_MODE"),
        "workers": int(os.environ.get("BRAINALL_BACKEND_WORKERS", "0")),
        "validation_mode": os.environ.get("OMNIMIND_VALIDATION_MODE"),
    }


async def whoami(request: Request) -> JSONResponse:
    # ?delay=S holds the request open (bounded), to have requests in flight during a drain
    delay = min(float(request.query_params.get("delay", "0") or 0), MAX_DELAY_S)
    if delay > 0:
        await asyncio.sleep(delay)
    return JSONResponse(_identity())


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({**_identity(), "received": len(body)})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


app = Starlette(
    routes=[
        Route("/", whoami),
        Route("/health", health),
        Route("/echo", echo, methods=["POST"]),
    ]
)
