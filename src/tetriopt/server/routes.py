"""Image routes: OpenAI's POST /v1/images/generations and the async jobs API.

  POST /v1/images/generations        OpenAI Images API (waits for the images)
  POST /v1/jobs                      same body; 202 with a job id at once
  GET  /v1/jobs/{id}                 status, progress, and the result when done
  GET  /v1/jobs/{id}/events          Server-Sent Events: progress ... done
  DELETE /v1/jobs/{id}               cancel (its GPUs are freed at the next round)
  GET  /v1/jobs/{id}/images/{i}.{fmt}  an image (response_format=url)

Both POST routes take an `Idempotency-Key` header: a retry with the same key and body gets
the job the first attempt created instead of a second one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .deps import Svc, authorized, public_base, read_body
from .errors import ApiError
from .executors.png import MEDIA_TYPES, encode_image
from .jobs import Job
from .requests import parse_generation, parse_json_body, request_schema
from .service import Service

router = APIRouter(dependencies=[Depends(authorized)])
DISCONNECT_POLL_S = 0.1
# the body schema is declared for the OpenAPI document only: parsing is requests.py's, by hand
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": request_schema(10, 1000)}}}}


def _image(job: Job, i: int) -> bytes:
    return encode_image(job.tasks[i].image or b"", job.output_format, job.output_compression)


def _result(job: Job, base_url: str) -> dict[str, Any]:
    """The OpenAI ImagesResponse body for a finished job, with a `tetriopt` block of figures."""
    data = []
    for i in range(len(job.tasks)):
        if job.response_format == "url":
            data.append({"url": f"{base_url}v1/jobs/{job.id}/images/{i}.{job.output_format}"})
        else:
            data.append({"b64_json": base64.b64encode(_image(job, i)).decode()})
    fin = job.finish_us
    return {"created": job.created, "data": data, "output_format": job.output_format,
            "quality": job.quality, "size": f"{job.width}x{job.height}",
            "tetriopt": {"job_id": job.id, "steps": job.steps, "seed": job.seed, "deadline_met": job.met,
                         "arrival_ms": round(job.arrival_us / 1e3, 3),  # scheduler clock: rounds at k x round_ms
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


def _idempotency_key(request: Request, body: dict[str, Any]) -> str | None:
    """The header scoped to the route, with a fingerprint of the body (a reuse with another body is a 409)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= 255 or not key.isprintable():
        raise ApiError(400, "Idempotency-Key: must be 1..255 printable characters", param="Idempotency-Key")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return f"{request.url.path} {key} {digest}"


async def _submit(request: Request, svc: Service, sync: bool) -> Job:
    cfg = svc.cfg
    body = parse_json_body(await read_body(request, cfg.max_body_bytes), request.headers.get("content-type"))
    req = parse_generation(body, max_prompt_chars=cfg.max_prompt_chars, max_n=cfg.max_n,
                           max_steps=cfg.max_steps, default_size=svc.default_size)
    return svc.accept(req, sync=sync, idempotency_key=_idempotency_key(request, body))


def _job(svc: Service, job_id: str) -> Job:
    job = svc.store.get(job_id)
    if job is None:
        raise ApiError(404, f"job_id: no job {job_id!r} (unknown or expired)", param="job_id", code="not_found")
    return job


@router.post("/v1/images/generations", openapi_extra=_BODY)
async def generations(request: Request, svc: Svc) -> Response:
    job = await _submit(request, svc, sync=True)
    job.waiters += 1
    try:
        while not job.done_event.is_set():
            try:
                await asyncio.wait_for(job.done_event.wait(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.waiters -= 1
                    svc.client_gone(job)
                    return Response(status_code=499)
        job.waiters -= 1
    finally:  # answered, or the caller went away: either way nobody will fetch it later
        svc.store.delivered(job)
    if job.status != "succeeded":
        raise ApiError(503 if job.status == "failed" else 409, job.error or f"job {job.status}",
                       type="server_error", code=job.status)
    return JSONResponse(_result(job, public_base(request, svc)))


@router.post("/v1/jobs", status_code=202, openapi_extra=_BODY)
async def submit_job(request: Request, svc: Svc) -> JSONResponse:
    job = await _submit(request, svc, sync=False)
    return JSONResponse(_job_body(job, public_base(request, svc)), status_code=202,
                        headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request, svc: Svc) -> JSONResponse:
    job = _job(svc, job_id)
    if job.terminal:
        svc.store.delivered(job)
    return JSONResponse(_job_body(job, public_base(request, svc)))


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, request: Request, svc: Svc) -> JSONResponse:
    job = _job(svc, job_id)
    svc.cancel(job, "cancelled by DELETE")
    svc.store.delivered(job)
    return JSONResponse(_job_body(job, public_base(request, svc)))


@router.get("/v1/jobs/{job_id}/images/{name}")
async def get_image(job_id: str, name: str, svc: Svc) -> Response:
    job = _job(svc, job_id)
    stem, _, ext = name.partition(".")
    if not stem.isdigit() or not 0 <= int(stem) < job.n or ext != job.output_format:
        raise ApiError(404, f"name: job {job_id} has images 0..{job.n - 1}.{job.output_format} (got {name!r})",
                       param="name", code="not_found")
    i = int(stem)
    if job.tasks[i].image is None:
        raise ApiError(409, f"image {i} of job {job_id} is not ready ({job.status})", code="not_ready")
    svc.store.delivered(job)
    return Response(_image(job, i), media_type=MEDIA_TYPES[job.output_format])


@router.get("/v1/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request, svc: Svc) -> StreamingResponse:
    job = _job(svc, job_id)
    q: asyncio.Queue = asyncio.Queue()
    job.listeners.append(q)
    base = public_base(request, svc)

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
            svc.store.delivered(job)
            yield sse("done", _job_body(job, base))
        finally:
            job.listeners.remove(q)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
