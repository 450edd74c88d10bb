"""``/healthz``, ``/readyz`` and ``/metrics`` (no token: probes and Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from depthflow.api.deps import Deps
from depthflow.api.models import Health

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="alive")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(deps: Deps) -> Response:
    """Ready: PostgreSQL answers, the topic feed runs and has read the compacted status and
    control topics up to where they were at start."""
    ready = deps.feed.running and deps.feed.caught_up
    if ready:
        try:
            async with deps.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except Exception:
            ready = False
    deps.metrics.ready.set(1 if ready else 0)
    body = Health(status="ready" if ready else "not ready").model_dump()
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(deps: Deps) -> Response:
    """Prometheus metrics of this gateway (its own registry)."""
    return Response(deps.metrics.render(), media_type=CONTENT_TYPE_LATEST)
