"""The monitor: metrics history, alert rules and alerts, and the health of each component. System
metrics, rules, alerts and health are an admin's (`admin_tenants`); a tenant reads its own job metrics."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from inferline.api.deps import AdminDep, ServicesDep, TenantDep
from inferline.api.openapi import problems
from inferline.clock import utcnow
from inferline.monitor import health, history, rules, series
from inferline.monitor.rules import RuleIn

router = APIRouter(prefix="/monitor", tags=["monitor"])


class SeriesOut(BaseModel):
    labels: dict[str, str]
    points: list[tuple[float, float]] = Field(description="[unix time of the step's start, mean value]")


class SeriesPageOut(BaseModel):
    name: str
    step_s: int
    resolution_s: int = Field(description="what was read: 0 raw samples, 60 or 3600 rollups")
    series: list[SeriesOut]


class RuleOut(RuleIn):
    id: str
    builtin: bool
    created_at: datetime
    updated_at: datetime


class RuleList(BaseModel):
    items: list[RuleOut]


class AlertOut(BaseModel):
    id: str
    rule_id: str
    rule_name: str
    labels: dict[str, str]
    state: Literal["pending", "firing", "resolved"]
    severity: str
    value: float | None
    started_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    notified_at: datetime | None
    updated_at: datetime


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class ComponentOut(BaseModel):
    name: str = Field(description="database, redis, model:<name>, disk, blobs, channel:<name>")
    status: Literal["ok", "degraded", "down", "unknown"]
    detail: str | None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    components: list[ComponentOut]


@router.get("/metrics", response_model=SeriesPageOut, responses=problems(403, 429))
async def metrics(
    services: ServicesDep,
    tenant: TenantDep,
    name: Annotated[str, Query(max_length=100, description="e.g. queue_depth, cpu_percent (docs/monitor.md)")],
    labels: Annotated[str, Query(max_length=1000, description="kind=ocr,status=queued")] = "",
    since: Annotated[str, Query(max_length=40, description="15m, 6h, 7d or an ISO 8601 time")] = "1h",
    step: Annotated[int | None, Query(ge=1, le=86_400, description="seconds per point [default: ~300 points]")] = None,
) -> dict[str, Any]:
    """Series of one metric: a tenant's own job metrics, or (an admin) the fleet's and the system's."""
    monitor = services.monitor
    wanted, start = series.parse_labels(labels), series.parse_since(since, utcnow())
    with monitor.metric_reads.hold(tenant):
        page = await series.read_series(
            monitor.engine,
            name=name,
            labels=wanted,
            since=start,
            step_s=step,
            tenant=tenant,
            admin=monitor.is_admin(tenant),
            retention_s=monitor.retention_s,
        )
    return asdict(page)


@router.post("/rules", status_code=201, response_model=RuleOut, responses=problems(403, 409))
async def create_rule(body: RuleIn, services: ServicesDep, _admin: AdminDep) -> dict[str, Any]:
    """Create an alert rule (names are unique)."""
    return asdict(await rules.create_rule(services.engine, body, channels=services.monitor.channels))


@router.get("/rules", response_model=RuleList, responses=problems(403))
async def list_rules(services: ServicesDep, _admin: AdminDep) -> dict[str, Any]:
    return {"items": [asdict(rule) for rule in await rules.list_rules(services.engine)]}


@router.get("/rules/{rule_id}", response_model=RuleOut, responses=problems(403, 404))
async def get_rule(rule_id: str, services: ServicesDep, _admin: AdminDep) -> dict[str, Any]:
    return asdict(await rules.get_rule(services.engine, rule_id))


@router.put("/rules/{rule_id}", response_model=RuleOut, responses=problems(403, 404, 409))
async def replace_rule(rule_id: str, body: RuleIn, services: ServicesDep, _admin: AdminDep) -> dict[str, Any]:
    """Replace every field of a rule (a built-in one too: `enabled: false` turns it off)."""
    return asdict(await rules.replace_rule(services.engine, rule_id, body, channels=services.monitor.channels))


@router.delete("/rules/{rule_id}", status_code=204, responses=problems(403, 404, 409))
async def delete_rule(rule_id: str, services: ServicesDep, _admin: AdminDep) -> Response:
    """Delete a rule; its open alerts end as resolved. A built-in rule is 409: disable it instead."""
    await rules.delete_rule(services.engine, rule_id)
    return Response(status_code=204)


@router.get("/alerts", response_model=AlertPage, responses=problems(403))
async def list_alerts(
    services: ServicesDep,
    _admin: AdminDep,
    state: Literal["pending", "firing", "resolved"] | None = None,
    rule_id: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Alert episodes, newest first: open ones (pending, firing) and the history (resolved)."""
    items, next_cursor = await history.list_alerts(
        services.engine, state=state, rule_id=rule_id, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/health", response_model=HealthOut, responses=problems(403))
async def monitor_health(services: ServicesDep, _admin: AdminDep) -> dict[str, Any]:
    """Each component and the overall status (`down`: the database cannot serve, as `/readyz` says)."""
    monitor = services.monitor
    result = await health.check(monitor, channel_max_age_s=monitor.evaluate_s * 3)
    return {"status": result.status, "components": [asdict(c) for c in result.components]}
