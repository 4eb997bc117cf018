"""Reading the metrics history: which resolution answers a query, and its rows as points every `step`."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Forbidden, InvalidInput
from inferline.monitor.catalog import Scope, metric_info
from inferline.monitor.samples import FLEET, HOUR, MINUTE, RAW, Row, labels_of, read

MAX_POINTS = 2000  # per series
MAX_ROWS = 200_000  # read per query
MAX_LABELS = 8
MAX_LABEL_CHARS = 100
MAX_SINCE_S = 400 * 86_400
_DURATION = re.compile(r"([0-9]{1,7})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_LABEL_NAME = re.compile(r"[a-z_]{1,50}")


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix time of the bucket's start, mean value)


@dataclass(frozen=True)
class SeriesPage:
    name: str
    step_s: int
    resolution_s: int
    series: list[Series]


def parse_since(text: str, now: datetime) -> datetime:
    """`90s`, `15m`, `6h`, `7d` ago, or an ISO 8601 time with a zone; at most 400 days back."""
    if match := _DURATION.fullmatch(text):
        since = now - timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
    else:
        try:
            since = datetime.fromisoformat(text[:40])
        except ValueError as exc:
            raise InvalidInput("since: a duration (15m, 6h, 7d) or an ISO 8601 time", field="since") from exc
        if since.tzinfo is None:
            raise InvalidInput("since: the time needs a zone (Z or +hh:mm)", field="since")
    if since >= now or (now - since).total_seconds() > MAX_SINCE_S:
        raise InvalidInput("since: must be in the past, at most 400 days ago", field="since")
    return since


def parse_labels(text: str) -> dict[str, str]:
    """`kind=ocr,status=queued`: the series' labels must include these."""
    if not text:
        return {}
    pairs = text.split(",")
    if len(pairs) > MAX_LABELS:
        raise InvalidInput(f"labels: at most {MAX_LABELS} pairs", field="labels")
    labels = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _LABEL_NAME.fullmatch(name) or not 0 < len(value) <= MAX_LABEL_CHARS:
            raise InvalidInput("labels: name=value pairs, names of a-z and _", field="labels")
        labels[name] = value
    return labels


def resolution_for(step_s: int, age_s: float, retention_s: Mapping[int, float]) -> int:
    """The finest stored resolution no coarser than the step that still holds data as old as `age_s`."""
    for resolution in (RAW, MINUTE, HOUR):
        if resolution <= step_s and age_s <= retention_s.get(resolution, 0):
            return resolution
    return HOUR


async def read_series(
    engine: AsyncEngine,
    *,
    name: str,
    labels: Mapping[str, str],
    since: datetime,
    step_s: int | None,
    tenant: str,
    admin: bool,
    retention_s: Mapping[int, float],
) -> SeriesPage:
    """A tenant reads its own job metrics; an admin reads system metrics and the fleet's job metrics."""
    info = metric_info(name, field="name")
    if info.scope is Scope.SYSTEM and not admin:
        raise Forbidden(f"metric {name} is the whole system's: an admin key reads it")
    now = utcnow()
    span_s = (now - since).total_seconds()
    step_s = step_s or max(1, math.ceil(span_s / 300))
    if span_s / step_s > MAX_POINTS:
        raise InvalidInput(
            f"step: at most {MAX_POINTS} points per series (a larger step or a later since)", field="step"
        )
    resolution = resolution_for(step_s, span_s, retention_s)
    async with db.read(engine, slow=True) as conn:
        rows = await read(
            conn,
            name=name,
            tenant=FLEET if admin else tenant,
            resolution_s=resolution,
            since=since,
            labels=labels,
            max_rows=MAX_ROWS,
        )
    series = [Series(labels_of(key), _points(members, step_s)) for key, members in sorted(rows.items())]
    return SeriesPage(name, step_s, resolution, series)


def _points(rows: list[Row], step_s: int) -> list[tuple[float, float]]:
    buckets: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        bucket = buckets[int(row.at.timestamp()) // step_s * step_s]
        bucket[0] += row.value * row.samples
        bucket[1] += row.samples
    return [(float(at), total / count) for at, (total, count) in sorted(buckets.items())]
