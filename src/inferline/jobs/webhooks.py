"""Signed webhooks after the Standard Webhooks spec, delivered from an outbox table.

State changes insert a delivery row in their own transaction (so a delivery exists exactly when the
change committed); a dispatcher loop sends due rows, retrying non-2xx answers with backoff.
Signature: `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.ids import new_id
from inferline.jobs.model import Job, RetryPolicy, WebhookEvent, public_view
from inferline.schema import tenants, webhook_deliveries

log = structlog.get_logger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker of the spec, not a secret


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


class WebhookDispatcher:
    """Sends due deliveries. Several processes may run one: rows are claimed by moving their
    next_attempt_at forward inside a locking transaction, so each send happens once per attempt."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout_s: float,
        max_attempts: int,
        poll_s: float,
        policy: RetryPolicy,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.policy = policy
        self.client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self.claim_s = timeout_s * 2

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until `stop` is set (never cut off in the middle of a batch). Between
        sends it looks for the next due time with a read and sleeps until then, `poll_s` at most: a claim
        takes the write lock, and an idle server takes none while nothing is due."""
        while not stop.is_set():
            try:
                wait_s = await self._until_due()
                if wait_s <= 0:
                    wait_s = 0.0 if await self.send_due() else self.poll_s
            except Exception:
                log.exception("webhook_dispatch_failed")
                wait_s = self.poll_s
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait_s)

    async def _until_due(self) -> float:
        """Seconds until the earliest pending delivery is due (<= 0: now), `poll_s` when none is."""
        d = webhook_deliveries
        query = sa.select(sa.func.min(d.c.next_attempt_at)).where(d.c.status == "pending")
        async with db.read(self.engine) as conn:
            due: datetime | None = (await conn.execute(query)).scalar_one_or_none()
        if due is None:
            return self.poll_s
        return min((due - utcnow()).total_seconds(), self.poll_s)

    async def send_due(self, limit: int = 50) -> int:
        rows = await self._claim(limit)
        if rows:
            await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def _claim(self, limit: int) -> list[dict[str, Any]]:
        now = utcnow()
        d, earlier = webhook_deliveries, webhook_deliveries.alias("earlier")
        # In order per job: a delivery waits while an older one of the same job is still pending.
        older_pending = (
            sa.select(earlier.c.id)
            .where(earlier.c.job_id == d.c.job_id, earlier.c.status == "pending", earlier.c.id < d.c.id)
            .exists()
        )
        async with db.write(self.engine) as conn:
            query = (
                sa.select(d, tenants.c.webhook_secret)
                .join(tenants, tenants.c.name == d.c.tenant)
                .where(d.c.status == "pending", d.c.next_attempt_at <= now, ~older_pending)
                .order_by(d.c.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True, of=d)
            )
            rows = [dict(row) for row in (await conn.execute(query)).mappings()]
            if rows:
                await conn.execute(
                    d.update()
                    .where(d.c.id.in_([row["id"] for row in rows]))
                    .values(next_attempt_at=now + timedelta(seconds=self.claim_s))
                )
        return rows

    async def _deliver(self, row: dict[str, Any]) -> None:
        body = json.dumps(row["payload"], separators=(",", ":")).encode()
        stamp = int(utcnow().timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": row["id"],
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(row["webhook_secret"], row["id"], stamp, body),
        }
        error: str | None = None
        try:
            response = await self.client.post(row["url"], content=body, headers=headers)
            if not response.is_success:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        await self._record(row, error)

    async def _record(self, row: dict[str, Any], error: str | None) -> None:
        now = utcnow()
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if error is None:
            values |= {"status": "delivered", "delivered_at": now}
        elif attempts >= self.max_attempts:
            values |= {"status": "failed"}
            log.warning("webhook_failed", delivery_id=row["id"], job_id=row["job_id"], error=error)
        else:
            values |= {"next_attempt_at": now + timedelta(seconds=self.policy.backoff_s(attempts))}
        async with db.write(self.engine) as conn:
            await conn.execute(webhook_deliveries.update().where(webhook_deliveries.c.id == row["id"]).values(**values))

    async def aclose(self) -> None:
        await self.client.aclose()
