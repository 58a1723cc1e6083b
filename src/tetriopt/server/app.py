"""The HTTP API: OpenAI's POST /v1/images/generations, async jobs with SSE progress, operations.

Routes
  POST /v1/images/generations   OpenAI Images API (waits for the images)
  POST /v1/jobs                 same body; 202 with a job id at once
  GET  /v1/jobs/{id}            status, progress, and the result when done
  GET  /v1/jobs/{id}/events     Server-Sent Events: progress ... done
  DELETE /v1/jobs/{id}          cancel
  GET  /v1/jobs/{id}/images/{i}.png   an image (response_format=url)
  GET  /v1/models, /v1/stats, /healthz, /readyz, /metrics
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import ServerConfig
from .errors import ApiError
from .jobs import Job
from .requests import parse_generation, parse_json_body
from .service import Service

log = logging.getLogger("tetriopt.server.app")
OPEN_PATHS = ("/healthz", "/readyz", "/metrics")


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _result(job: Job, base_url: str) -> dict[str, Any]:
    """The OpenAI ImagesResponse body for a finished job, with a `tetriopt` block of figures."""
    data = []
    for i, t in enumerate(job.tasks):
        if job.response_format == "url":
            data.append({"url": f"{base_url}v1/jobs/{job.id}/images/{i}.png"})
        else:
            data.append({"b64_json": base64.b64encode(t.image or b"").decode()})
    fin = job.finish_us
    return {"created": job.created, "data": data, "output_format": "png", "size": f"{job.width}x{job.height}",
            "tetriopt": {"job_id": job.id, "steps": job.steps, "deadline_met": job.met,
                         "latency_ms": None if fin is None else round((fin - job.arrival_us) / 1e3, 3),
                         "deadline_ms_after_arrival": round((job.deadline_us - job.arrival_us) / 1e3, 3),
                         "best_effort": job.best_effort}}


def _job_body(job: Job, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "image.job", **job.progress(), "created": job.created,
                           "best_effort": job.best_effort}
    if job.status == "succeeded":
        out["result"] = _result(job, base_url)
    elif job.error:
        out["error"] = {"message": job.error, "type": "server_error", "param": None, "code": job.status}
    return out


async def _read_body(request: Request, limit: int) -> bytes:
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


def create_app(cfg: ServerConfig, on_drained: Any = None, service: Service | None = None) -> FastAPI:
    """The ASGI app; the service starts with the app's lifespan. `on_drained` runs after a drain.
    `service`: another Service (the Ray front-end's) instead of the single-process one."""
    svc = service or Service(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    app = FastAPI(title="tetriopt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc

    async def drain() -> None:
        await svc.drain()
        if on_drained:
            on_drained()

    app.state.drain = drain

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        if e.code != "deadline_infeasible" and (e.status in (400, 413) or e.status == 404 and e.param == "model"):
            svc.metrics.requests.labels("rejected_invalid").inc()
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return _error(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                               code=kind))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in err.get("loc", ())[1:]) or None
        return _error(ApiError(400, f"{where}: {err.get('msg', 'invalid')}", param=where))

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if cfg.api_key and request.url.path not in OPEN_PATHS:
            got = request.headers.get("authorization", "")
            token = got[7:] if got[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), cfg.api_key.encode()):
                svc.metrics.requests.labels("rejected_auth").inc()
                return _error(ApiError(401, "missing or invalid API key (Authorization: Bearer ...)",
                                       code="invalid_api_key"))
        return await call_next(request)

    async def _submit(request: Request, sync: bool) -> Job:
        body = parse_json_body(await _read_body(request, cfg.max_body_bytes))
        req = parse_generation(body, max_prompt_chars=cfg.max_prompt_chars, max_n=cfg.max_n,
                               max_steps=cfg.max_steps, default_size=svc.default_size)
        return svc.accept(req, sync=sync)

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> JSONResponse:
        job = await _submit(request, sync=True)
        try:
            await job.done_event.wait()
        finally:  # answered, or the caller went away: either way nobody will fetch it later
            job.delivered = True
        if job.status != "succeeded":
            return _error(ApiError(503 if job.status == "failed" else 409, job.error or f"job {job.status}",
                                   type="server_error", code=job.status))
        return JSONResponse(_result(job, str(request.base_url)))

    @app.post("/v1/jobs", status_code=202)
    async def submit_job(request: Request) -> JSONResponse:
        job = await _submit(request, sync=False)
        return JSONResponse(_job_body(job, str(request.base_url)), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    def _job(job_id: str) -> Job:
        job = svc.store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (unknown or expired)", param="job_id", code="not_found")
        return job

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str, request: Request) -> JSONResponse:
        job = _job(job_id)
        if job.terminal:
            job.delivered = True
        return JSONResponse(_job_body(job, str(request.base_url)))

    @app.delete("/v1/jobs/{job_id}")
    async def cancel_job(job_id: str, request: Request) -> JSONResponse:
        job = _job(job_id)
        svc.scheduler.cancel(job)
        job.delivered = True
        return JSONResponse(_job_body(job, str(request.base_url)))

    @app.get("/v1/jobs/{job_id}/images/{index}.png")
    async def get_image(job_id: str, index: int) -> Response:
        job = _job(job_id)
        if not 0 <= index < job.n:
            raise ApiError(404, f"job {job_id} has images 0..{job.n - 1}", param="index", code="not_found")
        t = job.tasks[index]
        if t.image is None:
            raise ApiError(409, f"image {index} of job {job_id} is not ready ({job.status})", code="not_ready")
        job.delivered = True
        return Response(t.image, media_type="image/png")

    @app.get("/v1/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        job = _job(job_id)
        q: asyncio.Queue = asyncio.Queue()
        job.listeners.append(q)
        base = str(request.base_url)

        def sse(event: str, data: dict[str, Any]) -> str:
            return f"event: {event}\ndata: {json.dumps(data)}\n\n"

        async def stream() -> AsyncIterator[str]:
            try:
                yield sse("progress", job.progress())
                while not job.terminal:
                    try:
                        event, data = await asyncio.wait_for(q.get(), timeout=15)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event == "progress":
                        yield sse(event, data)
                job.delivered = True
                yield sse("done", _job_body(job, base))
            finally:
                job.listeners.remove(q)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": svc.model, "object": "model", "owned_by": "tetriopt",
                                            "profile": svc.profile.name}]}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        return {"model": svc.model, "profile": svc.profile.name, "gpus": cfg.gpus,
                "islands": [list(i) for i in svc.cluster.islands], "degrees": list(svc.degrees),
                "policy": cfg.policy,
                "executor": cfg.executor, "round_ms": svc.timing.round_us / 1e3,
                "lead_ms": svc.timing.lead_us / 1e3, "time_limit_ms": svc.time_limit_ms,
                "draining": svc.draining, **svc.metrics.stats()}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if svc.ready:
            return JSONResponse({"status": "ready"})
        why = "draining" if svc.draining else "not started" if not svc.started else "round loop stopped"
        return JSONResponse({"status": why}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
