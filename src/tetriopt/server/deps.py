"""What every route needs: the service (a FastAPI dependency), the API-key check, the body reader.

The service lives on `app.state`; routes ask for it with `Svc` rather than closing over it, so
the routers are plain modules and a test can build an app around any service.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from .errors import ApiError
from .service import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


Svc = Annotated[Service, Depends(get_service)]


def authorized(request: Request, svc: Svc) -> None:
    """With --api-key: 'Authorization: Bearer KEY', compared in constant time."""
    key = svc.cfg.api_key
    if not key:
        return
    got = request.headers.get("authorization", "")
    token = got[7:] if got[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise ApiError(401, "Authorization: missing or invalid API key (Authorization: Bearer ...)",
                       code="invalid_api_key")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it all."""
    cl = request.headers.get("content-length")
    if cl is not None and cl.isdigit() and int(cl) > limit:
        raise ApiError(413, f"request body of {cl} bytes exceeds the limit of {limit}", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def public_base(request: Request, svc: Service) -> str:
    """Base URL of `url` results: --public-url, else the local address the connection reached.

    Never the Host header: a client (or anything in between) can set that to any name.
    """
    if svc.cfg.public_url:
        return svc.cfg.public_url.rstrip("/") + "/"
    host, port = request.scope.get("server") or (svc.cfg.host, svc.cfg.port)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"
