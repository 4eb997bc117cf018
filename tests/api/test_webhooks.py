"""Webhook deliveries, checked by a real HTTP receiver that verifies signatures on its own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.api.conftest import Api, MakeApi
from tests.helpers import eventually

from inferline import db
from inferline.clock import utcnow
from inferline.jobs.model import RetryPolicy
from inferline.jobs.webhooks import WebhookDispatcher, new_secret, verify
from inferline.outbound import OutboundPolicy
from inferline.schema import tenants, webhook_deliveries


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server: records each request; answers 500 to the first `fail_first`."""

    fail_first: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0
    down: bool = False  # answers 500 to everything while set

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        self.requests.append((headers, body))
        failing = self.down or len(self.requests) <= self.fail_first
        status = "500 Internal Server Error" if failing else "200 OK"
        writer.write(f"HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    """The API with receivers on loopback allowed (webhooks call only public addresses by default)."""
    settings = {
        "database_url": database_url,
        "plugins": ["tests.plugins.kinds"],
        "webhook_allow_networks": ["127.0.0.0/8"],
    }
    async with make_api(**settings) as started:
        yield started


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(fail_first=1)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    async with server:
        yield receiver


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written out here rather than trusting inferline's own."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split())


@pytest.mark.mariadb_too
async def test_deliveries_are_signed_retried_and_throttled(api: Api, receiver: Receiver) -> None:
    secret = (await api.client.get("/api/v1/webhooks/secret")).json()["secret"]
    job = await api.submit(
        input={"message": "m", "steps": 8, "step_s": 0.15},
        webhook=f"http://127.0.0.1:{receiver.port}/hook",
        webhook_events=["start", "progress", "completed"],
    )
    await api.wait(job["id"])
    await eventually(
        lambda: len(receiver.requests) > 1 and json.loads(receiver.requests[-1][1])["type"] == "job.completed",
        timeout_s=5,
        describe=lambda _: f"no job.completed delivered: {receiver.requests}",
    )
    for headers, body in receiver.requests:
        assert signature_ok(secret, headers, body)
        assert verify(secret, headers, body)
        assert not signature_ok(secret, headers, body + b" ")
    # The first delivery got a 500 and came again with the same id.
    assert receiver.requests[0][0]["webhook-id"] == receiver.requests[1][0]["webhook-id"]
    payloads: list[dict[str, Any]] = [json.loads(body) for _, body in receiver.requests[1:]]
    types = [p["type"] for p in payloads]
    assert types[0] == "job.start" and types[-1] == "job.completed"
    assert payloads[-1]["data"]["status"] == "succeeded" and payloads[-1]["data"]["id"] == job["id"]
    progress_times = [datetime.fromisoformat(p["timestamp"]) for p in payloads if p["type"] == "job.progress"]
    assert 1 <= len(progress_times) <= 3  # 8 steps of 150 ms, at most one progress per 500 ms
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(progress_times)]
    assert all(gap >= 0.5 for gap in gaps)
    # Each send counted by its result, in /metrics: the 500 was one retry, the rest delivered.
    counted = {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families((await api.anonymous.get("/metrics")).text)
        if family.name == "inferline_webhook_deliveries"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counted == {"retried": 1.0, "delivered": float(len(receiver.requests) - 1)}


def counted_sends(metrics_text: str) -> dict[str, float]:
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "inferline_webhook_deliveries"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def test_a_failing_receiver_is_left_alone_by_its_breaker_until_a_probe_finds_it_back(
    make_api: MakeApi, receiver: Receiver
) -> None:
    receiver.fail_first, receiver.down = 0, True
    settings = {
        "plugins": ["tests.plugins.kinds"],
        "webhook_allow_networks": ["127.0.0.0/8"],
        "breaker_failures": 2,
        "breaker_cooldown_s": 2.0,
        "webhook_poll_s": 0.05,
        "webhook_timeout_s": 1.0,  # also how long a delivery waits while the probe is out
    }
    async with make_api(**settings) as api:
        hook = {"webhook": f"http://127.0.0.1:{receiver.port}/hook", "webhook_events": ["completed"]}
        jobs = [await api.submit(input={"message": str(n)}, **hook) for n in range(6)]
        for job in jobs:
            await api.wait(job["id"])

        async def sends() -> dict[str, float]:
            return counted_sends((await api.anonymous.get("/metrics")).text)

        # Open: the deliveries still due wait for the probe instead of retrying against a dead receiver.
        await eventually(sends, lambda counted: counted.get("deferred", 0) >= 2, timeout_s=10)
        metrics = (await api.anonymous.get("/metrics")).text
        assert "inferline_webhook_receivers_open 1.0" in metrics
        failed_sends = len(receiver.requests)
        assert failed_sends < 6 + 2  # without the breaker each delivery is retried every few tens of ms
        receiver.down = False

        async def pending() -> int:
            async with db.read(api.services.engine) as conn:
                query = sa.select(sa.func.count()).where(webhook_deliveries.c.status != "delivered")
                return int((await conn.execute(query)).scalar_one())

        await eventually(pending, lambda left: left == 0, timeout_s=15)
        # One request for each delivery once back (the first of them the probe), none spent while open.
        assert len(receiver.requests) == failed_sends + 6
        async with db.read(api.services.engine) as conn:
            attempts = (await conn.execute(sa.select(sa.func.sum(webhook_deliveries.c.attempts)))).scalar_one()
        assert attempts == len(receiver.requests)  # an attempt is a request made: deferrals spend none
        assert "inferline_webhook_receivers_open 0.0" in (await api.anonymous.get("/metrics")).text


@pytest.mark.mariadb_too
async def test_only_asked_events_are_delivered(api: Api, receiver: Receiver) -> None:
    receiver.fail_first = 0
    job = await api.submit(
        input={"message": "m", "steps": 2},
        webhook=f"http://127.0.0.1:{receiver.port}/",
        webhook_events=["completed"],
    )
    await api.wait(job["id"])
    await eventually(lambda: receiver.requests, timeout_s=5)
    await asyncio.sleep(0.3)  # time for a delivery that should not come
    assert [json.loads(body)["type"] for _, body in receiver.requests] == ["job.completed"]


@pytest.mark.mariadb_too
async def test_events_without_a_webhook_url_are_422(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/jobs", json={"kind": "echo", "input": {"message": "m"}, "webhook_events": ["start"]}
    )
    assert response.status_code == 422 and response.json()["field"] == "webhook"


async def test_deliveries_held_back_by_a_dead_receivers_breaker_fail_once_past_their_age(
    make_api: MakeApi, receiver: Receiver
) -> None:
    receiver.fail_first, receiver.down = 0, True
    settings = {
        "plugins": ["tests.plugins.kinds"],
        "webhook_allow_networks": ["127.0.0.0/8"],
        "breaker_failures": 1,
        "breaker_cooldown_s": 60.0,
        "webhook_poll_s": 0.05,
        "webhook_timeout_s": 0.2,
        "webhook_max_age_s": 0.5,
    }
    async with make_api(**settings) as api:
        hook = {"webhook": f"http://127.0.0.1:{receiver.port}/hook", "webhook_events": ["completed"]}
        for n in range(3):
            await api.wait((await api.submit(input={"message": str(n)}, **hook))["id"])

        async def ended() -> list[tuple[str, str | None]]:
            async with db.read(api.services.engine) as conn:
                rows = await conn.execute(sa.select(webhook_deliveries.c.status, webhook_deliveries.c.last_error))
                return [(row.status, row.last_error) for row in rows]

        rows = await eventually(ended, lambda rows: all(status == "failed" for status, _ in rows), timeout_s=15)
    assert len(rows) == 3 and len(receiver.requests) < 3  # the breaker held back what the first failure opened
    assert any("circuit breaker is open" in (error or "") for _, error in rows)


@pytest.mark.mariadb_too
async def test_two_dispatchers_share_one_tenants_due_deliveries(engine: AsyncEngine) -> None:
    """A dispatcher claiming a tenant's delivery locks that delivery, not the tenant: another dispatcher
    takes the tenant's next one meanwhile (on MariaDB, without `FOR UPDATE OF`, it found none)."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: two claims never overlap")
    now, secret = utcnow(), new_secret()
    async with db.write(engine) as conn:
        await conn.execute(tenants.insert().values(name="a", webhook_secret=secret, created_at=now))
        delivery = {"tenant": "a", "url": "http://127.0.0.1:9/", "event": "completed", "payload": {}}
        await conn.execute(
            webhook_deliveries.insert(),
            [
                delivery
                | {"id": f"d{n}", "job_id": f"j{n}", "status": "pending", "attempts": 0}
                | {"next_attempt_at": now, "created_at": now}
                for n in range(2)
            ],
        )
    options: dict[str, Any] = {"timeout_s": 1.0, "max_attempts": 3, "poll_s": 0.1, "policy": RetryPolicy()}
    first = WebhookDispatcher(engine, outbound=OutboundPolicy(), **options)
    second = WebhookDispatcher(engine, outbound=OutboundPolicy(), **options)
    try:
        async with engine.connect() as conn, conn.begin():  # the first one mid-claim: its locking read done
            [held] = (await conn.execute(first._due_query(utcnow(), 1))).mappings()
            async with asyncio.timeout(10):
                claimed = await second._claim(8)
            assert [row["id"] for row in claimed] == [{"d0": "d1", "d1": "d0"}[held["id"]]]
            assert claimed[0]["webhook_secret"] == secret
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.mariadb_too
async def test_a_deleted_tenants_deliveries_do_not_starve_a_live_tenants(engine: AsyncEngine) -> None:
    """A page of due deliveries whose tenant is gone (and a tenant's row locked meanwhile, as an update of
    its secret would) still leaves room for a live tenant's: on MariaDB they were left out after the limit."""
    now, secret = utcnow(), new_secret()
    delivery = {"url": "http://127.0.0.1:9/", "event": "completed", "payload": {}, "status": "pending", "attempts": 0}
    async with db.write(engine) as conn:
        await conn.execute(tenants.insert().values(name="live", webhook_secret=secret, created_at=now))
        gone = [
            delivery
            | {"id": f"g{n}", "job_id": f"g{n}", "tenant": "gone"}
            # due before the live one, so they come first in the claim's order
            | {"next_attempt_at": now - timedelta(minutes=1), "created_at": now}
            for n in range(4)
        ]
        live = delivery | {"id": "l0", "job_id": "l0", "tenant": "live", "next_attempt_at": now, "created_at": now}
        await conn.execute(webhook_deliveries.insert(), [*gone, live])
    options: dict[str, Any] = {"timeout_s": 1.0, "max_attempts": 3, "poll_s": 0.1, "policy": RetryPolicy()}
    dispatcher = WebhookDispatcher(engine, outbound=OutboundPolicy(), **options)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if engine.dialect.name != "sqlite":  # SQLite has one writer: a held lock would block any claim
                conn = await stack.enter_async_context(engine.connect())
                await stack.enter_async_context(conn.begin())
                await conn.execute(sa.select(tenants).where(tenants.c.name == "live").with_for_update())
            async with asyncio.timeout(10):
                claimed = await dispatcher._claim(2)
        assert [(row["id"], row["webhook_secret"]) for row in claimed] == [("l0", secret)]
    finally:
        await dispatcher.aclose()


@pytest.mark.mariadb_too
async def test_a_deleted_tenants_due_deliveries_fail_with_the_reason(engine: AsyncEngine) -> None:
    """A delivery whose tenant is gone fails, as it comes due, with the reason: no claim takes it, and left
    pending it would keep the earliest due time in the past, so the dispatcher looked (and claimed) each
    poll instead of sleeping. A live tenant's and a not yet due one stay pending."""
    now, secret = utcnow(), new_secret()
    delivery = {"url": "http://127.0.0.1:9/", "event": "completed", "payload": {}, "status": "pending", "attempts": 0}
    later = now + timedelta(hours=1)
    async with db.write(engine) as conn:
        await conn.execute(tenants.insert().values(name="live", webhook_secret=secret, created_at=now))
        rows = [
            delivery | {"id": "g0", "job_id": "g0", "tenant": "gone", "next_attempt_at": now, "created_at": now},
            delivery | {"id": "g1", "job_id": "g1", "tenant": "gone", "next_attempt_at": now, "created_at": now},
            delivery | {"id": "g2", "job_id": "g2", "tenant": "gone", "next_attempt_at": later, "created_at": now},
            delivery | {"id": "l0", "job_id": "l0", "tenant": "live", "next_attempt_at": later, "created_at": now},
        ]
        await conn.execute(webhook_deliveries.insert(), rows)
    options: dict[str, Any] = {"timeout_s": 1.0, "max_attempts": 3, "poll_s": 5.0, "policy": RetryPolicy()}
    dispatcher = WebhookDispatcher(engine, outbound=OutboundPolicy(), **options)
    try:
        await dispatcher._step()
        assert await dispatcher._until_due() > 0  # nothing due is left: it sleeps
    finally:
        await dispatcher.aclose()
    d = webhook_deliveries
    async with db.read(engine) as conn:
        found = {row.id: (row.status, row.last_error) for row in await conn.execute(sa.select(d).order_by(d.c.id))}
    assert found == {
        "g0": ("failed", "the tenant was deleted"),
        "g1": ("failed", "the tenant was deleted"),
        "g2": ("pending", None),
        "l0": ("pending", None),
    }
