"""Tenants and their API keys. Keys are random 256-bit tokens, stored as SHA-256 hashes: a slow
password hash buys nothing for keys this long, and a fast one keeps authentication off the hot path."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import InvalidInput, NotFound, Overloaded, Unauthorized
from inferline.ids import new_id
from inferline.jobs.webhooks import new_secret
from inferline.schema import api_keys, tenants

KEY_PREFIX = "il_"
MAX_KEY_CHARS = 200  # ours are 46; a longer one is not worth hashing
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def ensure_tenant(conn: AsyncConnection, name: str) -> None:
    if not _TENANT_NAME.match(name):
        raise InvalidInput(f"tenant name {name!r}: use letters, digits, '_', '.', '-' (max 100)", field="tenant")
    exists = await conn.scalar(sa.select(tenants.c.name).where(tenants.c.name == name))
    if exists is None:
        await conn.execute(tenants.insert().values(name=name, webhook_secret=new_secret(), created_at=utcnow()))


async def create_key(engine: AsyncEngine, tenant: str) -> tuple[ApiKey, str]:
    """Create a key for the tenant (and the tenant if new). The plain key is returned only here."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(new_id(), tenant, plain[:10], utcnow(), None)
    async with db.write(engine) as conn:
        await ensure_tenant(conn, tenant)
        await conn.execute(
            api_keys.insert().values(
                id=key.id,
                tenant=tenant,
                key_hash=hash_key(plain),
                prefix=key.prefix,
                created_at=key.created_at,
            )
        )
    return key, plain


async def list_keys(engine: AsyncEngine, tenant: str | None = None) -> list[ApiKey]:
    query = sa.select(api_keys).order_by(api_keys.c.created_at)
    if tenant is not None:
        query = query.where(api_keys.c.tenant == tenant)
    async with db.read(engine) as conn:
        rows = (await conn.execute(query)).mappings()
        return [ApiKey(r["id"], r["tenant"], r["prefix"], r["created_at"], r["revoked_at"]) for r in rows]


async def revoke_key(engine: AsyncEngine, key_id: str) -> None:
    async with db.write(engine) as conn:
        result = await conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    if not result.rowcount:
        raise NotFound(f"no active key with id {key_id}")


async def count_keys(engine: AsyncEngine) -> int:
    async with db.read(engine) as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(api_keys)) or 0)


async def webhook_secret(engine: AsyncEngine, tenant: str) -> str:
    async with db.read(engine) as conn:
        secret = await conn.scalar(sa.select(tenants.c.webhook_secret).where(tenants.c.name == tenant))
    if secret is None:
        raise NotFound(f"tenant {tenant} not found")
    return str(secret)


class FailureBudget:
    """Unknown keys a client may try: a bucket of `burst` per client address, refilled at `per_s`. A
    client past it is answered 429 without a database read, so guessing keys neither finds one nor
    takes the database's time from other tenants. Addresses are forgotten oldest first past `max_clients`.
    Behind a proxy every client shares its address: the keys they already use still pass (they are
    cached), a new key from there waits for the bucket."""

    def __init__(self, *, burst: float, per_s: float, max_clients: int = 10_000) -> None:
        self.burst = burst
        self.per_s = per_s
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.per_s)

    def take(self, client: str) -> float:
        """Spend one try of `client` (an address) now: 0, or the seconds to wait when none is left."""
        client = _bucket_of(client)
        now = time.monotonic()
        tokens = self._tokens(client, now)
        if tokens < 1:
            return (1 - tokens) / self.per_s
        self._buckets.pop(client, None)
        self._buckets[client] = (tokens - 1, now)  # last in the order: forgotten last
        while len(self._buckets) > self.max_clients:
            self._buckets.pop(next(iter(self._buckets)))
        return 0.0

    def give_back(self, client: str) -> None:
        """The try found a key: it costs nothing."""
        client = _bucket_of(client)
        if client in self._buckets:
            tokens, at = self._buckets[client]
            self._buckets[client] = (min(self.burst, tokens + 1), at)


def _bucket_of(address: str) -> str:
    """IPv6 clients are counted by their /64, which one holder gets whole: an address per guess from one
    network would otherwise make a bucket per guess."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


class Authenticator:
    """Maps a bearer key to its tenant. Verified keys are trusted for `cache_s` seconds, so a
    revoked key stops working within that. Unknown keys cost each client from its `FailureBudget`."""

    def __init__(self, engine: AsyncEngine, cache_s: float, *, failures: FailureBudget | None = None) -> None:
        self.engine = engine
        self.cache_s = cache_s
        self.failures = failures or FailureBudget(burst=30, per_s=1.0)
        self._cache: dict[str, tuple[str, float]] = {}

    async def tenant_for(self, key: str | None, *, client: str = "") -> str:
        if not key or not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_CHARS:
            raise Unauthorized("missing or malformed API key (expected 'Authorization: Bearer il_...')")
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        # Spent before the read, given back for a key that exists: concurrent guesses from one client
        # cannot all pass the check while the first read is in flight.
        wait_s = self.failures.take(client)
        if wait_s > 0:
            raise Overloaded("too many unknown API keys from this client; try again later", retry_after_s=wait_s)
        async with db.read(self.engine) as conn:
            tenant = await conn.scalar(
                sa.select(api_keys.c.tenant).where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
            )
        if tenant is None:
            self._cache.pop(digest, None)
            raise Unauthorized("unknown or revoked API key")
        self.failures.give_back(client)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (str(tenant), time.monotonic() + self.cache_s)
        return str(tenant)
