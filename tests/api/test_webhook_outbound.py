"""Webhooks as calls to hostile or broken places: internal addresses are refused when the URL is given
and again when it is called, the connection goes to the address that was checked, and a receiver that
trickles or never ends its answer holds neither its delivery past `webhook_timeout_s` nor another
tenant's deliveries. Receivers are real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from tests.api.conftest import Api, MakeApi
from tests.helpers import eventually

from inferline import db
from inferline.schema import webhook_deliveries

LOCAL = ["127.0.0.0/8"]
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def answer_ok(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    await writer.drain()
    writer.close()


async def answer_one_byte_a_second(writer: asyncio.StreamWriter) -> None:
    for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n":
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(1)


async def answer_200_with_an_endless_body(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"x" * 16384
    while True:  # ~320 KB/s: a client that reads it all holds a growing body, not an instant gigabyte
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        await asyncio.sleep(0.05)


@dataclass
class Receiver:
    """Records each request (headers, when it arrived) and when the sender hung up; `answer` replies."""

    answer: Answer
    url: str = ""
    headers: list[dict[str, str]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    hung_up: list[float] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:]
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            await reader.readexactly(int(headers.get("content-length", 0)))
            self.headers.append(headers)
            self.arrived.append(time.monotonic())
            answering = asyncio.create_task(self.answer(writer))
            await reader.read()  # b"" once the sender closes its side
            self.hung_up.append(time.monotonic())
            answering.cancel()
            await asyncio.gather(answering, return_exceptions=True)
        finally:
            self.open_now -= 1
            writer.close()


@asynccontextmanager
async def receiving(answer: Answer) -> AsyncIterator[Receiver]:
    receiver = Receiver(answer)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    async with server:
        yield receiver


async def deliveries_of(api: Api, job_id: str) -> list[dict[str, Any]]:
    query = sa.select(webhook_deliveries).where(webhook_deliveries.c.job_id == job_id)
    async with db.read(api.services.engine) as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def submit_completed_hook(client: Any, url: str) -> str:
    body = {"kind": "echo", "input": {"message": "m"}, "webhook": url, "webhook_events": ["completed"]}
    response = await client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_internal_webhook_urls_are_422_naming_the_field(idle_api: Api) -> None:
    urls = [
        "http://127.0.0.1:6379/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://10.0.0.5/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:8000/",
        "http://user:secret@example.com/",
    ]
    for url in urls:
        for headers in [{}, {"Idempotency-Key": f"k-{url}"}]:
            body = {"kind": "echo", "input": {"message": "m"}, "webhook": url}
            response = await idle_api.client.post("/api/v1/jobs", json=body, headers=headers)
            assert response.status_code == 422 and response.json()["field"] == "webhook", (url, response.text)
    schedule = {"cron": "* * * * *", "kind": "echo", "input": {"message": "m"}, "webhook": "http://169.254.169.254/"}
    response = await idle_api.client.post("/api/v1/schedules", json=schedule)
    assert response.status_code == 422 and response.json()["field"] == "webhook", response.text
    assert (await idle_api.client.get("/api/v1/jobs")).json()["items"] == []


async def test_a_name_that_turns_internal_after_submission_is_refused_at_send_time(
    make_api: MakeApi, database_url: str
) -> None:
    async with receiving(answer_ok) as receiver, make_api(database_url=database_url) as api:
        outbound = api.services.submitter.outbound
        system_resolver, answered = outbound.resolver, []

        async def rebinding(host: str, port: int) -> list[str]:  # public when checked, then loopback
            answered.append(host)
            return ["93.184.216.34"] if len(answered) == 1 else await system_resolver(host, port)

        outbound.resolver = rebinding
        port = receiver.url.split(":")[2].split("/")[0]
        job_id = await submit_completed_hook(api.client, f"http://localhost:{port}/hook")
        [delivery] = await eventually(
            lambda: deliveries_of(api, job_id), lambda rows: rows and rows[0]["last_error"], timeout_s=15
        )
    assert delivery["last_error"].startswith("refused:") and delivery["status"] == "pending"
    assert receiver.arrived == [] and len(answered) >= 2


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    make_api: MakeApi, database_url: str
) -> None:
    async with (
        receiving(answer_ok) as receiver,
        make_api(database_url=database_url, webhook_allow_networks=LOCAL) as api,
    ):

        async def hooks_example_only(host: str, port: int) -> list[str]:  # a name no DNS server knows
            assert host == "hooks.example"
            return ["127.0.0.1"]

        api.services.submitter.outbound.resolver = hooks_example_only
        port = receiver.url.split(":")[2].split("/")[0]
        job_id = await submit_completed_hook(api.client, f"http://hooks.example:{port}/hook")
        await eventually(lambda: deliveries_of(api, job_id), lambda rows: rows and rows[0]["status"] == "delivered")
    assert [headers["host"] for headers in receiver.headers] == [f"hooks.example:{port}"]


async def test_a_trickling_receiver_is_cut_at_the_deadline_while_another_tenant_is_served(
    make_api: MakeApi, database_url: str
) -> None:
    async with (
        receiving(answer_one_byte_a_second) as slow,
        receiving(answer_ok) as fast,
        make_api(database_url=database_url, webhook_allow_networks=LOCAL, webhook_timeout_s=3) as api,
    ):
        await submit_completed_hook(api.client, slow.url)
        await eventually(lambda: slow.arrived, timeout_s=15)
        await submit_completed_hook(api.other, fast.url)
        await eventually(lambda: fast.arrived, timeout_s=15, describe=lambda _: "the fast receiver waited")
        await eventually(lambda: slow.hung_up, timeout_s=15, describe=lambda _: "the trickle was never cut")
    cut_after_s = slow.hung_up[0] - slow.arrived[0]
    assert 2.5 <= cut_after_s <= 6, cut_after_s
    assert fast.arrived[0] < slow.hung_up[0] - 1.5, (fast.arrived[0] - slow.arrived[0], cut_after_s)
    assert slow.most_open == 1  # its retry came after the cut, never beside it


@asynccontextmanager
async def slow_and_fast(
    make_api: MakeApi, database_url: str, *, slots: int, tenant_slots: int, slow_hooks: int
) -> AsyncIterator[tuple[Receiver, Receiver, Api]]:
    """A receiver answering a byte a second, one answering at once, and a server with `slots` delivery
    slots (`tenant_slots` per tenant, 3 s deadlines) where the first tenant has `slow_hooks` due to the slow one."""
    settings = {"webhook_allow_networks": LOCAL, "webhook_timeout_s": 3}
    async with (
        receiving(answer_one_byte_a_second) as slow,
        receiving(answer_ok) as fast,
        make_api(
            database_url=database_url, webhook_concurrency=slots, webhook_tenant_concurrency=tenant_slots, **settings
        ) as api,
    ):
        for _ in range(slow_hooks):
            await submit_completed_hook(api.client, slow.url)
        yield slow, fast, api


async def test_one_tenant_holds_at_most_its_share_of_the_delivery_slots(make_api: MakeApi, database_url: str) -> None:
    async with slow_and_fast(make_api, database_url, slots=2, tenant_slots=1, slow_hooks=3) as (slow, fast, api):
        await eventually(lambda: slow.arrived, timeout_s=15)
        await submit_completed_hook(api.other, fast.url)
        await eventually(lambda: fast.arrived, timeout_s=15, describe=lambda _: "the fast receiver waited")
        assert fast.arrived[0] - slow.arrived[0] < 2  # before the first slow one is cut at 3 s
    assert slow.most_open == 1  # three were due; the tenant's one slot held them to one at a time


async def test_the_last_free_slot_is_kept_for_a_tenant_sending_nothing(make_api: MakeApi, database_url: str) -> None:
    """One tenant's slow receivers may hold all but the reserve (1 of 4 here), even where its own share is
    all 4: another tenant's delivery is sent at once, not after that tenant's older backlog."""
    async with slow_and_fast(make_api, database_url, slots=4, tenant_slots=4, slow_hooks=6) as (slow, fast, api):
        await eventually(lambda: len(slow.arrived) >= 3, timeout_s=15)
        submitted = time.monotonic()
        await submit_completed_hook(api.other, fast.url)
        await eventually(lambda: fast.arrived, timeout_s=15, describe=lambda _: "the fast receiver waited")
        assert fast.arrived[0] - submitted < 2  # before any slow one is cut at 3 s
        assert slow.most_open == 3


async def test_an_endless_answer_body_is_not_read(make_api: MakeApi, database_url: str) -> None:
    async with (
        receiving(answer_200_with_an_endless_body) as endless,
        make_api(database_url=database_url, webhook_allow_networks=LOCAL, webhook_timeout_s=10) as api,
    ):
        job_id = await submit_completed_hook(api.client, endless.url)
        [delivery] = await eventually(
            lambda: deliveries_of(api, job_id), lambda rows: rows and rows[0]["status"] == "delivered", timeout_s=8
        )
        await eventually(lambda: endless.hung_up, timeout_s=5)
    assert delivery["attempts"] == 1 and delivery["last_error"] is None
    assert endless.hung_up[0] - endless.arrived[0] < 3
