"""Operations routes: models, stats, the live schedule and its dashboard, probes, Prometheus.

  GET /v1/models, /v1/stats            the served model; counters and windowed figures (JSON)
  GET /v1/schedule                     recent and planned rounds, the queue, attainment over time
  GET /dashboard                       a page drawing /v1/schedule (plain HTML + JS, no CDN)
  GET /healthz, /readyz, /metrics      liveness, readiness (503 while draining), Prometheus
(probes, metrics and the dashboard page are open; everything else needs the API key when one is set)
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import Svc, authorized

router = APIRouter(dependencies=[Depends(authorized)])
probes = APIRouter()  # no API key: orchestrators and scrapers call these


@router.get("/v1/models")
async def models(svc: Svc) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": svc.model, "object": "model", "created": 0, "owned_by": "tetriopt",
                                        "profile": svc.profile.name}]}


@router.get("/v1/models/{model_id}")
async def model(model_id: str, svc: Svc) -> dict[str, Any]:
    from .errors import ApiError

    if model_id not in (svc.model, svc.profile.name):
        raise ApiError(404, f"model: The model '{model_id}' does not exist", param="model", code="model_not_found")
    return {"id": svc.model, "object": "model", "created": 0, "owned_by": "tetriopt", "profile": svc.profile.name}


@router.get("/v1/stats")
async def stats(svc: Svc) -> dict[str, Any]:
    cfg = svc.cfg
    return {"model": svc.model, "profile": svc.profile.name, "gpus": cfg.gpus,
            "islands": [list(i) for i in svc.cluster.islands], "degrees": list(svc.degrees), "policy": cfg.policy,
            "executor": cfg.executor, "round_ms": svc.timing.round_us / 1e3, "lead_ms": svc.timing.lead_us / 1e3,
            "time_limit_ms": svc.time_limit_ms, "batching": cfg.batching, "immediate_start": cfg.immediate_start,
            "draining": svc.draining,
            "backlog_gpu_s": round(svc.backlog_gpu_s(), 3), "max_backlog_gpu_s": svc.max_backlog_gpu_s,
            **svc.stats()}


@router.get("/v1/schedule")
async def schedule(svc: Svc) -> dict[str, Any]:
    return svc.schedule.snapshot(svc)


@probes.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """A static page (no data in it, so no API key: a browser cannot send one on navigation); its
    script sends the key from the URL fragment (/dashboard#key=KEY) with each poll of /v1/schedule."""
    page = resources.files("tetriopt.server").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page)


@probes.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probes.get("/readyz")
async def readyz(svc: Svc) -> JSONResponse:
    if svc.ready:
        return JSONResponse({"status": "ready"})
    why = "draining" if svc.draining else "not started" if not svc.started else "round loop stopped"
    return JSONResponse({"status": why}, status_code=503)


@probes.get("/metrics")
async def metrics(svc: Svc) -> Response:
    svc.refresh_metrics()
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
