"""The health of each component this process depends on, and the overall status: `down` when the
database cannot serve (what `/readyz` answers 503 for), `degraded` when anything else is unwell."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.breakers import BREAKER_VALUE
from inferline.clock import utcnow
from inferline.monitor.deps import MonitorDeps
from inferline.monitor.samples import FLEET, RAW, labels_of
from inferline.monitor.system import disk_samples
from inferline.schema import metric_samples
from inferline.threads import to_thread

OK, DEGRADED, DOWN, UNKNOWN = "ok", "degraded", "down", "unknown"
REDIS_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Component:
    name: str
    status: str
    detail: str | None = None
    retry_after_s: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Health:
    status: str
    components: list[Component]


async def check_database(engine: AsyncEngine) -> Component:
    """Down when the database does not answer or its schema is not at the newest migration."""
    try:
        async with db.read(engine) as conn:
            await conn.execute(sa.text("SELECT 1"))
            current = await db.current_revision(conn)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        return Component("database", DOWN, f"database unreachable: {type(exc).__name__}", retry_after_s=5)
    head = db.head_revision()
    if current != head:
        detail = f"database schema at {current}, expected {head}: run `inferline db upgrade`"
        return Component("database", DOWN, detail, retry_after_s=30)
    return Component("database", OK, f"schema {current}")


async def check_redis(url: str) -> Component:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S * 2):
            await client.ping()
    except Exception as exc:  # the cache is optional: a Redis outage degrades, never fails, the server
        return Component("redis", DEGRADED, f"{type(exc).__name__}")
    finally:
        await client.aclose()
    return Component("redis", OK)


def check_models(deps: MonitorDeps) -> list[Component]:
    """The models this process loaded (one not loaded yet is nobody's concern)."""
    components = []
    for row in deps.models.describe():
        if row["state"] == "unloaded":
            continue
        status = DOWN if row["state"] == "failed" else OK
        components.append(Component(f"model:{row['name']}", status, row["error"] or row["state"]))
    return components


def check_disk(deps: MonitorDeps) -> Component:
    ratio = disk_samples(deps.data_dir)[0].value
    status = OK if ratio >= deps.disk_min_free_ratio else DEGRADED
    return Component("disk", status, f"{ratio:.1%} free")


def check_blobs(deps: MonitorDeps) -> Component:
    root = deps.blobs.root
    if root.exists() and not os.access(root, os.W_OK | os.X_OK):
        return Component("blobs", DOWN, "the blob store's folder is not writable")
    return Component("blobs", OK)


async def check_channels(deps: MonitorDeps, *, max_age_s: float) -> list[Component]:
    """Each channel's breaker as the evaluator (in whichever process holds it) last recorded it."""
    if not deps.channels:
        return []
    m = metric_samples
    query = (
        sa.select(m.c.labels, m.c.value)
        .where(
            m.c.name == "channel_breaker_state",
            m.c.resolution_s == RAW,
            m.c.tenant == FLEET,
            m.c.at >= utcnow() - timedelta(seconds=max_age_s),
        )
        .order_by(m.c.at)
    )
    async with db.read(deps.engine) as conn:
        latest = {labels_of(key)["channel"]: value for key, value in await conn.execute(query)}
    names = {value: name for name, value in BREAKER_VALUE.items()}
    components = []
    for channel in sorted(deps.channels):
        value = latest.get(channel)
        if value is None:
            components.append(Component(f"channel:{channel}", UNKNOWN, "no breaker state recorded recently"))
        else:
            components.append(Component(f"channel:{channel}", OK if value == 0 else DEGRADED, names.get(value)))
    return components


async def check(deps: MonitorDeps, *, channel_max_age_s: float) -> Health:
    components = [await check_database(deps.engine)]
    if deps.redis_url:
        components.append(await check_redis(deps.redis_url))
    components += check_models(deps)
    components.append(await to_thread(check_disk, deps))
    components.append(check_blobs(deps))
    if components[0].status == OK:
        components += await check_channels(deps, max_age_s=channel_max_age_s)
    return Health(overall(components), components)


def overall(components: list[Component]) -> str:
    if any(c.name == "database" and c.status == DOWN for c in components):
        return DOWN
    return DEGRADED if any(c.status in (DEGRADED, DOWN) for c in components) else OK
