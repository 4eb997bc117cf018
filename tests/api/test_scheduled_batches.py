"""Scheduled batches through the API: the job core's cron (and `POST /schedules/{id}/run`) making batches
from a file id or from the new files of an operator's drop folder, each file batched once, hostile
entries of the folder refused, and tenants."""

from __future__ import annotations

import asyncio
import io
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from tests.api.conftest import Api, MakeApi
from tests.api.test_batches_api import collection, finished, jsonl, posting, upload
from tests.helpers import eventually

from inferline import db
from inferline.batches.scheduled import ScheduledBatchInput, run_scheduled_batch
from inferline.clock import utcnow
from inferline.jobs.testing import MemoryContext
from inferline.schema import batch_drop_files, schedules, webhook_deliveries


async def schedule(api: Api, client: Any = None, webhook: str | None = None, **source: Any) -> dict[str, Any]:
    body = {"kind": "scheduled_batch", "cron": "0 2 * * *", "input": {"collection": "jobs"} | source}
    body |= {"webhook": webhook} if webhook else {}
    response = await (client or api.client).post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def run_now(api: Api, schedule_id: str) -> dict[str, Any]:
    """The manual trigger, then the batches its job made, each finished."""
    response = await api.client.post(f"/api/v1/schedules/{schedule_id}/run")
    assert response.status_code == 202, response.text
    return await made_batches(api, response.json()["id"])


async def made_batches(api: Api, job_id: str) -> dict[str, Any]:
    job = await api.wait(job_id)
    assert job["status"] == "succeeded", job
    result: dict[str, Any] = job["result"]
    result["batches"] = [await finished(api, {"id": i, "job_id": await job_of(api, i)}) for i in result["batch_ids"]]
    return result


async def made_batches_of(api: Api, result: dict[str, Any]) -> None:
    """Wait for the batches a scheduled batch's result names to finish."""
    for batch_id in result["batch_ids"]:
        await finished(api, {"id": batch_id, "job_id": await job_of(api, batch_id)})


async def job_of(api: Api, batch_id: str) -> str:
    batch = (await api.client.get(f"/api/v1/batches/{batch_id}")).json()
    job_id: str = batch["job_id"]
    return job_id


async def test_schedules_make_batches_of_a_file_and_of_the_new_files_of_a_drop_folder_each_once(
    make_api: MakeApi, tmp_path: Path
) -> None:
    # One server for both (loading the embedding model is most of a test's time).
    folder = tmp_path / "drop"
    folder.mkdir()
    folders = {"default": {"nightly": str(folder)}}
    settings = {"batch_drop_folders": folders, "batch_drop_settle_s": 0, "webhook_allow_networks": ["127.0.0.0/8"]}
    async with make_api(schedule_poll_s=0.05, **settings) as api:
        await collection(api)
        await a_tick_makes_a_batch_of_its_file_and_the_manual_trigger_another(api)
        await a_drop_folder_run_takes_each_new_file_once_and_refuses_what_is_not_a_regular_file(api, tmp_path, folder)


async def a_tick_makes_a_batch_of_its_file_and_the_manual_trigger_another(api: Api) -> None:
    file_id = await upload(api, "p.jsonl", jsonl([posting(i) for i in range(3)]))
    made = await schedule(api, input_file_id=file_id, webhook="http://127.0.0.1:9/hook")
    async with db.write(api.services.engine) as conn:  # 02:00 has come
        await conn.execute(sa.update(schedules).values(next_run_at=utcnow() - timedelta(seconds=1)))

    async def last_job() -> str | None:
        [found] = (await api.client.get("/api/v1/schedules")).json()["items"]
        return found["last_job_id"]  # type: ignore[no-any-return]

    job_id = await eventually(last_job, lambda found: found is not None, timeout_s=10, interval_s=0.05)
    ticked = await made_batches(api, job_id)
    [batch] = ticked["batches"]
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 3
    assert batch["input_file_id"] == file_id and batch["collection"] == "jobs"
    async with db.read(api.services.engine) as conn:  # the schedule's webhook hears the batch's completion
        sent = (await conn.execute(sa.select(webhook_deliveries.c.payload))).scalars().all()
    assert ("batch.completed", batch["id"]) in [(p["type"], p["data"]["id"]) for p in sent]

    again = await run_now(api, made["id"])
    assert again["batch_ids"] != ticked["batch_ids"] and again["batches"][0]["status"] == "completed"
    [after] = (await api.client.get("/api/v1/schedules")).json()["items"]
    assert after["next_run_at"] == made["next_run_at"]  # the trigger leaves the cron's next tick alone

    # Another tenant's schedule is not found; a template checked like POST /batches.
    assert (await api.other.post(f"/api/v1/schedules/{made['id']}/run")).status_code == 404
    assert (await api.client.post("/api/v1/schedules/nope/run")).status_code == 404
    for bad in ({"input_file_id": file_id, "drop_folder": "nightly"}, {}, {"drop_folder": "../etc"}):
        body = {"kind": "scheduled_batch", "cron": "0 2 * * *", "input": {"collection": "jobs"} | bad}
        assert (await api.client.post("/api/v1/schedules", json=body)).status_code == 422, bad
    body["input"] = {"collection": "jobs", "input_file_id": file_id, "text_template": "{title"}
    refused = await api.client.post("/api/v1/schedules", json=body)
    assert refused.status_code == 422 and "text_template" in refused.text
    # An attempt cut off after it made its batch: the next attempt finds that batch and makes no second.
    cut = MemoryContext(tenant="default")
    data = ScheduledBatchInput(collection="jobs", input_file_id=file_id)
    made_once = await run_scheduled_batch(api.services.batches, cut, data)
    retried = await run_scheduled_batch(api.services.batches, MemoryContext(job=cut.job, attempt=2), data)
    assert retried["batch_ids"] == made_once["batch_ids"]
    await made_batches_of(api, made_once)
    other_job = await run_scheduled_batch(api.services.batches, MemoryContext(tenant="default"), data)
    assert other_job["batch_ids"] != made_once["batch_ids"]  # another run of the schedule: a batch of its own
    await made_batches_of(api, other_job)

    # Refused when made, as its first tick would be: the file is not theirs, a folder not set up, a
    # collection missing.
    body = {"kind": "scheduled_batch", "cron": "0 2 * * *", "input": {"collection": "jobs", "input_file_id": file_id}}
    theirs = await api.other.post("/api/v1/schedules", json=body)
    assert theirs.status_code == 404  # neither the collection nor the file is theirs
    body["input"] = {"collection": "jobs", "drop_folder": "weekly"}
    unset = await api.client.post("/api/v1/schedules", json=body)
    assert unset.status_code == 422 and "drop_folder" in unset.text
    body["input"] = {"collection": "nope", "drop_folder": "nightly"}
    assert (await api.client.post("/api/v1/schedules", json=body)).status_code == 404
    assert len((await api.client.get("/api/v1/schedules")).json()["items"]) == 1  # none of them was kept


def drop(folder: Path, name: str, content: bytes, age_s: float = 0) -> None:
    path = folder / name
    path.write_bytes(content)
    stamp = path.stat().st_mtime - age_s
    os.utime(path, (stamp, stamp))


async def a_drop_folder_run_takes_each_new_file_once_and_refuses_what_is_not_a_regular_file(
    api: Api, tmp_path: Path, folder: Path
) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(jsonl([{"custom_id": "s", "text": "the operator's secret"}]))
    drop(folder, "a.jsonl", jsonl([posting(1), posting(2)]), age_s=20)
    parquet = io.BytesIO()
    pq.write_table(pa.table({"custom_id": ["c1"], "text": ["Cook wanted in Busan"], "years": [2]}), parquet)
    drop(folder, "b.parquet", parquet.getvalue(), age_s=10)  # sniffed as Parquet when it is copied in
    (folder / "link.jsonl").symlink_to(secret)
    (folder / "sub").mkdir()
    drop(folder, ".c.jsonl.partial", b"{")  # still being uploaded, by the write-then-rename convention
    made = await schedule(api, drop_folder="nightly")

    # Two runs at once: each file batched once between them.
    first, second = await asyncio.gather(
        api.client.post(f"/api/v1/schedules/{made['id']}/run"),
        api.client.post(f"/api/v1/schedules/{made['id']}/run"),
    )
    results = [await made_batches(api, response.json()["id"]) for response in (first, second)]
    taken = sorted(item["name"] for result in results for item in result["taken"])
    assert taken == ["a.jsonl", "b.parquet"]  # oldest first, each once
    refused = {item["name"]: item["reason"] for item in results[0]["refused"]}
    assert refused["link.jsonl"].startswith("a symbolic link") and refused["sub"] == "not a regular file"
    batches = [batch for result in results for batch in result["batches"]]
    assert sorted(b["request_counts"]["completed"] for b in batches) == [1, 2]
    hits = await api.client.post("/api/v1/collections/jobs/search", json={"query": "secret", "mode": "keyword"})
    assert hits.json()["hits"] == []
    cook = await api.client.post("/api/v1/collections/jobs/search", json={"query": "Busan cook", "mode": "keyword"})
    assert cook.json()["hits"][0]["text"] == "Cook wanted in Busan"

    assert (await run_now(api, made["id"]))["batch_ids"] == []  # nothing new
    drop(folder, "c.jsonl", jsonl([posting(3)]))
    drop(folder, "d.png", bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 64)
    newer = await run_now(api, made["id"])
    assert [item["name"] for item in newer["taken"]] == ["c.jsonl"]
    assert "d.png" in {item["name"] for item in newer["refused"]}
    assert (await run_now(api, made["id"]))["batch_ids"] == []  # the png is remembered as refused
    async with db.read(api.services.engine) as conn:
        rows = (await conn.execute(sa.select(batch_drop_files))).mappings().all()
    assert sorted((row["name"], row["batch_id"] is None) for row in rows) == [
        ("a.jsonl", False),
        ("b.parquet", False),
        ("c.jsonl", False),
        ("d.png", True),
    ]

    # A folder the tenant has not been given: refused when the schedule is made, and when a run is asked
    # for (a schedule made before the operator took the folder away: here, the default tenant's moved over).
    assert (await api.other.post("/api/v1/collections", json={"name": "jobs"})).status_code == 201
    body = {"kind": "scheduled_batch", "cron": "0 2 * * *", "input": {"collection": "jobs", "drop_folder": "nightly"}}
    refused_made = await api.other.post("/api/v1/schedules", json=body)
    assert refused_made.status_code == 422 and refused_made.json()["field"] == "drop_folder"
    async with db.write(api.services.engine) as conn:
        await conn.execute(sa.update(schedules).where(schedules.c.id == made["id"]).values(tenant="other"))
    refused_run = await api.other.post(f"/api/v1/schedules/{made['id']}/run")
    assert refused_run.status_code == 422 and refused_run.json()["field"] == "drop_folder"
