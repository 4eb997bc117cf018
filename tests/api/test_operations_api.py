from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from tests.api.conftest import Api, MakeApi
from tests.conftest import PG_URL

from inferline.clock import utcnow
from inferline.jobs.schedules import fire_due_schedules, tick_key
from inferline.schema import schedules


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.anonymous.get("/healthz")).json() == {"status": "ok"}
    ready = await api.anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_readiness_fails_when_the_schema_is_behind(api: Api) -> None:
    async with api.services.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'old'")
    ready = await api.anonymous.get("/readyz")
    assert ready.status_code == 503 and "inferline db upgrade" in ready.json()["detail"]


async def test_metrics_show_submissions_finishes_and_queue_depth(idle_api: Api) -> None:
    await idle_api.submit(input={"message": "m"})
    await idle_api.submit(input={"message": "m"}, priority=1)
    text = (await idle_api.anonymous.get("/metrics")).text
    assert 'inferline_jobs_submitted_total{kind="echo"} 2.0' in text
    assert 'inferline_queue_depth{kind="echo",priority="1"} 1.0' in text
    assert 'inferline_queue_depth{kind="echo",priority="3"} 1.0' in text
    assert "inferline_http_request_seconds_count" in text


async def test_responses_carry_a_request_id(api: Api) -> None:
    given = await api.anonymous.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert given.headers["x-request-id"] == "abc123"
    made = await api.anonymous.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32


async def test_schedules_are_created_listed_and_deleted_per_tenant(idle_api: Api) -> None:
    body = {"cron": "*/5 * * * *", "kind": "echo", "input": {"message": "tick"}, "name": "five"}
    created = await idle_api.client.post("/api/v1/schedules", json=body)
    assert created.status_code == 201
    schedule = created.json()
    assert schedule["template"]["input"] == {"message": "tick", "steps": 1, "step_s": 0.0, "fail_first": 0}
    assert schedule["next_run_at"].endswith(("0:00Z", "5:00Z"))
    listing = (await idle_api.client.get("/api/v1/schedules")).json()
    assert [item["id"] for item in listing["items"]] == [schedule["id"]]
    assert (await idle_api.other.get("/api/v1/schedules")).json()["items"] == []
    assert (await idle_api.other.delete(f"/api/v1/schedules/{schedule['id']}")).status_code == 404
    assert (await idle_api.client.delete(f"/api/v1/schedules/{schedule['id']}")).status_code == 204
    assert (await idle_api.client.delete(f"/api/v1/schedules/{schedule['id']}")).status_code == 404


async def test_a_bad_cron_or_template_is_422(idle_api: Api) -> None:
    bad_cron = await idle_api.client.post(
        "/api/v1/schedules", json={"cron": "every day", "kind": "echo", "input": {"message": "m"}}
    )
    assert bad_cron.status_code == 422 and bad_cron.json()["field"] == "cron"
    bad_input = await idle_api.client.post("/api/v1/schedules", json={"cron": "* * * * *", "kind": "echo", "input": {}})
    assert bad_input.status_code == 422 and bad_input.json()["field"] == "input.message"
    no_url = await idle_api.client.post(
        "/api/v1/schedules",
        json={"cron": "* * * * *", "kind": "echo", "input": {"message": "m"}, "webhook_events": ["completed"]},
    )
    assert no_url.status_code == 422 and no_url.json()["field"] == "webhook"


async def test_no_idempotency_key_a_tenant_sends_keeps_any_tenants_schedule_from_firing(
    make_api: MakeApi, database_url: str
) -> None:
    async with make_api(workers=0, database_url=database_url) as api:
        body = {"cron": "* * * * *", "kind": "echo", "input": {"message": "tick"}}
        mine = (await api.client.post("/api/v1/schedules", json=body)).json()
        theirs = (await api.other.post("/api/v1/schedules", json=body)).json()
        due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
        async with api.services.engine.begin() as conn:
            await conn.execute(sa.update(schedules).values(next_run_at=due))
        job = {"kind": "echo", "input": {"message": "m"}}
        # The key of the tick's job, and what it would be without the server's prefix: a tenant may not
        # take the first, and the second is only its own.
        for key, status in ((tick_key(mine["id"], due), 422), (tick_key(mine["id"], due).split(":", 1)[1], 201)):
            response = await api.client.post("/api/v1/jobs", json=job, headers={"Idempotency-Key": key})
            assert response.status_code == status, response.text
        refused = await api.client.post("/api/v1/jobs", json=job, headers={"Idempotency-Key": "café".encode()})
        assert refused.status_code == 422 and refused.json()["field"] == "header.idempotency-key"
        assert await fire_due_schedules(api.services.submitter) == 2
        for client, schedule in ((api.client, mine), (api.other, theirs)):
            [after] = (await client.get("/api/v1/schedules")).json()["items"]
            assert datetime.fromisoformat(after["next_run_at"]) > utcnow()
            fired = (await client.get(f"/api/v1/jobs/{after['last_job_id']}")).json()
            assert fired["schedule_id"] == schedule["id"]


@pytest.mark.postgres
async def test_a_database_that_stops_answering_is_a_503_to_retry_not_a_500(make_api: MakeApi, pg_url: str) -> None:
    """The database refuses connections (as while it restarts): a route that reads it and the key check
    of `/metrics` behind a key say 503 with Retry-After, and nothing of the driver's text."""
    name = make_url(pg_url).database
    async with make_api(workers=0, database_url=pg_url, metrics_require_key=True, api_key_cache_s=0) as api:
        assert (await api.client.get("/api/v1/jobs")).status_code == 200
        admin = await asyncpg.connect(make_url(PG_URL).set(drivername="postgresql").render_as_string(False))
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            for path in ("/api/v1/jobs", "/metrics"):
                answer = await api.client.get(path)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.headers["retry-after"] == "5"
                assert "try again" in answer.json()["detail"] and name not in answer.text
            assert (await api.anonymous.get("/readyz")).status_code == 503
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
        assert (await api.client.get("/metrics")).status_code == 200  # back when it is
