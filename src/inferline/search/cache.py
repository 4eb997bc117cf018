"""Search results cache: an in-process LRU, and Redis when `INFERLINE_REDIS_URL` is set (shared by every
API process). Keys hold the collection's version, which every ingest and delete bumps, so a stale
entry is never read again; it just ages out (LRU / Redis TTL). Redis being down costs only the cache:
errors are logged and counted as misses.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import structlog

log = structlog.get_logger(__name__)

PREFIX = "inferline:search:"


class SearchCache:
    def __init__(self, size: int, redis_url: str | None = None, ttl_s: int = 3600) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._local: OrderedDict[str, Any] = OrderedDict()
        self._redis: Any = None
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    async def get(self, key: str) -> Any | None:
        value = self._local.get(key)
        if value is not None:
            self._local.move_to_end(key)
            return value
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(PREFIX + key)
        except Exception as exc:  # the cache is an optimization: a Redis outage must not fail searches
            log.warning("search.cache_unavailable", error=str(exc))
            return None
        if raw is None:
            return None
        value = json.loads(raw)
        self._remember(key, value)
        return value

    async def put(self, key: str, value: Any) -> None:
        self._remember(key, value)
        if self._redis is not None:
            try:
                await self._redis.set(PREFIX + key, json.dumps(value, separators=(",", ":")), ex=self.ttl_s)
            except Exception as exc:
                log.warning("search.cache_unavailable", error=str(exc))

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
