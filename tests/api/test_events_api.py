"""The server writes its jobs' events and publishes them; what the broker refuses is an admin's to see and
retry through the API. The broker is the real Redis, made to refuse by a key of the wrong type."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from tests.api.conftest import MakeApi
from tests.event_brokers import real
from tests.helpers import eventually

from inferline.events.redis import stream_key


@pytest.mark.mariadb_too
async def test_refused_events_are_listed_for_admins_and_a_retry_publishes_them(
    make_api: MakeApi, database_url: str
) -> None:
    async with real("redis") as broker:
        client = aioredis.from_url(broker.url)
        await client.set(stream_key(broker.topic), "not a stream")  # every XADD: WRONGTYPE
        settings = {"events_broker": broker.url, "events_topic": broker.topic, "events_publish_poll_s": 0.05}
        settings["database_url"] = database_url
        try:
            async with make_api(workers=1, **settings) as api:
                job = await api.submit(input={"message": "hi", "steps": 0})
                await api.wait(job["id"])

                async def letters() -> list[dict[str, object]]:
                    page = await api.client.get("/api/v1/events/dead-letters", params={"limit": 10})
                    assert page.status_code == 200, page.text
                    items: list[dict[str, object]] = page.json()["items"]
                    return items

                items = await eventually(letters, lambda items: len(items) == 3)
                assert {item["type"] for item in items} == {"job.queued", "job.running", "job.succeeded"}
                assert all(item["subject"] == job["id"] and "WRONGTYPE" in str(item["reason"]) for item in items)
                assert (await api.other.get("/api/v1/events/dead-letters")).status_code == 403
                missing = await api.client.post(
                    "/api/v1/events/dead-letters/0190a000-0000-7000-8000-000000000000/retry"
                )
                assert missing.status_code == 404
                first = await api.client.get("/api/v1/events/dead-letters", params={"limit": 1})
                assert first.json()["next_cursor"] is not None
                await client.delete(stream_key(broker.topic))  # the cause is gone
                succeeded = next(item for item in items if item["type"] == "job.succeeded")
                retried = await api.client.post(f"/api/v1/events/dead-letters/{succeeded['id']}/retry")
                assert retried.status_code == 200 and retried.json()["id"] == succeeded["id"]
                kept = await eventually(broker.kept, lambda events: len(events) == 1)
                assert kept[0]["id"] == succeeded["id"] and kept[0]["data"]["status"] == "succeeded"
                assert len(await letters()) == 2

                # Many at once: one type, then the rest; ids kept, oldest failure first.
                assert (await api.other.post("/api/v1/events/dead-letters/retry", json={})).status_code == 403
                bad = await api.client.post("/api/v1/events/dead-letters/retry", json={"limit": 0})
                assert bad.status_code == 422 and bad.json()["field"] == "body.limit"
                naive = await api.client.post(
                    "/api/v1/events/dead-letters/retry", json={"failed_before": "2026-01-01T00:00:00"}
                )
                assert naive.status_code == 422 and naive.json()["field"] == "body.failed_before"
                none_yet = await api.client.post(
                    "/api/v1/events/dead-letters/retry", json={"failed_before": "2000-01-01T00:00:00Z"}
                )
                assert none_yet.json() == {"retried": 0, "ids": []}
                queued = await api.client.post("/api/v1/events/dead-letters/retry", json={"type": "job.queued"})
                [queued_letter] = [item["id"] for item in items if item["type"] == "job.queued"]
                assert queued.json() == {"retried": 1, "ids": [queued_letter]}
                rest = await api.client.post("/api/v1/events/dead-letters/retry", json={"limit": 5})
                [running_letter] = [item["id"] for item in items if item["type"] == "job.running"]
                assert rest.json() == {"retried": 1, "ids": [running_letter]}
                none = await api.client.post("/api/v1/events/dead-letters/retry", json={})
                assert none.json() == {"retried": 0, "ids": []} and await letters() == []
                kept = await eventually(broker.kept, lambda events: len(events) == 3)
                assert [event["id"] for event in kept[1:]] == [queued_letter, running_letter]
        finally:
            await client.aclose()
