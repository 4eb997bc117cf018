"""The search result cache: in-process LRU, and the real Redis (shared between processes) when set."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from inferline.search.cache import PREFIX, SearchCache

REDIS_URL = os.environ.get("INFERLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:
        if os.environ.get("INFERLINE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis at {REDIS_URL} is required (INFERLINE_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    yield REDIS_URL


async def test_the_lru_keeps_the_most_recently_used_entries() -> None:
    cache = SearchCache(size=2)
    await cache.put("a", [1])
    await cache.put("b", [2])
    assert await cache.get("a") == [1]  # a is now the most recent
    await cache.put("c", [3])
    assert await cache.get("b") is None and await cache.get("a") == [1] and await cache.get("c") == [3]
    off = SearchCache(size=0)
    await off.put("a", [1])
    assert await off.get("a") is None


@pytest.mark.redis
async def test_redis_shares_results_between_processes_with_a_ttl(redis_url: str) -> None:
    writer, reader = SearchCache(16, redis_url, ttl_s=60), SearchCache(16, redis_url, ttl_s=60)
    key = f"test-{uuid.uuid4().hex}"
    try:
        assert await reader.get(key) is None
        await writer.put(key, [["chunk", "doc", 0.5]])
        assert await reader.get(key) == [["chunk", "doc", 0.5]]  # another process's LRU missed: Redis had it
        client = aioredis.from_url(redis_url)
        assert 0 < await client.ttl(PREFIX + key) <= 60
        await client.delete(PREFIX + key)
        await client.aclose()
        assert await reader.get(key) == [["chunk", "doc", 0.5]]  # now from its own LRU
    finally:
        await writer.close()
        await reader.close()


async def test_a_redis_outage_costs_only_the_cache() -> None:
    cache = SearchCache(16, "redis://127.0.0.1:1/0", ttl_s=60)  # nothing listens there
    await cache.put("k", [1])  # logged, not raised
    assert await cache.get("k") == [1]  # the LRU still answers
    assert await cache.get("other") is None
    await cache.close()
