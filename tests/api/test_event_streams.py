"""Job event streams over real HTTP (uvicorn on 127.0.0.1): keepalives, lifetime, resume, per-tenant
slots, the shared poller's query rate, and the CLI following a job across stream lifetimes.

httpx's ASGI transport answers only once the app has finished the response, so streams that outlive
a job's end, and client disconnects, need a real server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from tests.helpers import eventually

from inferline.api.app import create_app
from inferline.bootstrap import Services
from inferline.cli.common import follow_jobs
from inferline.config import Settings
from inferline.tenants import create_key


@dataclass
class Live:
    url: str
    services: Services
    keys: dict[str, str]

    def client(self, tenant: str = "default", **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=httpx.Timeout(10, read=10), **kwargs)

    async def submit(self, tenant: str = "default", **body: Any) -> str:
        async with self.client(tenant) as client:
            response = await client.post("/api/v1/jobs", json={"kind": "echo", "input": {"message": "m"}} | body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id


MakeLive = Callable[..., Any]


@pytest.fixture
def make_live(make_settings: Callable[..., Settings]) -> MakeLive:
    @asynccontextmanager
    async def live(*, workers: int = 0, **overrides: Any) -> AsyncIterator[Live]:
        settings = make_settings(**overrides)
        app = create_app(settings, workers=workers)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            await eventually(lambda: server.started or serving.done(), timeout_s=30)
            assert server.started, "the server did not start"
            services: Services = app.state.services
            _, other_key = await create_key(services.engine, "other")
            keys = {"default": (settings.data_dir / "admin.key").read_text().strip(), "other": other_key}
            port = server.servers[0].sockets[0].getsockname()[1]
            yield Live(f"http://127.0.0.1:{port}", services, keys)
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 30)

    return live


@dataclass
class Received:
    events: list[tuple[str, str, dict[str, Any]]]  # (id, name, job)
    comments: list[str]
    retry: str | None
    ended: bool


async def read_stream(response: httpx.Response, *, until: Callable[[Received], bool] | None = None) -> Received:
    """The stream's events, comments and `retry:` hint, until it ends or `until` holds. The lines are
    read through one iterator per response, kept on it, so that a later call goes on where this one
    stopped (an abandoned line iterator would close the response when it is collected)."""
    lines = response.extensions.setdefault("test_lines", response.aiter_lines())
    seen = Received([], [], None, ended=False)
    fields: dict[str, str] = {}
    async for line in lines:
        if line.startswith(":"):
            seen.comments.append(line[1:].strip())
        elif line.startswith("retry: "):
            seen.retry = line[7:]
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif "data" in fields:
            seen.events.append((fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])))
            fields = {}
        if until is not None and until(seen):
            return seen
    seen.ended = True
    return seen


async def test_a_quiet_stream_gets_ping_comments(make_live: MakeLive, database_url: str) -> None:
    async with make_live(database_url=database_url, events_keepalive_s=0.2) as live:
        job_id = await live.submit()  # no workers: it stays queued, and its stream stays quiet
        async with live.client() as client, client.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
            started = time.monotonic()
            seen = await asyncio.wait_for(read_stream(response, until=lambda s: len(s.comments) >= 2), 10)
        assert seen.comments[:2] == ["ping", "ping"]
        assert [(name, job["status"]) for _, name, job in seen.events] == [("status", "queued")]
        assert time.monotonic() - started >= 0.3  # paced by the setting, not a burst


async def test_a_stream_ends_at_its_lifetime_with_a_retry_hint(make_live: MakeLive) -> None:
    async with make_live(events_max_stream_s=0.5, events_keepalive_s=10) as live:
        job_id = await live.submit()
        async with live.client() as client, client.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
            started = time.monotonic()
            seen = await asyncio.wait_for(read_stream(response), 10)
        assert seen.ended and seen.retry is not None and int(seen.retry) > 0
        assert 0.4 <= time.monotonic() - started < 5
        assert [job["status"] for _, _, job in seen.events] == ["queued"]


async def test_a_stream_resumed_from_last_event_id_sends_only_what_changed(make_live: MakeLive) -> None:
    async with make_live(events_max_stream_s=0.4) as live, live.client() as client:
        job_id = await live.submit()
        url = f"/api/v1/jobs/{job_id}/events"
        async with client.stream("GET", url) as response:
            first = await read_stream(response)
        [(last_id, _, _)] = first.events
        assert last_id

        async with client.stream("GET", url, headers={"Last-Event-ID": last_id}) as response:
            unchanged = await read_stream(response)
        assert unchanged.ended and unchanged.events == []  # nothing new: only the lifetime's end

        assert (await client.post(f"/api/v1/jobs/{job_id}/cancel")).status_code == 200
        async with client.stream("GET", url, headers={"Last-Event-ID": last_id}) as response:
            changed = await read_stream(response)
        assert [(name, job["status"]) for _, name, job in changed.events] == [("status", "canceled")]
        assert changed.retry is None  # it ended with the job, not with its lifetime

        async with client.stream("GET", url, headers={"Last-Event-ID": changed.events[0][0]}) as response:
            seen_all = await read_stream(response)
        assert seen_all.events == [] and seen_all.retry is None

        async with client.stream("GET", url, headers={"Last-Event-ID": "not-one-of-ours"}) as response:
            fresh = await read_stream(response)
        assert [job["status"] for _, _, job in fresh.events] == ["canceled"]


async def test_a_tenant_past_its_stream_cap_gets_429_until_a_client_disconnects(make_live: MakeLive) -> None:
    async with make_live(events_max_streams_per_tenant=2) as live:
        jobs = [await live.submit() for _ in range(3)]
        other_job = await live.submit("other")
        async with live.client() as first, live.client() as third:
            streams = [first.stream("GET", f"/api/v1/jobs/{job_id}/events") for job_id in jobs[:2]]
            for stream in streams:
                response = await stream.__aenter__()
                await read_stream(response, until=lambda s: len(s.events) == 1)

            refused = await third.get(f"/api/v1/jobs/{jobs[2]}/events")
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert "events_max_streams_per_tenant" in refused.json()["detail"]
            async with live.client("other") as other, other.stream("GET", f"/api/v1/jobs/{other_job}/events") as ok:
                assert ok.status_code == 200  # the cap is per tenant

            await streams[0].__aexit__(None, None, None)  # the client goes away mid-stream
            await eventually(lambda: live.services.watchers.streams("default") == 1, timeout_s=10)
            async with third.stream("GET", f"/api/v1/jobs/{jobs[2]}/events") as admitted:
                assert admitted.status_code == 200
            await streams[1].__aexit__(None, None, None)
        await eventually(lambda: live.services.watchers.streams("default") == 0, timeout_s=10)


async def test_fifty_streams_share_one_query_per_poll(make_live: MakeLive, database_url: str) -> None:
    async with make_live(database_url=database_url, events_poll_s=0.1) as live:
        jobs = [await live.submit() for _ in range(50)]
        statements: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        async with live.client(limits=httpx.Limits(max_connections=60)) as client:
            streams = [client.stream("GET", f"/api/v1/jobs/{job_id}/events") for job_id in jobs]
            for stream in streams:
                await read_stream(await stream.__aenter__(), until=lambda s: len(s.events) == 1)
            sa.event.listen(live.services.engine.sync_engine, "before_cursor_execute", count)
            await asyncio.sleep(2.0)
            sa.event.remove(live.services.engine.sync_engine, "before_cursor_execute", count)
            for stream in streams:
                await stream.__aexit__(None, None, None)
        reads = [s for s in statements if "FROM jobs" in s]
        # 20 ticks in 2 s, one query each (nothing changed); a poll per stream would be 1,000.
        assert 5 <= len(reads) <= 30, len(reads)


async def test_the_cli_follows_a_job_across_stream_lifetimes(make_live: MakeLive) -> None:
    async with make_live(workers=1, events_max_stream_s=0.3) as live:
        job_id = await live.submit(input={"message": "m", "steps": 6, "step_s": 0.25})
        seen: list[dict[str, Any]] = []
        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.keys['default']}"}) as client:
            [last] = await asyncio.to_thread(follow_jobs, client, [job_id], lambda _, job: seen.append(job))
        assert last["status"] == "succeeded"
        statuses = [job["status"] for job in seen]
        assert statuses.count("succeeded") == 1 and len(seen) == len({json.dumps(job) for job in seen})
