"""What the events capability needs, built once by `bootstrap.py` and kept on `Services.events`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.events.broker import Broker
from inferline.events.publisher import PublisherConfig


@dataclass(frozen=True)
class EventsDeps:
    engine: AsyncEngine
    broker: Broker | None  # None: events are off (no `events_broker`)
    publisher: PublisherConfig
