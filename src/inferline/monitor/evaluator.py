"""The alert evaluator: one process of the fleet at a time (lease `monitor.evaluator`) evaluates every
enabled rule on each series it matches, moves that series' alert pending -> firing -> resolved, and
notifies firing (again every `repeat_s`) and resolved alerts after the transaction that recorded them.

A series with no samples in the window counts as not matching: its alert resolves."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db, leases
from inferline.breakers import BREAKER_VALUE
from inferline.clock import utcnow
from inferline.events import outbox
from inferline.ids import new_id
from inferline.metrics import Metrics
from inferline.monitor import samples
from inferline.monitor.history import alert_view
from inferline.monitor.notifier import Notifier
from inferline.monitor.rules import Aggregation, Rule, list_rules
from inferline.monitor.samples import FLEET, MINUTE, RAW, Row, Sample, labels_of
from inferline.monitor.senders import Notification
from inferline.schema import alerts

LEASE = "monitor.evaluator"
MAX_ROWS = 100_000  # read per rule


def aggregate(rows: list[Row], aggregation: Aggregation) -> float:
    values = [row.value for row in rows]
    if aggregation is Aggregation.LAST:
        return values[-1]
    if aggregation is Aggregation.AVG:
        return sum(values) / len(values)
    if aggregation is Aggregation.MIN:
        return min(row.min_value for row in rows)
    if aggregation is Aggregation.MAX:
        return max(row.max_value for row in rows)
    return values[-1] - values[0]


@dataclass(frozen=True)
class Transition:
    """An alert that changed in a way someone is told of."""

    event: str  # firing | resolved
    alert: dict[str, Any]
    rule: Rule


class Evaluator:
    def __init__(
        self, engine: AsyncEngine, notifier: Notifier, metrics: Metrics, retention_s: Mapping[int, float]
    ) -> None:
        self.engine = engine
        self.notifier = notifier
        self.metrics = metrics
        self.retention_s = retention_s

    async def run(self, stop: asyncio.Event, *, every_s: float, owner: str | None = None) -> None:
        await leases.run_elected(self.engine, LEASE, self.step, every_s=every_s, stop=stop, owner=owner)

    async def step(self, lease: leases.Lease, now: datetime | None = None) -> list[Transition]:
        """Evaluate every rule at `now` (default: the clock's), then notify what changed; only while
        `lease` is this process's (LeaseLost otherwise: nothing is recorded or sent)."""
        now = now or utcnow()
        transitions = await self.evaluate(lease, now)
        for transition in transitions:
            self._notify(transition, now)
        await self._record_breakers(lease, now)
        return transitions

    async def evaluate(self, lease: leases.Lease, now: datetime) -> list[Transition]:
        rules = await list_rules(self.engine, enabled_only=True)
        values = {rule.id: await self._values(rule, now) for rule in rules}
        transitions: list[Transition] = []
        async with db.write(self.engine) as conn:
            await leases.confirm(conn, lease)
            await _resolve_orphans(conn, {rule.id for rule in rules}, now)
            for rule in rules:
                transitions += await _advance(conn, rule, values[rule.id], now)
            await _record_events(conn, transitions, now)
            firing = await conn.scalar(sa.select(sa.func.count()).where(alerts.c.state == "firing"))
        self.metrics.alerts_firing.set(firing or 0)
        return transitions

    async def _values(self, rule: Rule, now: datetime) -> dict[str, float]:
        """The rule's aggregated value per series key, for the series that hold the condition."""
        resolution = RAW if rule.window_s <= self.retention_s.get(RAW, 0) else MINUTE
        async with db.read(self.engine) as conn:
            series = await samples.read(
                conn,
                name=rule.metric,
                tenant=FLEET,
                resolution_s=resolution,
                since=now - timedelta(seconds=rule.window_s),
                labels=rule.labels,
                max_rows=MAX_ROWS,
            )
        values = {key: aggregate(rows, rule.aggregation) for key, rows in series.items() if rows}
        return {key: value for key, value in values.items() if rule.comparator.holds(value, rule.threshold)}

    def _notify(self, transition: Transition, now: datetime) -> None:
        alert, rule = transition.alert, transition.rule
        notification = Notification(
            id=f"{alert['id']}.{transition.event}.{int(now.timestamp())}",
            event=transition.event,
            alert_id=alert["id"],
            rule=rule.name,
            severity=rule.severity.value,
            metric=rule.metric,
            labels=labels_of(alert["series"]),
            value=alert["value"],
            comparator=rule.comparator.value,
            threshold=rule.threshold,
            at=now,
        )
        self.notifier.notify(notification, rule.channels)

    async def _record_breakers(self, lease: leases.Lease, now: datetime) -> None:
        """Breaker states as samples: the health of every process reads them, not only this one's."""
        states = await self.notifier.breaker_states()
        rows = [
            Sample("channel_breaker_state", BREAKER_VALUE[state], {"channel": name}) for name, state in states.items()
        ]
        if rows:
            async with db.write(self.engine) as conn:
                await leases.confirm(conn, lease)
                await samples.insert(conn, rows, now)


async def _record_events(conn: AsyncConnection, transitions: list[Transition], now: datetime) -> None:
    """`alert.firing` when an alert starts firing (not its repeated notifications) and `alert.resolved`,
    to the event outbox in the transaction that records them. Alerts are the fleet's: no tenant."""
    for transition in transitions:
        if transition.event == "resolved" or transition.alert["fired_at"] == now:
            alert = transition.alert
            data = alert_view(alert)
            await outbox.record(conn, f"alert.{transition.event}", subject=alert["id"], tenant="", data=data, now=now)


async def _resolve_orphans(conn: AsyncConnection, live_rule_ids: set[str], now: datetime) -> None:
    """Open alerts of rules that were disabled end as resolved, without a notification."""
    query = alerts.update().where(alerts.c.state.in_(("pending", "firing")))
    if live_rule_ids:
        query = query.where(alerts.c.rule_id.not_in(live_rule_ids))
    await conn.execute(query.values(state="resolved", resolved_at=now, updated_at=now))


async def _advance(conn: AsyncConnection, rule: Rule, holding: dict[str, float], now: datetime) -> list[Transition]:
    a = alerts
    query = sa.select(a).where(a.c.rule_id == rule.id, a.c.state.in_(("pending", "firing"))).with_for_update()
    open_alerts = {row["series"]: dict(row) for row in (await conn.execute(query)).mappings()}
    transitions = []
    for series, alert in open_alerts.items():
        if series not in holding:
            transitions += await _resolve(conn, rule, alert, now)
    for series, value in holding.items():
        alert = open_alerts.get(series) or await _open(conn, rule, series, value, now)
        transitions += await _hold(conn, rule, alert, value, now)
    return transitions


async def _open(conn: AsyncConnection, rule: Rule, series: str, value: float, now: datetime) -> dict[str, Any]:
    alert = {
        "id": new_id(),
        "rule_id": rule.id,
        "rule_name": rule.name,
        "series": series,
        "state": "pending",
        "severity": rule.severity.value,
        "value": value,
        "started_at": now,
        "fired_at": None,
        "resolved_at": None,
        "notified_at": None,
        "updated_at": now,
    }
    await conn.execute(alerts.insert().values(**alert))
    return alert


async def _hold(
    conn: AsyncConnection, rule: Rule, alert: dict[str, Any], value: float, now: datetime
) -> list[Transition]:
    """The condition holds: fire after `for_s`, re-notify a firing alert every `repeat_s`."""
    changes: dict[str, Any] = {"value": value, "updated_at": now}
    event = None
    if alert["state"] == "pending" and now - alert["started_at"] >= timedelta(seconds=rule.for_s):
        changes |= {"state": "firing", "fired_at": now, "notified_at": now}
        event = "firing"
    elif (
        alert["state"] == "firing" and rule.repeat_s and now - alert["notified_at"] >= timedelta(seconds=rule.repeat_s)
    ):
        changes |= {"notified_at": now}
        event = "firing"
    await conn.execute(alerts.update().where(alerts.c.id == alert["id"]).values(**changes))
    return [Transition(event, alert | changes, rule)] if event else []


async def _resolve(conn: AsyncConnection, rule: Rule, alert: dict[str, Any], now: datetime) -> list[Transition]:
    changes = {"state": "resolved", "resolved_at": now, "updated_at": now}
    await conn.execute(alerts.update().where(alerts.c.id == alert["id"]).values(**changes))
    # A pending alert was never announced: its end is not either.
    return [Transition("resolved", alert | changes, rule)] if alert["state"] == "firing" else []
