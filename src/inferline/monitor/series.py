"""Reading the metrics history: which resolution answers a query, and its rows as points every `step`."""

from __future__ import annotations

import contextlib
import math
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Forbidden, InvalidInput, Overloaded
from inferline.monitor.catalog import Scope, metric_info
from inferline.monitor.samples import FLEET, HOUR, MINUTE, RAW, Bucket, labels_of, matcher, newest, read_buckets
from inferline.threads import to_thread

MAX_POINTS = 2000  # per series
MAX_ROWS = 20_000  # (series, step) buckets read per query, summed by the database
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
    """The coarsest stored resolution no coarser than the step that still holds data as old as
    `age_s` (fewest rows to read); when none is that fine, the finest that holds it."""
    holding = [r for r in (HOUR, MINUTE, RAW) if age_s <= retention_s.get(r, 0)]
    for resolution in holding:
        if resolution <= step_s:
            return resolution
    return holding[-1] if holding else HOUR


_FINER = {HOUR: MINUTE, MINUTE: RAW}


class MetricReads:
    """At most `per_tenant` metric queries of one tenant at a time: each can make the database scan
    many rows, and one tenant's dashboards should not take every connection (429 past it)."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._running: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        if self._running.get(tenant, 0) >= self.per_tenant:
            raise Overloaded(
                f"at most {self.per_tenant} metric queries of a tenant at a time: retry shortly", retry_after_s=1
            )
        self._running[tenant] = self._running.get(tenant, 0) + 1
        try:
            yield
        finally:
            self._running[tenant] -= 1
            if not self._running[tenant]:
                del self._running[tenant]


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
    query = {"name": name, "tenant": FLEET if admin else tenant, "labels": labels, "step_s": step_s}
    async with db.read(engine, slow=True) as conn:
        buckets = await _read_buckets(conn, resolution, since, query)
    series = await to_thread(_series, buckets, labels)
    return SeriesPage(name, step_s, resolution, series)


async def _read_buckets(conn: AsyncConnection, resolution: int, since: datetime, query: dict[str, Any]) -> list[Bucket]:
    """Buckets of `resolution` up to its newest rollup, then of the next finer resolution: a rollup
    covers only whole minutes (hours), and the newest of them would be missing otherwise."""
    covered = None
    if resolution in _FINER:
        newest_at = await newest(conn, name=query["name"], tenant=query["tenant"], resolution_s=resolution)
        covered = since if newest_at is None else max(since, newest_at + timedelta(seconds=resolution))
    buckets = await read_buckets(conn, resolution_s=resolution, since=since, max_rows=MAX_ROWS, **query)
    if covered is not None and len(buckets) < MAX_ROWS:
        buckets += await read_buckets(
            conn, resolution_s=_FINER[resolution], since=covered, max_rows=MAX_ROWS - len(buckets), **query
        )
    return buckets


def _series(buckets: list[Bucket], labels: Mapping[str, str]) -> list[Series]:
    """Off the event loop: one pass over the buckets (a step's bucket may come from two resolutions)."""
    wanted = matcher(labels)
    sums: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for bucket in buckets:
        if wanted(bucket.labels):
            pair = sums[bucket.labels].setdefault(bucket.at, [0.0, 0.0])
            pair[0] += bucket.total
            pair[1] += bucket.count
    return [
        Series(labels_of(key), [(float(at), total / count) for at, (total, count) in sorted(points.items())])
        for key, points in sorted(sums.items())
    ]
