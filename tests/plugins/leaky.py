"""A job kind that fails the way a library does: its exception's text holds a path and SQL
(`tests.plugins.leaky`)."""

from __future__ import annotations

from typing import Any

from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry

LEAKED_PATH = "/srv/inferline/data/inferline.db"
LEAKED_SQL = "SELECT webhook_secret FROM tenants WHERE name = 'default'"


async def leak(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError(f"{LEAKED_PATH}: {LEAKED_SQL}: database is locked")


def register(registry: KindRegistry) -> None:
    registry.kind("leak")(leak)
