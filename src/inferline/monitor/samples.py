"""The metrics history's SQL: raw samples in, rollups to coarser resolutions, retention, and reads.
Functions take a connection and never commit."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.schema import metric_samples

RAW = 0
MINUTE = 60
HOUR = 3600
FLEET = ""  # the `tenant` of fleet-wide and system series


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    tenant: str = FLEET


@dataclass(frozen=True)
class Row:
    """One stored point: a raw sample (count 1) or a rollup of `samples` of them."""

    labels: str
    tenant: str
    at: datetime
    value: float
    min_value: float
    max_value: float
    samples: int


def labels_key(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


def labels_of(key: str) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(key)
    return parsed


def matches(key: str, wanted: Mapping[str, str]) -> bool:
    """The series' labels include every pair of `wanted`."""
    labels = labels_of(key)
    return all(labels.get(name) == value for name, value in wanted.items())


async def insert(conn: AsyncConnection, samples: Iterable[Sample], at: datetime) -> int:
    rows = [
        {
            "name": s.name,
            "labels": labels_key(s.labels),
            "tenant": s.tenant,
            "resolution_s": RAW,
            "at": at,
            "value": s.value,
            "min_value": s.value,
            "max_value": s.value,
            "samples": 1,
        }
        for s in samples
    ]
    if rows:
        await conn.execute(metric_samples.insert(), rows)
    return len(rows)


def _bucket(at: datetime, step_s: int) -> datetime:
    return datetime.fromtimestamp(int(at.timestamp()) // step_s * step_s, UTC)


async def rollup(conn: AsyncConnection, *, source_s: int, target_s: int, until: datetime, max_span_s: int) -> int:
    """Fold `source_s` rows into `target_s` buckets: every whole bucket after the newest rollup row and
    before `until`, at most `max_span_s` of them per call (a long outage is caught up over several).
    Returns the rows written."""
    m = metric_samples
    newest = await conn.scalar(sa.select(sa.func.max(m.c.at)).where(m.c.resolution_s == target_s))
    after = sa.true() if newest is None else m.c.at >= newest + timedelta(seconds=target_s)
    # From the first source row after the last rollup: a gap with no samples (all down) is skipped.
    first = await conn.scalar(sa.select(sa.func.min(m.c.at)).where(m.c.resolution_s == source_s, after))
    if first is None:
        return 0
    start = _bucket(first, target_s)
    end = min(_bucket(until, target_s), start + timedelta(seconds=max_span_s))
    if end <= start:
        return 0
    query = sa.select(m).where(m.c.resolution_s == source_s, m.c.at >= start, m.c.at < end)
    groups: dict[tuple[str, str, str, datetime], list[Any]] = defaultdict(list)
    for row in (await conn.execute(query)).mappings():
        groups[(row["name"], row["labels"], row["tenant"], _bucket(row["at"], target_s))].append(row)
    rows = [_folded(key, members, target_s) for key, members in groups.items()]
    if rows:
        await conn.execute(m.insert(), rows)
    return len(rows)


def _folded(key: tuple[str, str, str, datetime], members: list[Any], target_s: int) -> dict[str, Any]:
    name, labels, tenant, at = key
    count = sum(row["samples"] for row in members)
    return {
        "name": name,
        "labels": labels,
        "tenant": tenant,
        "resolution_s": target_s,
        "at": at,
        "value": sum(row["value"] * row["samples"] for row in members) / count,
        "min_value": min(row["min_value"] for row in members),
        "max_value": max(row["max_value"] for row in members),
        "samples": count,
    }


async def prune(conn: AsyncConnection, retention_s: Mapping[int, float], now: datetime) -> int:
    """Drop the rows of each resolution older than its retention."""
    m = metric_samples
    removed = 0
    for resolution, keep_s in retention_s.items():
        cutoff = now - timedelta(seconds=keep_s)
        result = await conn.execute(m.delete().where(m.c.resolution_s == resolution, m.c.at < cutoff))
        removed += result.rowcount or 0
    return removed


def _like_pair(name: str, value: str) -> str:
    pair = labels_key({name: value})[1:-1]  # `"name":"value"` as it appears in a key
    return pair.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def read(
    conn: AsyncConnection,
    *,
    name: str,
    tenant: str,
    resolution_s: int,
    since: datetime,
    labels: Mapping[str, str],
    max_rows: int,
) -> dict[str, list[Row]]:
    """Rows of one metric since `since`, oldest first, by series key; series whose labels include
    `labels`. At most `max_rows` rows are read (the newest are dropped past it)."""
    m = metric_samples
    query = sa.select(m).where(
        m.c.name == name, m.c.resolution_s == resolution_s, m.c.tenant == tenant, m.c.at >= since
    )
    for label, value in labels.items():  # narrows in SQL; `matches` below is the exact test
        query = query.where(m.c.labels.like(f"%{_like_pair(label, value)}%", escape="\\"))
    series: dict[str, list[Row]] = defaultdict(list)
    for row in (await conn.execute(query.order_by(m.c.at).limit(max_rows))).mappings():
        if matches(row["labels"], labels):
            series[row["labels"]].append(
                Row(
                    row["labels"],
                    row["tenant"],
                    row["at"],
                    row["value"],
                    row["min_value"],
                    row["max_value"],
                    row["samples"],
                )
            )
    return dict(series)
