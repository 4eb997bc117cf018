"""Reading alert history: every episode of every rule, newest first."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, paging
from inferline.errors import InvalidInput
from inferline.monitor.samples import labels_of
from inferline.schema import alerts

STATES = ("pending", "firing", "resolved")


def _alert(row: Any) -> dict[str, Any]:
    values = dict(row)
    values["labels"] = labels_of(values.pop("series"))
    return values


def alert_view(alert: Mapping[str, Any]) -> dict[str, Any]:
    """An alert as JSON values (the data of its `alert.firing`/`alert.resolved` event)."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in _alert(alert).items()}


async def list_alerts(
    engine: AsyncEngine, *, state: str | None, rule_id: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    query = sa.select(alerts)
    if state is not None:
        if state not in STATES:
            raise InvalidInput(f"state: one of {', '.join(STATES)}", field="state")
        query = query.where(alerts.c.state == state)
    if rule_id is not None:
        query = query.where(alerts.c.rule_id == rule_id)
    async with db.read(engine) as conn:
        return await paging.newest_first(
            conn, query, alerts.c.id, limit=limit, cursor=cursor, to_item=_alert, id_of=lambda a: str(a["id"])
        )
