"""`/api/v1/monitor` on both engines: metrics history scoped by tenant, alert rules (an admin's) with
hostile inputs, alerts, health, and the sampler and evaluator started by the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.api.conftest import Api, MakeApi
from tests.helpers import eventually

from inferline import leases
from inferline.monitor import presence, sampler
from inferline.monitor.evaluator import LEASE as EVALUATOR_LEASE
from inferline.monitor.evaluator import Evaluator
from inferline.monitor.rules import ensure_default_rules
from inferline.monitor.sampler import Sampler, SamplerConfig

HOOK = {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/", "secret": "whsec_AAAA"}}


@pytest.fixture
async def api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    """No workers: jobs stay queued, and the monitor runs only when a test steps it."""
    async with make_api(
        workers=0, database_url=database_url, plugins=["tests.plugins.kinds"], monitor_channels=HOOK
    ) as started:
        yield started


@pytest.fixture
async def sqlite_api(make_api: MakeApi) -> AsyncIterator[Api]:
    """The same on SQLite only: for checks of input that never reaches the database (the engines cannot
    differ there, and a PostgreSQL database per case costs a second)."""
    async with make_api(workers=0, plugins=["tests.plugins.kinds"], monitor_channels=HOOK) as started:
        yield started


async def held(api: Api, name: str) -> leases.Lease:
    """The lease of an elected loop, taken by the test as the process that steps it."""
    lease = leases.Lease(name, "test")
    assert await leases.acquire(api.services.engine, lease.name, lease.owner, ttl_s=60)
    return lease


async def sample(api: Api) -> None:
    monitor = api.services.monitor
    config = SamplerConfig(monitor.sample_s, monitor.presence_s, monitor.retention_s)
    await Sampler(monitor.engine, monitor.metrics, monitor.data_dir, config).step(await held(api, sampler.LEASE))


def values(body: dict[str, Any]) -> dict[str, float]:
    return {",".join(f"{k}={v}" for k, v in sorted(s["labels"].items())): s["points"][-1][1] for s in body["series"]}


async def test_a_tenant_reads_its_own_job_metrics_and_an_admin_the_fleets(api: Api) -> None:
    for _ in range(2):
        await api.submit(input={"message": "a"})
    assert (await api.other.post("/api/v1/jobs", json={"kind": "echo", "input": {"message": "b"}})).status_code == 201
    await sample(api)
    query = "/api/v1/monitor/metrics?name=queue_depth&labels=status=queued&since=10m"
    mine = await api.other.get(query)
    assert mine.status_code == 200, mine.text
    assert values(mine.json()) == {"kind=echo,status=queued": 1.0}
    assert values((await api.client.get(query)).json()) == {"kind=echo,status=queued": 3.0}
    assert (await api.other.get("/api/v1/monitor/metrics?name=cpu_percent")).status_code == 403
    cpu = (await api.client.get("/api/v1/monitor/metrics?name=cpu_percent&step=60")).json()
    # Minute rows for step 60; the minute not rolled up yet comes from the raw samples.
    assert cpu["step_s"] == 60 and cpu["resolution_s"] == 60 and len(cpu["series"]) == 1
    disk = values((await api.client.get("/api/v1/monitor/metrics?name=disk_free_ratio")).json())
    assert 0 < disk[""] <= 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("name=nope", "name"),
        ("name=queue_depth&since=yesterday", "since"),
        ("name=queue_depth&since=500d", "since"),
        ("name=queue_depth&since=2020-01-01T00:00:00", "since"),
        ("name=queue_depth&since=7d&step=1", "step"),
        ("name=queue_depth&labels=KIND=x", "labels"),
        ("name=queue_depth&labels=" + ",".join(f"a{i}=x" for i in range(9)).replace("0", "o"), "labels"),
        ("name=queue_depth&step=0", "query.step"),
    ],
)
async def test_metric_queries_are_bounded(sqlite_api: Api, query: str, field: str) -> None:
    api = sqlite_api
    response = await api.client.get(f"/api/v1/monitor/metrics?{query}")
    assert response.status_code == 422 and response.json()["field"] == field, response.text


RULE = {
    "name": "deep queue",
    "metric": "queue_depth",
    "labels": {"status": "queued"},
    "aggregation": "avg",
    "comparator": "gt",
    "threshold": 100,
    "for_s": 60,
    "severity": "critical",
    "channels": ["hook"],
    "repeat_s": 600,
}


async def test_rules_are_an_admins_to_create_read_replace_and_delete(api: Api) -> None:
    created = await api.client.post("/api/v1/monitor/rules", json=RULE)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["window_s"] == 60 and rule["enabled"] and not rule["builtin"]
    assert (await api.client.post("/api/v1/monitor/rules", json=RULE)).status_code == 409  # same name
    url = f"/api/v1/monitor/rules/{rule['id']}"
    for method, body in (("GET", None), ("PUT", RULE), ("DELETE", None)):
        assert (await api.other.request(method, url, json=body)).status_code == 403
    assert (await api.other.post("/api/v1/monitor/rules", json=RULE)).status_code == 403
    replaced = await api.client.put(url, json=RULE | {"threshold": 5, "enabled": False})
    assert replaced.status_code == 200 and replaced.json()["threshold"] == 5
    assert (await api.client.get(url)).json()["enabled"] is False
    assert [r["name"] for r in (await api.client.get("/api/v1/monitor/rules")).json()["items"]] == ["deep queue"]
    assert (await api.client.delete(url)).status_code == 204
    assert (await api.client.get(url)).status_code == 404
    assert (await api.client.put(url, json=RULE)).status_code == 404


async def test_a_built_in_rule_is_disabled_not_deleted(api: Api) -> None:
    await ensure_default_rules(api.services.engine, [])
    response = await api.client.delete("/api/v1/monitor/rules/builtin-disk-free")
    assert response.status_code == 409 and "enabled: false" in response.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"comparator": ">"}, "body.comparator"),
        ({"aggregation": "median"}, "body.aggregation"),
        ({"severity": "apocalyptic"}, "body.severity"),
        ({"name": "x" * 101}, "body.name"),
        ({"name": "bad\nname"}, "body.name"),
        ({"name": "bad\x85name"}, "body.name"),  # NEL: a line break to email headers
        ({"name": "bad\u2028name"}, "body.name"),
        ({"name": "bad\u2029name"}, "body.name"),
        ({"metric": "nope"}, "metric"),
        ({"labels": {f"l{i}": "x" for i in range(9)}}, "body.labels"),
        ({"labels": {"Kind; DROP": "x"}}, "body.labels"),
        ({"channels": ["pager"]}, "channels"),
        ({"channels": ["hook"] * 11}, "body.channels"),
        ({"for_s": -1}, "body.for_s"),
        ({"window_s": 10**9}, "body.window_s"),
        ({"repeat_s": 10**9}, "body.repeat_s"),
        ({"threshold": "1e999"}, "body.threshold"),
        ({"extra": 1}, "body.extra"),
    ],
)
async def test_hostile_rule_fields_are_422_naming_the_field(
    sqlite_api: Api, change: dict[str, Any], field: str
) -> None:
    api = sqlite_api
    response = await api.client.post("/api/v1/monitor/rules", json=RULE | change)
    assert response.status_code == 422 and response.json()["field"] == field, response.text


async def test_alerts_and_health_are_an_admins(api: Api) -> None:
    for path in ("/api/v1/monitor/alerts", "/api/v1/monitor/health"):
        assert (await api.other.get(path)).status_code == 403
    assert (await api.client.get("/api/v1/monitor/alerts?state=firing")).json() == {"items": [], "next_cursor": None}
    assert (await api.client.get("/api/v1/monitor/alerts?state=burning")).status_code == 422
    health = (await api.client.get("/api/v1/monitor/health")).json()
    statuses = {c["name"]: c["status"] for c in health["components"]}
    assert statuses == {"database": "ok", "disk": "ok", "blobs": "ok", "channel:hook": "unknown"}
    assert health["status"] == "ok"
    monitor = api.services.monitor
    evaluator = Evaluator(monitor.engine, monitor.notifier, monitor.metrics, monitor.retention_s)
    await evaluator.step(await held(api, EVALUATOR_LEASE))
    health = (await api.client.get("/api/v1/monitor/health")).json()
    assert {c["name"]: c["detail"] for c in health["components"]}["channel:hook"] == "closed"


async def test_health_is_down_when_the_schema_is_behind(api: Api) -> None:
    async with api.services.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'old'")
    health = (await api.client.get("/api/v1/monitor/health")).json()
    assert health["status"] == "down" and health["components"][0]["status"] == "down"
    assert (await api.anonymous.get("/readyz")).status_code == 503


async def test_the_server_runs_the_sampler_and_the_evaluator(make_api: MakeApi, database_url: str) -> None:
    settings = {"monitor_enabled": True, "monitor_sample_s": 0.1, "monitor_evaluate_s": 0.1, "monitor_presence_s": 0.1}
    async with make_api(workers=1, database_url=database_url, **settings) as api:

        async def workers() -> dict[str, float]:
            return values((await api.client.get("/api/v1/monitor/metrics?name=workers&since=5m&step=1")).json())

        assert await eventually(workers, lambda found: found.get("") == 1.0, timeout_s=10)
        rules = (await api.client.get("/api/v1/monitor/rules")).json()["items"]
        assert len([rule for rule in rules if rule["builtin"]]) == 5


async def test_a_tenants_metric_queries_at_a_time_are_bounded(api: Api) -> None:
    reads = api.services.monitor.metric_reads
    query = "/api/v1/monitor/metrics?name=queue_depth"
    with reads.hold("other"), reads.hold("other"):  # two of its dashboards' queries still running
        refused = await api.other.get(query)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert (await api.client.get(query)).status_code == 200
    assert (await api.other.get(query)).status_code == 200


async def test_an_api_process_without_slots_samples_and_evaluates(make_api: MakeApi, database_url: str) -> None:
    """Workers in processes of their own: the API samples them, and sees them go."""
    settings = {"monitor_enabled": True, "monitor_sample_s": 0.1, "monitor_evaluate_s": 0.1, "monitor_presence_s": 0.1}
    async with make_api(workers=0, database_url=database_url, **settings) as api:
        engine = api.services.engine

        async def latest(name: str) -> dict[str, float]:
            return values((await api.client.get(f"/api/v1/monitor/metrics?name={name}&since=5m&step=1")).json())

        assert await eventually(lambda: latest("workers"), lambda found: found.get("") == 0.0, timeout_s=10)
        assert "" in await latest("worker_heartbeat_age_s")
        stopped = asyncio.Event()  # a worker process elsewhere: its presence reports
        reports = presence.run_presence(
            engine, "worker-elsewhere", workers=4, models=api.services.models, every_s=0.1, stop=stopped
        )
        elsewhere = asyncio.create_task(reports)
        assert await eventually(lambda: latest("worker_slots"), lambda found: found.get("") == 4.0, timeout_s=10)
        stopped.set()  # its clean stop
        await elsewhere
        assert await eventually(lambda: latest("workers"), lambda found: found.get("") == 0.0, timeout_s=10)
        assert await leases.holder(engine, sampler.LEASE) is not None
        assert await leases.holder(engine, EVALUATOR_LEASE) is not None
    assert await leases.holder(engine, sampler.LEASE) is None  # given up at the clean stop
    await engine.dispose()  # the read above reopened the stopped app's pool
