"""What the events capability needs, built once by `bootstrap.py` (`EventsDeps.from_settings`) and kept
on `Services.events`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.config import Settings
from inferline.events.broker import Broker
from inferline.events.publisher import PublisherConfig


@dataclass(frozen=True)
class EventsDeps:
    engine: AsyncEngine
    broker: Broker | None  # None: events are off (no `events_broker`)
    publisher: PublisherConfig

    @classmethod
    def from_settings(cls, settings: Settings, *, engine: AsyncEngine, broker: Broker | None) -> EventsDeps:
        """`broker` is the adapter `bootstrap.py` picked for `events_broker` (None when unset)."""
        config = PublisherConfig(
            topic=settings.events_topic,
            batch=settings.events_batch,
            poll_s=settings.events_publish_poll_s,
            timeout_s=settings.events_publish_timeout_s,
            max_rows=settings.events_outbox_max_rows,
            max_bytes=settings.events_max_bytes,
            sent_retention_s=settings.events_sent_retention_s,
        )
        return cls(engine=engine, broker=broker, publisher=config)
