"""Alert rules: their fields and bounds, the built-in defaults, and the use cases that manage them.
Rules are the whole system's (an admin's): they read the fleet's series."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Conflict, InvalidInput, NotFound
from inferline.ids import new_id
from inferline.monitor.catalog import metric_info
from inferline.schema import alert_rules, alerts

_LABEL_NAME = re.compile(r"[a-z_]{1,50}")


class Aggregation(StrEnum):
    """How a series' samples in the window become one value."""

    LAST = "last"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    DELTA = "delta"  # last minus first: growth over the window


class Comparator(StrEnum):
    GT = "gt"
    GE = "ge"
    LT = "lt"
    LE = "le"
    EQ = "eq"
    NE = "ne"

    def holds(self, value: float, threshold: float) -> bool:
        return {
            "gt": value > threshold,
            "ge": value >= threshold,
            "lt": value < threshold,
            "le": value <= threshold,
            "eq": value == threshold,
            "ne": value != threshold,
        }[self.value]


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class RuleIn(BaseModel):
    """An alert rule: each series of `metric` whose labels include `labels` is aggregated over the last
    `window_s`; when `<value> <comparator> <threshold>` has held for `for_s` the alert fires."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    metric: str = Field(max_length=100, description="a name of `GET /monitor/metrics`")
    labels: dict[str, str] = Field(default_factory=dict, max_length=8)
    aggregation: Aggregation = Aggregation.LAST
    comparator: Comparator
    threshold: float
    window_s: int = Field(default=60, ge=10, le=86_400)
    for_s: int = Field(default=0, ge=0, le=86_400, description="how long the condition holds before firing")
    severity: Severity = Severity.WARNING
    channels: list[str] = Field(default_factory=list, max_length=10)
    repeat_s: int = Field(default=3600, ge=0, le=7 * 86_400, description="re-notify a firing alert (0: never)")
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _one_line(cls, name: str) -> str:
        # Cc, Zl and Zp end a line somewhere (U+0085 and U+2028 in an email's Subject, a log, a chat).
        if any(unicodedata.category(char) in {"Cc", "Zl", "Zp"} for char in name):
            raise ValueError("rule names are one line: no control, line or paragraph separator characters")
        return name

    @field_validator("labels")
    @classmethod
    def _labels_bounded(cls, labels: dict[str, str]) -> dict[str, str]:
        for name, value in labels.items():
            if not _LABEL_NAME.fullmatch(name) or not 0 < len(value) <= 100:
                raise ValueError("label names are a-z and _ (max 50), values 1-100 characters")
        return labels

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, names: list[str]) -> list[str]:
        if any(not 0 < len(name) <= 100 for name in names):
            raise ValueError("channel names are 1-100 characters")
        return names


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    metric: str
    labels: dict[str, str]
    aggregation: Aggregation
    comparator: Comparator
    threshold: float
    window_s: int
    for_s: int
    severity: Severity
    channels: list[str]
    repeat_s: int
    enabled: bool
    builtin: bool
    created_at: datetime
    updated_at: datetime


def _rule(row: Any) -> Rule:
    values = dict(row)
    values["aggregation"] = Aggregation(values["aggregation"])
    values["comparator"] = Comparator(values["comparator"])
    values["severity"] = Severity(values["severity"])
    return Rule(**values)


def _checked(body: RuleIn, channels: Mapping[str, object]) -> dict[str, Any]:
    metric_info(body.metric, field="metric")
    unknown = [name for name in body.channels if name not in channels]
    if unknown:
        known = ", ".join(sorted(channels)) or "none configured"
        raise InvalidInput(f"channels: unknown {unknown[0][:100]!r} (known: {known})", field="channels")
    return body.model_dump(mode="json")


async def _name_taken(conn: AsyncConnection, name: str, rule_id: str) -> None:
    query = sa.select(alert_rules.c.id).where(alert_rules.c.name == name, alert_rules.c.id != rule_id)
    if await conn.scalar(query) is not None:
        raise Conflict(f"a rule named {name!r} exists")


async def create_rule(engine: AsyncEngine, body: RuleIn, *, channels: Mapping[str, object]) -> Rule:
    now = utcnow()
    values = _checked(body, channels) | {"id": new_id(), "builtin": False, "created_at": now, "updated_at": now}
    async with db.write(engine) as conn:
        await _name_taken(conn, body.name, values["id"])
        await conn.execute(alert_rules.insert().values(**values))
    return _rule(values)


async def replace_rule(engine: AsyncEngine, rule_id: str, body: RuleIn, *, channels: Mapping[str, object]) -> Rule:
    values = _checked(body, channels) | {"updated_at": utcnow()}
    async with db.write(engine) as conn:
        await _name_taken(conn, body.name, rule_id)
        result = await conn.execute(alert_rules.update().where(alert_rules.c.id == rule_id).values(**values))
        if not result.rowcount:
            raise NotFound(f"rule {rule_id} not found")
        row = (await conn.execute(sa.select(alert_rules).where(alert_rules.c.id == rule_id))).mappings().one()
    return _rule(row)


async def get_rule(engine: AsyncEngine, rule_id: str) -> Rule:
    async with db.read(engine) as conn:
        row = (await conn.execute(sa.select(alert_rules).where(alert_rules.c.id == rule_id))).mappings().first()
    if row is None:
        raise NotFound(f"rule {rule_id} not found")
    return _rule(row)


async def list_rules(engine: AsyncEngine, *, enabled_only: bool = False) -> list[Rule]:
    query = sa.select(alert_rules).order_by(alert_rules.c.name)
    if enabled_only:
        query = query.where(alert_rules.c.enabled.is_(True))
    async with db.read(engine) as conn:
        return [_rule(row) for row in (await conn.execute(query)).mappings()]


async def delete_rule(engine: AsyncEngine, rule_id: str) -> None:
    """Delete a rule; its open alerts end as resolved (without a notification). A built-in rule is
    disabled instead (`enabled: false`): it would come back at the next start."""
    async with db.write(engine) as conn:
        builtin = await conn.scalar(sa.select(alert_rules.c.builtin).where(alert_rules.c.id == rule_id))
        if builtin is None:
            raise NotFound(f"rule {rule_id} not found")
        if builtin:
            raise Conflict("a built-in rule cannot be deleted: disable it (enabled: false)")
        await conn.execute(alert_rules.delete().where(alert_rules.c.id == rule_id))
        now = utcnow()
        await conn.execute(
            alerts.update()
            .where(alerts.c.rule_id == rule_id, alerts.c.state.in_(("pending", "firing")))
            .values(state="resolved", resolved_at=now, updated_at=now)
        )


DEFAULT_RULES: dict[str, RuleIn] = {
    "builtin-queue-growing": RuleIn(
        name="queue growing", metric="queue_depth", labels={"status": "queued"}, aggregation=Aggregation.DELTA,
        comparator=Comparator.GT, threshold=0, window_s=300, for_s=600, severity=Severity.WARNING,
    ),
    "builtin-failure-ratio": RuleIn(
        name="job failure ratio over 10%", metric="job_failure_ratio", aggregation=Aggregation.AVG,
        comparator=Comparator.GT, threshold=0.1, window_s=300, for_s=300, severity=Severity.WARNING,
    ),
    "builtin-worker-heartbeat": RuleIn(
        name="no worker heartbeat", metric="worker_heartbeat_age_s", aggregation=Aggregation.LAST,
        comparator=Comparator.GT, threshold=120, window_s=300, for_s=0, severity=Severity.CRITICAL,
    ),
    "builtin-disk-free": RuleIn(
        name="disk under 10% free", metric="disk_free_ratio", aggregation=Aggregation.LAST,
        comparator=Comparator.LT, threshold=0.1, window_s=120, for_s=0, severity=Severity.CRITICAL,
    ),
    "builtin-model-down": RuleIn(
        name="model down", metric="model_up", aggregation=Aggregation.MIN,
        comparator=Comparator.LT, threshold=1, window_s=120, for_s=60, severity=Severity.CRITICAL,
    ),
}  # fmt: skip


async def ensure_default_rules(engine: AsyncEngine, channels: list[str]) -> int:
    """Create the built-in rules that are absent (an admin's edits to present ones are kept)."""
    now = utcnow()
    try:
        return await _insert_defaults(engine, channels, now)
    except sa.exc.IntegrityError:  # another process of the fleet made them at the same moment
        return 0


async def _insert_defaults(engine: AsyncEngine, channels: list[str], now: datetime) -> int:
    async with db.write(engine) as conn:
        present = set(
            (await conn.execute(sa.select(alert_rules.c.id).where(alert_rules.c.builtin.is_(True)))).scalars()
        )
        taken = set((await conn.execute(sa.select(alert_rules.c.name))).scalars())
        rows = [
            rule.model_dump(mode="json")
            | {"id": rule_id, "channels": channels, "builtin": True, "created_at": now, "updated_at": now}
            for rule_id, rule in DEFAULT_RULES.items()
            if rule_id not in present and rule.name not in taken
        ]
        if rows:
            await conn.execute(alert_rules.insert(), rows)
    return len(rows)
