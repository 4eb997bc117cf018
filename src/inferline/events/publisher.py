"""The publisher: one process of the fleet at a time (lease `events.publisher`) sends the outbox's events
to the broker in outbox order and marks them sent.

Each step first (at most every `maintain_s`) bounds the outbox (past `max_rows` unsent events, the newer
ones move to the dead letters: the oldest wait in order, state changes never wait for the broker), prunes
sent rows past their retention and sets `inferline_events_outbox_rows` (unsent events); then it sends
rows until the outbox is empty or `drain_s` passed: up to `read_events` events per database round, in
broker round trips of `batch`. A broker that does not take them all (`BrokerUnavailable`, or no answer
within `timeout_s`) leaves the round's rows unsent, to be sent again whole after a backoff that doubles
up to `max_backoff_s`; an event the broker refuses, or one over `max_bytes`, moves to the dead letters
alone. Sent marks are fenced by the lease: a publisher replaced mid-round writes nothing, and its
successor sends those rows again (at-least-once; consumers dedupe by event id). It polls every `poll_s`:
see docs/events.md for why a local write does not wake it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, leases
from inferline.clock import utcnow
from inferline.errors import BrokerUnavailable
from inferline.events import envelope, store
from inferline.events.broker import Broker, Message
from inferline.metrics import Metrics

log = structlog.get_logger(__name__)

LEASE = "events.publisher"
OVERFLOW_REASON = "the outbox was over events_outbox_max_rows while the broker did not take events"


@dataclass(frozen=True)
class PublisherConfig:
    topic: str
    batch: int = 256
    poll_s: float = 0.5
    timeout_s: float = 10.0
    max_rows: int = 100_000
    max_bytes: int = 1_000_000
    sent_retention_s: float = 3600.0
    max_backoff_s: float = 30.0
    drain_s: float = 2.0
    maintain_s: float = 1.0  # the bound, the pruning and the gauge: at most this often
    # Events read from the outbox and marked sent per database round (sent in round trips of `batch`): the
    # outbox's reads and writes, a SQLite writer's lock included, are paid once per this many events.
    read_events: int = 2048


class Publisher:
    def __init__(self, engine: AsyncEngine, broker: Broker, metrics: Metrics, config: PublisherConfig) -> None:
        self.engine = engine
        self.broker = broker
        self.metrics = metrics
        self.config = config
        self.source = envelope.source_of(config.topic)
        self.backoff_s = 0.0
        self._resume_at = 0.0  # loop time before which the broker is not tried again
        self._maintained_at: float | None = None

    async def run(self, stop: asyncio.Event, *, owner: str | None = None) -> None:
        # The lease outlives a whole drain plus one broker deadline, so a step ends before it expires.
        ttl_s = max(self.config.poll_s * 3, (self.config.drain_s + self.config.timeout_s) * 1.5, leases.MIN_TTL_S)
        await leases.run_elected(
            self.engine, LEASE, self.step, every_s=self.config.poll_s, stop=stop, owner=owner, ttl_s=ttl_s
        )

    async def step(self, lease: leases.Lease) -> int:
        """Bound the outbox, then send what waits while `lease` is this process's; returns events sent."""
        loop = asyncio.get_running_loop()
        if self._maintained_at is None or loop.time() - self._maintained_at >= self.config.maintain_s:
            await self.maintain(lease)
            self._maintained_at = loop.time()
        if loop.time() < self._resume_at:
            return 0
        sent, until = 0, loop.time() + self.config.drain_s
        while loop.time() < until:
            done, more = await self.send_batch(lease)
            sent += done
            if not more:
                break
        return sent

    async def maintain(self, lease: leases.Lease) -> None:
        now = utcnow()
        async with db.write(self.engine, slow=True) as conn:
            await leases.confirm(conn, lease)
            moved = await store.overflow(conn, self.config.max_rows, OVERFLOW_REASON, now, limit=10_000)
            cutoff = now - timedelta(seconds=self.config.sent_retention_s)
            await store.prune_sent(conn, cutoff, limit=10_000)
            waiting = await store.unsent_count(conn)
        if moved:
            self.metrics.events_dead_lettered.labels(cause="overflow").inc(moved)
            log.warning("events_outbox_overflow", moved=moved, max_rows=self.config.max_rows)
        self.metrics.events_outbox_rows.set(waiting)

    async def send_batch(self, lease: leases.Lease) -> tuple[int, bool]:
        """Send the oldest unsent rows, up to `read_events` events (at least one whole row), in broker round
        trips of at most `batch` events, within `timeout_s` in all; then mark the rows sent. Returns (events
        sent, whether more waited). A row is marked only once every event of it was answered: a broker
        that fails halfway leaves the rows unsent, and they are sent again whole (at-least-once). A round
        that took every waiting row ends the step: the publisher does not chase a busy writer row by row
        (a database round, a SQLite write among them, per store write) but comes back at the next poll
        for all that was written meanwhile."""
        async with db.read(self.engine) as conn:
            rows, more = await store.unsent(conn, max(self.config.read_events, self.config.batch))
        if not rows:
            return 0, False
        fits: list[tuple[str, Message]] = []
        refused: list[tuple[str, str]] = []
        for seq, payload in rows:
            for index, line in enumerate(envelope.lines(payload)):
                event_id, type_, body = envelope.head(line)
                data = envelope.cloud_event_bytes(body, source=self.source, seq=seq, index=index)
                if len(data) <= self.config.max_bytes:
                    fits.append((line, Message(event_id, type_, data)))
                else:
                    refused.append((line, f"{len(data)} bytes: over events_max_bytes ({self.config.max_bytes})"))
        try:
            answers = await self._publish([message for _, message in fits])
        except BrokerUnavailable as exc:
            self._back_off(exc)
            return 0, False
        self.backoff_s = 0.0
        refused += [(line, answer) for (line, _), answer in zip(fits, answers, strict=True) if answer is not None]
        sent = sum(answer is None for answer in answers)
        await self._record(lease, [seq for seq, _ in rows], sent, refused)
        return sent, more

    async def _publish(self, messages: list[Message]) -> list[str | None]:
        answers: list[str | None] = []
        try:
            async with asyncio.timeout(self.config.timeout_s):
                for start in range(0, len(messages), self.config.batch):
                    trip = messages[start : start + self.config.batch]
                    answered = await self.broker.publish(trip)
                    if len(answered) != len(trip):
                        raise BrokerUnavailable(f"the broker answered {len(answered)} of {len(trip)} events")
                    answers += answered
        except TimeoutError as exc:
            raise BrokerUnavailable(f"the broker did not answer within {self.config.timeout_s:g} s") from exc
        return answers

    async def _record(self, lease: leases.Lease, seqs: list[int], sent: int, refused: list[tuple[str, str]]) -> None:
        now = utcnow()
        async with db.write(self.engine) as conn:
            await leases.confirm(conn, lease)
            await store.mark_sent(conn, seqs, now)
            await store.dead_letter(conn, refused, now)
        self.metrics.events_published.labels(broker=self.broker.name).inc(sent)
        self.metrics.events_outbox_rows.dec(sent + len(refused))  # set again by the next `maintain`
        if refused:
            self.metrics.events_dead_lettered.labels(cause="refused").inc(len(refused))
            for line, reason in refused:
                event_id, type_, _ = envelope.head(line)
                log.warning("event_refused", event_id=event_id, type=type_, reason=reason)

    def _back_off(self, exc: BrokerUnavailable) -> None:
        self.backoff_s = min(max(self.backoff_s * 2, self.config.poll_s), self.config.max_backoff_s)
        self._resume_at = asyncio.get_running_loop().time() + self.backoff_s
        self.metrics.events_publish_failures.labels(broker=self.broker.name).inc()
        log.warning("events_broker_unavailable", error=str(exc), retry_in_s=self.backoff_s)
