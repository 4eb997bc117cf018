"""Fixtures of the adapter tests: the real event brokers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.event_brokers import KINDS, RealBroker, real


@pytest.fixture(params=KINDS)
async def real_broker(request: pytest.FixtureRequest) -> AsyncIterator[RealBroker]:
    """Each real broker in turn, with a topic of this test's own."""
    async with real(request.param) as broker:
        yield broker


@pytest.fixture
async def redis_broker() -> AsyncIterator[RealBroker]:
    async with real("redis") as broker:
        yield broker
