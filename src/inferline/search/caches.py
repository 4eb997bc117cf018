"""What one process of search remembers, each for its own reason:

- `ResultCache`: search results, in an in-process LRU, and in Redis when `INFERLINE_REDIS_URL` is set
  (shared by every API process). Keys hold the collection's version, which every ingest and delete
  advances, so a stale entry is never read again; it just ages out (LRU / Redis TTL). Redis being down
  costs only the cache: errors are logged and counted as misses.
- `CollectionCache`: this process's copy of collection rows, whose version keys the results.
- `QueryVectors`: each tenant's query embeddings, which outlive collection versions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from inferline.breakers import BREAKER_VALUE, Breakers
from inferline.metrics import Metrics
from inferline.search.model import Collection

log = structlog.get_logger(__name__)

PREFIX = "inferline:search:"
REDIS = "redis"  # the breaker's name


class ResultCache:
    """Results by key: in this process, and in Redis when a URL is given. Redis sits behind a circuit
    breaker: after `breakers.failures` failed calls in a row the cache is this process's alone until a
    probe after the cool-down succeeds, so a Redis outage does not add its timeouts to every search."""

    def __init__(
        self,
        size: int,
        redis_url: str | None = None,
        ttl_s: int = 3600,
        *,
        breakers: Breakers | None = None,
        metrics: Metrics | None = None,
        timeout_s: float = 0.5,
    ) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._local: OrderedDict[str, Any] = OrderedDict()
        self._redis: Any = None
        self._breakers = breakers or Breakers(failures=5, cooldown_s=30.0)
        if metrics is not None and redis_url:
            metrics.cache_breaker_state.set_function(lambda: BREAKER_VALUE[self._breakers.state(REDIS)])
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    async def get(self, key: str) -> Any | None:
        value = self._local.get(key)
        if value is not None:
            self._local.move_to_end(key)
            return value
        raw = await self._call("get", PREFIX + key)
        if raw is None:
            return None
        value = json.loads(raw)
        self._remember(key, value)
        return value

    async def put(self, key: str, value: Any) -> None:
        self._remember(key, value)
        await self._call("set", PREFIX + key, json.dumps(value, separators=(",", ":")), ex=self.ttl_s)

    async def _call(self, command: str, *args: Any, **options: Any) -> Any:
        """A Redis command through the breaker; None without Redis, while the breaker is open, or on error
        (the cache is an optimization: a Redis outage must not fail searches)."""
        if self._redis is None or (ticket := self._breakers.allow(REDIS)) is None:
            return None
        try:
            answer = await getattr(self._redis, command)(*args, **options)
        except asyncio.CancelledError:  # the search's client left: no word on Redis
            self._breakers.release(ticket)
            raise
        except Exception as exc:
            state = self._breakers.record(ticket, ok=False)
            log.warning("search.cache_unavailable", error=str(exc), breaker=state)
            return None
        self._breakers.record(ticket, ok=True)
        return answer

    def breaker_state(self) -> str:
        return self._breakers.state(REDIS)

    def _remember(self, key: str, value: Any) -> None:
        if self.size <= 0:
            return
        self._local[key] = value
        self._local.move_to_end(key)
        while len(self._local) > self.size:
            self._local.popitem(last=False)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


@dataclass
class _Copy:
    collection: Collection
    read_at: float  # time.monotonic() when the read of the row began


class CollectionCache:
    """Collection rows by (tenant, name), each trusted for `ttl_s` after it was read. Changes made in
    this process reach the copy at once (`advanced`, `drop`); changes by other processes (separate
    workers) are seen within `ttl_s`."""

    def __init__(self, ttl_s: float = 1.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._copies: dict[tuple[str, str], _Copy] = {}
        self._reading: dict[tuple[str, str], asyncio.Future[Collection]] = {}

    async def read_once(self, tenant: str, name: str, read: Callable[[], Awaitable[Collection]]) -> Collection:
        """The collection from `read`, kept; searches that need it while that read is in flight wait for it
        rather than each reading the row (when a copy expires under load, every search in flight missed it:
        ~7% of a cached search's CPU at 16 concurrent requests). Its error, NotFound included, is theirs too."""
        key = (tenant, name)
        pending = self._reading.get(key)
        if pending is None:
            read_at = time.monotonic()
            pending = self._reading[key] = asyncio.ensure_future(read())

            def done(future: asyncio.Future[Collection]) -> None:
                self._reading.pop(key, None)
                if not future.cancelled() and future.exception() is None:  # retrieved: no "never retrieved"
                    self.put(future.result(), read_at=read_at)

            pending.add_done_callback(done)
        return await asyncio.shield(pending)  # a search whose client left does not cancel the others' read

    def get(self, tenant: str, name: str) -> Collection | None:
        """The copy of the collection, unless there is none or it is older than `ttl_s`."""
        copy = self._copies.get((tenant, name))
        if copy is None or time.monotonic() - copy.read_at >= self.ttl_s:
            return None
        return copy.collection

    def put(self, collection: Collection, *, read_at: float) -> None:
        """Keep `collection`, read from the database starting at `read_at` (`time.monotonic()`)."""
        if len(self._copies) > self.max_entries:  # a bound on memory; a miss costs one read
            self._copies.clear()
        self._copies[(collection.tenant, collection.name)] = _Copy(collection, read_at)

    def advanced(self, collection_id: str, version: int) -> None:
        """This process just moved the collection to `version`: the copy follows, rather than being
        dropped and read again by the next upload or search (a transaction each). Never backwards: two
        ingests may report their versions out of order."""
        for copy in self._copies.values():
            if copy.collection.id == collection_id and copy.collection.version < version:
                copy.collection = replace(copy.collection, version=version)

    def drop(self, collection_id: str) -> None:
        """Forget the copy: the next lookup reads the row again."""
        for key, copy in list(self._copies.items()):
            if copy.collection.id == collection_id:
                del self._copies[key]


class QueryVectors:
    """An LRU of query embeddings by (tenant, model, normalized query). They do not depend on a collection's
    version, so a popular query searched again after an ingest costs the index search only, not the
    model (8-14 ms on 2 cores). Kept per tenant: a shared entry would make one tenant's search faster
    because another searched the same text, which `took_ms` shows."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._vectors: OrderedDict[tuple[str, str, str], Any] = OrderedDict()

    def get(self, tenant: str, model: str, query: str) -> Any | None:
        key = (tenant, model, query)
        vector = self._vectors.get(key)
        if vector is not None:
            self._vectors.move_to_end(key)
        return vector

    def put(self, tenant: str, model: str, query: str, vector: Any) -> None:
        key = (tenant, model, query)
        self._vectors[key] = vector
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)
