"""Probes and metrics, unauthenticated (for load balancers and Prometheus); `metrics_require_key` puts
`/metrics` behind a key (any tenant's: the numbers are the whole server's, not a tenant's)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from inferline import db
from inferline.api.deps import ServicesDep, get_tenant, services_of
from inferline.api.openapi import problems
from inferline.api.problems import problem
from inferline.jobs.service import queue_depth
from inferline.monitor.health import DOWN, check_database

router = APIRouter(tags=["operations"])


_METRICS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=problems(503))
async def readyz(services: ServicesDep) -> Any:
    """The database answers and its schema is at the newest migration (the monitor's `database`
    component, the one whose failure makes the whole `down`; `GET /api/v1/monitor/health` has the rest)."""
    database = await check_database(services.engine)
    if database.status == DOWN:
        return problem(503, database.detail or "database down", {"Retry-After": str(database.retry_after_s or 5)})
    return {"status": "ready", "schema": db.head_revision()}


async def metrics_access(request: Request) -> None:
    if services_of(request).settings.metrics_require_key:
        await get_tenant(request)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(metrics_access)],
    responses=_METRICS | problems(401, 503),  # 401 when `metrics_require_key` is set
)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics of this process (text format)."""
    services.metrics.set_queue_depth(await queue_depth(services.engine))
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")
