"""The search caches: results (in-process LRU, and the real Redis, shared between processes, when set),
collection rows and query vectors."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from inferline.breakers import Breakers
from inferline.metrics import Metrics
from inferline.search.caches import PREFIX, CollectionCache, QueryVectors, ResultCache
from inferline.search.model import Collection

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
    cache = ResultCache(size=2)
    await cache.put("a", [1])
    await cache.put("b", [2])
    assert await cache.get("a") == [1]  # a is now the most recent
    await cache.put("c", [3])
    assert await cache.get("b") is None and await cache.get("a") == [1] and await cache.get("c") == [3]
    off = ResultCache(size=0)
    await off.put("a", [1])
    assert await off.get("a") is None


@pytest.mark.redis
async def test_redis_shares_results_between_processes_with_a_ttl(redis_url: str) -> None:
    writer, reader = ResultCache(16, redis_url, ttl_s=60), ResultCache(16, redis_url, ttl_s=60)
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
    cache = ResultCache(16, "redis://127.0.0.1:1/0", ttl_s=60)  # nothing listens there
    await cache.put("k", [1])  # logged, not raised
    assert await cache.get("k") == [1]  # the LRU still answers
    assert await cache.get("other") is None
    await cache.close()


def _collection(collection_id: str = "c1", name: str = "docs", version: int = 0) -> Collection:
    return Collection(collection_id, "t", name, {}, "e5", 4, 256, 32, version, datetime(2026, 1, 1, tzinfo=UTC))


def test_a_collection_copy_is_trusted_for_its_ttl_from_when_its_read_began() -> None:
    cache = CollectionCache(ttl_s=60)
    assert cache.get("t", "docs") is None
    cache.put(_collection(), read_at=time.monotonic())
    assert cache.get("t", "docs") == _collection()
    assert cache.get("other", "docs") is None  # another tenant's name is another collection
    cache.put(_collection(name="old"), read_at=time.monotonic() - 61)
    assert cache.get("t", "old") is None


def test_a_collection_copy_follows_its_version_forward_only_and_is_dropped_by_id() -> None:
    cache = CollectionCache(ttl_s=60)
    cache.put(_collection(), read_at=time.monotonic())
    cache.put(_collection("c2", "other"), read_at=time.monotonic())
    cache.advanced("c1", 3)
    cache.advanced("c1", 2)  # two ingests may report their versions out of order
    assert cache.get("t", "docs") == _collection(version=3)
    assert cache.get("t", "other") == _collection("c2", "other")
    cache.drop("c1")
    assert cache.get("t", "docs") is None and cache.get("t", "other") is not None


def test_query_vectors_keep_the_most_recently_used_per_tenant() -> None:
    vectors = QueryVectors(size=2)
    vectors.put("t", "e5", "a", [1.0])
    vectors.put("t", "e5", "b", [2.0])
    assert vectors.get("t", "e5", "a") == [1.0]  # a is now the most recent
    vectors.put("t", "e5", "c", [3.0])
    assert vectors.get("t", "e5", "b") is None
    assert vectors.get("t", "e5", "a") == [1.0] and vectors.get("t", "e5", "c") == [3.0]
    assert vectors.get("t", "other-model", "a") is None
    assert vectors.get("other-tenant", "e5", "a") is None


async def test_a_redis_that_stops_answering_is_skipped_by_its_breaker_while_searches_go_on() -> None:
    """A server that takes connections and never answers (a hung Redis): each call waits its timeout
    until the breaker opens; then no call reaches it, and the process's own LRU still serves."""
    connections: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    metrics = Metrics()
    breakers = Breakers(failures=2, cooldown_s=60)
    cache = ResultCache(4, f"redis://127.0.0.1:{port}/0", breakers=breakers, metrics=metrics, timeout_s=0.2)
    try:
        async with server:
            assert await cache.get("a") is None and await cache.get("b") is None  # two timeouts: it opens
            assert cache.breaker_state() == "opened"
            assert "inferline_search_cache_breaker_state 1.0" in metrics.render().decode()
            reached = len(connections)
            assert reached >= 1
            for key in "cdefgh":
                assert await cache.get(key) is None
            await cache.put("x", [1])
            assert await cache.get("x") == [1]  # from this process's LRU
            assert len(connections) == reached  # nothing more was sent to the hung server
    finally:
        for writer in connections:
            writer.close()
        await cache.close()


async def test_searches_that_miss_a_collection_copy_together_share_one_read() -> None:
    """When the copy expires under load every search in flight misses it: one read serves them all, is
    kept, and its error is each one's; a search cancelled meanwhile does not cancel the others' read."""
    from inferline.errors import NotFound

    cache = CollectionCache(ttl_s=60)
    reads = 0
    release = asyncio.Event()

    async def read() -> Collection:
        nonlocal reads
        reads += 1
        await release.wait()
        return _collection(version=reads)

    waiting = [asyncio.create_task(cache.read_once("t", "docs", read)) for _ in range(10)]
    await asyncio.sleep(0.01)
    waiting[0].cancel()
    release.set()
    found = await asyncio.gather(*waiting[1:])
    assert reads == 1 and found == [_collection(version=1)] * 9 and waiting[0].cancelled()
    assert cache.get("t", "docs") == _collection(version=1)

    async def missing() -> Collection:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        raise NotFound("no collection 'gone'")

    answers = await asyncio.gather(*(cache.read_once("t", "gone", missing) for _ in range(5)), return_exceptions=True)
    assert reads == 2 and all(isinstance(answer, NotFound) for answer in answers)
    assert cache.get("t", "gone") is None
    assert await cache.read_once("t", "docs2", lambda: asyncio.sleep(0, _collection(name="docs2"))) == _collection(
        name="docs2"
    )
