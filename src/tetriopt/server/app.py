"""The ASGI app: the service, the routers (routes.py, ops.py) and one error shape for everything.

Every refusal is an ApiError rendered in OpenAI's error shape and counted once, here, by
`Metrics.rejected`; anything unexpected is still answered in that shape (500), never as text.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import ops, routes
from .config import ServerConfig
from .errors import ApiError
from .service import Service

log = logging.getLogger("tetriopt.server.app")


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def create_app(cfg: ServerConfig, on_drained: Any = None, service: Service | None = None) -> FastAPI:
    """The app; the service starts with the app's lifespan. `on_drained` runs after a drain.
    `service`: another Service (the Ray front-end's) instead of the single-process one."""
    svc = service or Service(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    app = FastAPI(title="tetriopt", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.service = svc

    async def drain() -> None:
        await svc.drain()
        if on_drained:
            on_drained()

    app.state.drain = drain

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        svc.metrics.rejected(e.status, e.code)
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return _error(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}", code=kind))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in err.get("loc", ())[1:]) or None
        return _error(ApiError(400, f"{where}: {err.get('msg', 'invalid')}", param=where))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return _error(ApiError(500, f"internal error: {type(e).__name__}", type="server_error", code="internal"))

    app.include_router(routes.router)
    app.include_router(ops.router)
    app.include_router(ops.probes)
    return app
