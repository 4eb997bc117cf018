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


def epoch_bucket(conn: AsyncConnection, step_s: int) -> sa.ColumnElement[int]:
    """The unix time (whole seconds) of the start of each row's `step_s` bucket, computed in SQL."""
    at = metric_samples.c.at
    if conn.dialect.name == "postgresql":
        seconds = sa.func.floor(sa.extract("epoch", at) / step_s) * step_s
        return sa.cast(seconds, sa.BigInteger)
    # SQLite stores naive UTC text; strftime('%s') reads it as UTC; integer division floors (no
    # negative times here).
    return sa.cast(sa.func.strftime("%s", at), sa.Integer).op("/")(step_s).op("*")(step_s)


async def rollup(conn: AsyncConnection, *, source_s: int, target_s: int, until: datetime, max_span_s: int) -> int:
    """Fold `source_s` rows into `target_s` buckets: every whole bucket after the newest rollup row and
    before `until`, at most `max_span_s` of them per call (a long outage is caught up over several).
    The database groups the rows: only one row per series and bucket comes back. Returns the rows
    written."""
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
    bucket = epoch_bucket(conn, target_s).label("bucket")
    query = (
        sa.select(
            m.c.name,
            m.c.labels,
            m.c.tenant,
            bucket,
            sa.func.sum(m.c.value * m.c.samples).label("total"),
            sa.func.sum(m.c.samples).label("n"),
            sa.func.min(m.c.min_value).label("low"),
            sa.func.max(m.c.max_value).label("high"),
        )
        .where(m.c.resolution_s == source_s, m.c.at >= start, m.c.at < end)
        .group_by(m.c.name, m.c.labels, m.c.tenant, bucket)
    )
    rows = [
        {
            "name": row.name,
            "labels": row.labels,
            "tenant": row.tenant,
            "resolution_s": target_s,
            "at": datetime.fromtimestamp(int(row.bucket), UTC),
            "value": float(row.total) / int(row.n),
            "min_value": float(row.low),
            "max_value": float(row.high),
            "samples": int(row.n),
        }
        for row in await conn.execute(query)
    ]
    if rows:
        await conn.execute(m.insert(), rows)
    return len(rows)


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
    query = _where_series(sa.select(m), name=name, tenant=tenant, resolution_s=resolution_s, labels=labels)
    query = query.where(m.c.at >= since).order_by(m.c.at).limit(max_rows)
    series: dict[str, list[Row]] = defaultdict(list)
    wanted = _Matcher(labels)
    for row in (await conn.execute(query)).mappings():
        if wanted(row["labels"]):
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


@dataclass(frozen=True)
class Bucket:
    """The sum and count of one series' samples in one bucket of a read's step."""

    labels: str
    at: int  # unix time of the bucket's start
    total: float
    count: int


async def read_buckets(
    conn: AsyncConnection,
    *,
    name: str,
    tenant: str,
    resolution_s: int,
    since: datetime,
    labels: Mapping[str, str],
    step_s: int,
    max_rows: int,
) -> list[Bucket]:
    """One metric's rows of one resolution since `since`, summed per series and `step_s` bucket by the
    database, by series then time; at most `max_rows` buckets. Labels are narrowed in SQL only: the
    caller keeps the series that `matches`."""
    m = metric_samples
    bucket = epoch_bucket(conn, step_s).label("bucket")
    query = sa.select(
        m.c.labels, bucket, sa.func.sum(m.c.value * m.c.samples).label("total"), sa.func.sum(m.c.samples).label("n")
    )
    query = _where_series(query, name=name, tenant=tenant, resolution_s=resolution_s, labels=labels)
    query = query.where(m.c.at >= since).group_by(m.c.labels, bucket).order_by(m.c.labels, bucket).limit(max_rows)
    result = await conn.execute(query)
    return [Bucket(row.labels, int(row.bucket), float(row.total), int(row.n)) for row in result]


async def newest(conn: AsyncConnection, *, name: str, tenant: str, resolution_s: int) -> datetime | None:
    m = metric_samples
    query = sa.select(sa.func.max(m.c.at)).where(
        m.c.name == name, m.c.resolution_s == resolution_s, m.c.tenant == tenant
    )
    at: datetime | None = await conn.scalar(query)
    return at


def _where_series(
    query: sa.Select[Any], *, name: str, tenant: str, resolution_s: int, labels: Mapping[str, str]
) -> sa.Select[Any]:
    m = metric_samples
    query = query.where(m.c.name == name, m.c.resolution_s == resolution_s, m.c.tenant == tenant)
    for label, value in labels.items():  # narrows in SQL; `matches` is the exact test
        query = query.where(m.c.labels.like(f"%{_like_pair(label, value)}%", escape="\\"))
    return query


class _Matcher:
    """`matches` with each distinct series key parsed once, not once per row."""

    def __init__(self, wanted: Mapping[str, str]) -> None:
        self.wanted = wanted
        self.seen: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        found = self.seen.get(key)
        if found is None:
            found = self.seen[key] = matches(key, self.wanted)
        return found


def matcher(wanted: Mapping[str, str]) -> _Matcher:
    return _Matcher(wanted)
