"""Signed webhooks after the Standard Webhooks spec, delivered from an outbox table.

State changes insert a delivery row in their own transaction (so a delivery exists exactly when the
change committed); a dispatcher loop sends due rows, retrying non-2xx answers with backoff.
Signature: `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.breakers import Breakers
from inferline.clock import utcnow
from inferline.errors import InvalidInput
from inferline.ids import new_id
from inferline.jobs.model import Job, RetryPolicy, WebhookEvent, public_view
from inferline.metrics import Metrics
from inferline.outbound import OutboundPolicy
from inferline.schema import tenants, webhook_deliveries

log = structlog.get_logger(__name__)

# Its own generator: the `random` module's shared state belongs to whoever seeds it (a test's fuzzer
# notices a draw from it in another thread).
_JITTER = random.Random()
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker of the spec, not a secret
ORPHAN_CHECK_S = 60.0  # how often a dispatcher fails the due deliveries of deleted tenants
ORPHAN_BATCH = 500
TENANT_DELETED = "the tenant was deleted"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: int = 300) -> bool:
    """Check a delivery as a receiver would (used by our tests and offered to users' Python code).
    False, never an exception, for anything a sender could put in the headers."""
    msg_id, stamp, offered = (headers.get(name) for name in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if msg_id is None or stamp is None or offered is None or not (msg_id + stamp + offered).isascii():
        return False
    if not stamp.isdigit() or len(stamp) > 12 or abs(int(utcnow().timestamp()) - int(stamp)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(stamp), body).encode()
    return any(hmac.compare_digest(expected, candidate.encode()) for candidate in offered.split(" "))


async def enqueue(conn: AsyncConnection, job: Job, event: WebhookEvent, now: datetime) -> None:
    if not job.wants(event):
        return
    assert job.webhook is not None
    payload = {"type": f"job.{event.value}", "timestamp": now.isoformat(), "data": public_view(job)}
    await conn.execute(
        webhook_deliveries.insert().values(
            id=new_id(),
            job_id=job.id,
            tenant=job.tenant,
            url=job.webhook,
            event=event.value,
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


async def enqueue_event(conn: AsyncConnection, job: Job, event_type: str, data: dict[str, Any], now: datetime) -> None:
    """A workload's own event (`batch.completed`) to the webhook of the job that made it, whatever events
    the job itself asked for; delivered, signed and retried like the job's."""
    if job.webhook is None:
        return
    payload = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    await conn.execute(
        webhook_deliveries.insert().values(
            id=new_id(),
            job_id=job.id,
            tenant=job.tenant,
            url=job.webhook,
            event=event_type[:32],
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def receiver_of(tenant: str, url: str) -> str:
    """The receiver a breaker stands for: the URL's scheme, host and port (its paths share a server), as
    one tenant sends to it: a tenant whose URLs on a shared host fail (a relay service, a wrong path) opens
    its own breaker, never another tenant's."""
    try:
        parsed = httpx.URL(url)
        origin = f"{parsed.scheme}://{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
    except (httpx.InvalidURL, TypeError):
        origin = url[:200]
    return f"{tenant} {origin}"


async def _with_secrets(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with their tenant's `webhook_secret`; a row whose tenant was deleted since `_due_query`
    read it is left out."""
    names = sorted({row["tenant"] for row in rows})
    query = sa.select(tenants.c.name, tenants.c.webhook_secret).where(tenants.c.name.in_(names))
    secrets_by_tenant = {name: secret for name, secret in await conn.execute(query)}
    return [
        row | {"webhook_secret": secrets_by_tenant[row["tenant"]]} for row in rows if row["tenant"] in secrets_by_tenant
    ]


class WebhookDispatcher:
    """Sends due deliveries, each a task of its own bounded by `timeout_s` from resolve to answer,
    `concurrency` at once and `tenant_concurrency` per tenant, so a slow receiver holds one slot of its
    own tenant, never the next batch. The last `reserve` free slots go only to tenants sending nothing:
    tenants whose receivers are slow but answer (each within the deadline, so no breaker opens) fill
    the rest, and another tenant's delivery is sent at once; with the claims in due order, it used to wait
    until their older backlog was sent. Several processes may run one: rows are claimed by moving their
    next_attempt_at forward inside a locking transaction, past the end of the send's deadline, so
    each send happens once per attempt."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout_s: float,
        max_attempts: int,
        poll_s: float,
        policy: RetryPolicy,
        outbound: OutboundPolicy,
        concurrency: int = 32,
        tenant_concurrency: int = 8,
        metrics: Metrics | None = None,
        breakers: Breakers | None = None,
        max_age_s: float = 86_400.0,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        # A receiver that keeps failing is left alone for a while, not sent every due delivery.
        self.breakers = breakers or Breakers(failures=5, cooldown_s=30.0)
        self.max_age_s = max_age_s
        if metrics is not None:
            metrics.webhook_receivers_open.set_function(self.breakers.open_count)  # read when scraped
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.policy = policy
        self.outbound = outbound
        self.concurrency = concurrency
        self.tenant_concurrency = tenant_concurrency
        self.reserve = max(1, concurrency // 8) if concurrency > 1 else 0  # 4 of the default 32
        self.claim_s = timeout_s * 2
        # Each connection goes to the address its own check resolved (outbound.PinnedTarget), so
        # none is kept for another request: a kept one could carry another name's request over a
        # TLS session verified for the first name. No proxies or netrc from the environment.
        self.client = httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        )
        # MariaDB has no `FOR UPDATE OF`: a locking read of the join would lock the tenants' rows too, and
        # a second dispatcher would skip every delivery of a tenant another one is claiming. There the
        # claim locks the deliveries alone, then reads their tenants' secrets.
        self._secret_joined = engine.dialect.name != "mysql"
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._tenant_sending: Counter[str] = Counter()
        self._orphans_checked_at = -math.inf  # time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until `stop` is set, then wait for those in flight. Between claims it
        looks for the next due time with a read and sleeps until then, `poll_s` at most: a claim takes
        the write lock, and an idle server takes none while nothing is due."""
        while not stop.is_set():
            wait_s = await self._step()
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait_s)
        await self.wait_sent()

    async def _step(self) -> float:
        """Start what is due; returns how long to wait before the next look."""
        try:
            if len(self._sending) >= self.concurrency:
                await asyncio.wait(
                    set(self._sending.values()), timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
                )
                return 0.0
            if time.monotonic() - self._orphans_checked_at >= ORPHAN_CHECK_S:
                self._orphans_checked_at = time.monotonic()  # failed or not: next in ORPHAN_CHECK_S, not each poll
                await self.end_orphaned()
            wait_s = await self._until_due()
            if wait_s > 0:
                return wait_s
            return 0.0 if await self.send_due() else self.poll_s
        except Exception:
            log.exception("webhook_dispatch_failed")
            return self.poll_s

    async def end_orphaned(self) -> int:
        """Fail the due deliveries whose tenant was deleted (no secret to sign them with, nobody to read
        them); returns how many. No claim takes them, so they would stay pending for ever, and keep the
        earliest due time in the past: every look would then claim, under the write lock, and find none.
        Read first without locks, then ended by primary key: no locking read over `tenants`."""
        d = webhook_deliveries
        tenant_found = sa.select(sa.literal(1)).where(tenants.c.name == d.c.tenant).limit(1)
        query = (
            sa.select(d.c.id)
            .where(d.c.status == "pending", d.c.next_attempt_at <= utcnow(), tenant_found.scalar_subquery().is_(None))
            .limit(ORPHAN_BATCH)
        )
        ended = 0
        while True:
            async with db.read(self.engine) as conn:
                ids = list((await conn.execute(query)).scalars())
            if ids:
                async with db.write(self.engine) as conn:
                    result = await conn.execute(
                        d.update()
                        .where(d.c.id.in_(ids), d.c.status == "pending")
                        .values(status="failed", last_error=TENANT_DELETED)
                    )
                ended += result.rowcount
            if len(ids) < ORPHAN_BATCH:
                break
        if ended:
            log.warning("webhook_tenant_deleted", deliveries=ended)
            if self.metrics is not None:
                self.metrics.webhook_deliveries.labels(result="failed").inc(ended)
        return ended

    async def _until_due(self) -> float:
        """Seconds until the earliest pending delivery is due (<= 0: now), `poll_s` when none is."""
        d = webhook_deliveries
        query = sa.select(sa.func.min(d.c.next_attempt_at)).where(d.c.status == "pending")
        async with db.read(self.engine) as conn:
            due: datetime | None = (await conn.execute(query)).scalar_one_or_none()
        if due is None:
            return self.poll_s
        return min((due - utcnow()).total_seconds(), self.poll_s)

    async def send_due(self) -> int:
        """Claim due deliveries up to the free slots and start sending them; returns how many started."""
        rows = await self._claim(self.concurrency - len(self._sending))
        for row in rows:
            task = asyncio.create_task(self._deliver(row), name=f"webhook {row['id']}")
            self._sending[row["id"]] = task
            self._tenant_sending[row["tenant"]] += 1
            task.add_done_callback(functools.partial(self._sent, row))
        return len(rows)

    def _sent(self, row: dict[str, Any], _task: asyncio.Task[None]) -> None:
        del self._sending[row["id"]]
        self._tenant_sending[row["tenant"]] -= 1
        if self._tenant_sending[row["tenant"]] <= 0:
            del self._tenant_sending[row["tenant"]]

    async def wait_sent(self) -> None:
        """Wait for the deliveries in flight (each ends within `timeout_s`, then records its outcome)."""
        while self._sending:
            await asyncio.wait(list(self._sending.values()))

    async def _claim(self, slots: int) -> list[dict[str, Any]]:
        if slots <= 0:
            return []
        now = utcnow()
        d = webhook_deliveries
        async with db.write(self.engine) as conn:
            candidates = [dict(row) for row in (await conn.execute(self._due_query(now, slots))).mappings()]
            rows = self._fair_share(candidates)
            if rows and not self._secret_joined:
                rows = await _with_secrets(conn, rows)
            if rows:
                await conn.execute(
                    d.update()
                    .where(d.c.id.in_([row["id"] for row in rows]))
                    .values(next_attempt_at=now + timedelta(seconds=self.claim_s))
                )
        return rows

    def _due_query(self, now: datetime, slots: int) -> sa.Select[Any]:
        """The first due deliveries, locked (they alone, not their tenants' rows), with their tenant's
        secret when `_secret_joined`."""
        d, earlier = webhook_deliveries, webhook_deliveries.alias("earlier")
        # In order per job: a delivery waits while an older one of the same job is still pending.
        older_pending = (
            sa.select(earlier.c.id)
            .where(earlier.c.job_id == d.c.job_id, earlier.c.status == "pending", earlier.c.id < d.c.id)
            .exists()
        )
        if self._secret_joined:
            query = sa.select(d, tenants.c.webhook_secret).join(tenants, tenants.c.name == d.c.tenant)
        else:
            # A deleted tenant's deliveries are left out before the limit, as the join leaves them out: after
            # it, a page of them would starve the live ones. A scalar subquery with LIMIT, which MariaDB does
            # not turn into a semi-join: with EXISTS or IN it did, and a claim of one delivery then locked all
            # of its tenant's, so a second dispatcher found none.
            tenant_found = sa.select(sa.literal(1)).where(tenants.c.name == d.c.tenant).limit(1)
            query = sa.select(d).where(tenant_found.scalar_subquery().is_not(None))
        query = (
            query.where(d.c.status == "pending", d.c.next_attempt_at <= now, ~older_pending)
            .order_by(d.c.next_attempt_at)
            .limit(slots)
            .with_for_update(skip_locked=True, of=d)
        )
        if self._sending:  # in flight here, its claim not yet recorded: never a second send at once
            query = query.where(d.c.id.not_in(list(self._sending)))
        full = [tenant for tenant, count in self._tenant_sending.items() if count >= self._cap(slots)]
        return query.where(d.c.tenant.not_in(full)) if full else query

    def _cap(self, free: int) -> int:
        """How many slots a tenant may hold while `free` are free: its share, or none more once only the
        reserve is left (a tenant sending nothing may still take one)."""
        return self.tenant_concurrency if free > self.reserve else 1

    def _fair_share(self, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The candidates within each tenant's free slots; the rest stay due for the next claim."""
        taken: Counter[str] = Counter()
        rows: list[dict[str, Any]] = []
        free = self.concurrency - len(self._sending)
        for row in candidates:
            if self._tenant_sending[row["tenant"]] + taken[row["tenant"]] < self._cap(free - len(rows)):
                taken[row["tenant"]] += 1
                rows.append(row)
        return rows

    async def _deliver(self, row: dict[str, Any]) -> None:
        receiver = receiver_of(row["tenant"], row["url"])
        try:
            ticket = self.breakers.allow(receiver)
            if ticket is None:
                await self._defer(row, receiver)
                return
            answered = False
            try:
                error = await self._attempt(row)
                answered = True
            finally:
                if not answered:  # cancelled (the dispatcher stops): no word on the receiver
                    self.breakers.release(ticket)
            state = self.breakers.record(ticket, ok=error is None)
            if state == "opened" and error is not None:
                log.warning("webhook_receiver_breaker_open", receiver=receiver, error=error)
            await self._record(row, error)
        except Exception:
            log.exception("webhook_delivery_failed", delivery_id=row["id"])

    async def _defer(self, row: dict[str, Any], receiver: str) -> None:
        """The receiver's breaker is open (or its probe in flight): the delivery waits, without spending an
        attempt, until the probe may have answered (spread over a second, so the waiting ones do not all
        come due at once). One waiting past `max_age_s` since it was made fails: a receiver gone for good
        does not keep its deliveries for ever."""
        now = utcnow()
        left_s = self.max_age_s - (now - row["created_at"]).total_seconds()
        values: dict[str, Any]
        if left_s <= 0:
            error = f"the receiver failed every probe for over {self.max_age_s:g} s (its circuit breaker is open)"
            values = {"status": "failed", "last_error": error}
            log.warning("webhook_failed", delivery_id=row["id"], job_id=row["job_id"], error=error)
            result = "failed"
        else:
            wait_s = max(self.breakers.retry_after_s(receiver), self.timeout_s) + _JITTER.uniform(0, 1)
            values = {"next_attempt_at": now + timedelta(seconds=min(wait_s, left_s + 0.01))}
            result = "deferred"
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(result=result).inc()
        async with db.write(self.engine) as conn:
            await conn.execute(webhook_deliveries.update().where(webhook_deliveries.c.id == row["id"]).values(**values))

    async def _attempt(self, row: dict[str, Any]) -> str | None:
        """One send; None when the receiver answered 2xx, else what went wrong."""
        try:
            async with asyncio.timeout(self.timeout_s):
                status = await self._post(row)
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except InvalidInput as exc:
            log.warning("webhook_target_refused", delivery_id=row["id"], tenant=row["tenant"], error=str(exc))
            return f"refused: {exc}"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _post(self, row: dict[str, Any]) -> int:
        body = json.dumps(row["payload"], separators=(",", ":")).encode()
        stamp = int(utcnow().timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": row["id"],
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(row["webhook_secret"], row["id"], stamp, body),
        }
        target = await self.outbound.resolve(row["url"], field="webhook", tenant=row["tenant"])
        request = target.request(self.client, "POST", content=body, headers=headers)
        response = await self.client.send(request, stream=True)
        # The status is the whole answer: the body is never read (an endless one costs nothing).
        await response.aclose()
        return response.status_code

    async def _record(self, row: dict[str, Any], error: str | None) -> None:
        now = utcnow()
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if error is None:
            values |= {"status": "delivered", "delivered_at": now}
            result = "delivered"
        elif attempts >= self.max_attempts:
            values |= {"status": "failed"}
            log.warning("webhook_failed", delivery_id=row["id"], job_id=row["job_id"], error=error)
            result = "failed"
        else:
            values |= {"next_attempt_at": now + timedelta(seconds=self.policy.backoff_s(attempts))}
            result = "retried"
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(result=result).inc()
        async with db.write(self.engine) as conn:
            await conn.execute(webhook_deliveries.update().where(webhook_deliveries.c.id == row["id"]).values(**values))

    async def aclose(self) -> None:
        for task in list(self._sending.values()):
            task.cancel()
        await asyncio.gather(*self._sending.values(), return_exceptions=True)
        await self.client.aclose()
