"""Bulk batches through the API: records of JSONL and CSV files upserted into a collection by their
custom_id (real e5 embeddings, the real embedded index), their error file, cancel, retry, a resume from a
checkpoint, and tenants. One test runs on both engines; the rest on SQLite."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from tests.api.conftest import Api, MakeApi
from tests.event_brokers import outbox_events
from tests.helpers import eventually

from inferline import db
from inferline.batches.kind import BatchInput, run_batch
from inferline.batches.model import IN_PROGRESS, Batch
from inferline.batches.store import BatchStore
from inferline.ids import new_id
from inferline.jobs.model import JSON
from inferline.jobs.testing import MemoryContext
from inferline.schema import batch_records, jobs, webhook_deliveries

ROLES = ["welder", "nurse", "accountant", "translator", "electrician", "barista"]
CITIES = ["Seoul", "Busan", "Incheon", "Daegu", "Gwangju"]


def posting(i: int) -> dict[str, Any]:
    role, city = ROLES[i % len(ROLES)], CITIES[i % len(CITIES)]
    text = f"{role.title()} wanted in {city}: posting {i}, {i % 7 + 1} years of experience, shift {i % 3}."
    return {"custom_id": f"job-{i}", "text": text, "metadata": {"years": i % 7 + 1, "city": city}}


SOURDOUGH = {"custom_id": "job-bread", "text": "Sourdough baker for an early morning bakery shift.", "metadata": {}}


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


async def upload(api: Api, name: str, content: bytes, client: Any = None) -> str:
    response = await (client or api.client).post("/api/v1/files", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    file_id: str = response.json()["id"]
    return file_id


async def collection(api: Api, name: str = "jobs", **body: Any) -> dict[str, Any]:
    response = await api.client.post("/api/v1/collections", json={"name": name} | body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def start(api: Api, file_id: str, **body: Any) -> dict[str, Any]:
    response = await api.client.post("/api/v1/batches", json={"input_file_id": file_id, "collection": "jobs"} | body)
    assert response.status_code == 202, response.text
    batch: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"/api/v1/batches/{batch['id']}"
    return batch


async def finished(api: Api, batch: dict[str, Any]) -> dict[str, Any]:
    await api.wait(batch["job_id"])
    found: dict[str, Any] = (await api.client.get(f"/api/v1/batches/{batch['id']}")).json()
    return found


async def lines_of(api: Api, file_id: str) -> list[dict[str, Any]]:
    response = await api.client.get(f"/api/v1/files/{file_id}/content")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


async def version(api: Api, name: str = "jobs") -> int:
    found: int = (await api.client.get(f"/api/v1/collections/{name}")).json()["version"]
    return found


async def count_jobs(api: Api, kind: str) -> int:
    async with db.read(api.services.engine) as conn:
        found = await conn.scalar(sa.select(sa.func.count()).select_from(jobs).where(jobs.c.kind == kind))
    return int(found or 0)


@pytest.fixture
async def batch_api(make_api: MakeApi) -> AsyncIterator[Api]:
    async with make_api(webhook_allow_networks=["127.0.0.0/8"]) as started:
        yield started


async def test_a_jsonl_batch_upserts_its_records_and_a_rerun_costs_nothing(
    make_api: MakeApi, database_url: str
) -> None:
    records = [posting(i) for i in range(24)] + [SOURDOUGH]
    async with make_api(database_url=database_url, webhook_allow_networks=["127.0.0.0/8"]) as api:
        await collection(api, fields={"years": "int", "city": "keyword"})
        file_id = await upload(api, "postings.jsonl", jsonl(records))
        created = await start(api, file_id, chunk_records=10, webhook="http://127.0.0.1:9/hook")
        assert created["status"] == "validating" and created["request_counts"]["completed"] == 0
        done = await finished(api, created)
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": 25, "completed": 25, "failed": 0}
        assert done["error_file_id"] is None and done["completed_at"] is not None
        output = await lines_of(api, done["output_file_id"])
        assert [entry["custom_id"] for entry in output] == [record["custom_id"] for record in records]
        assert [entry["line"] for entry in output] == list(range(1, 26))
        documents = (await api.client.get("/api/v1/collections/jobs/documents?limit=100")).json()["items"]
        assert len(documents) == 25 and {d["status"] for d in documents} == {"ready"}
        # Indexed by the batch job itself: no ingest job, no file per record.
        assert {(d["job_id"], d["file_id"], d["content_type"]) for d in documents} == {
            (done["job_id"], None, "text/plain")
        }
        assert await count_jobs(api, "ingest") == 0
        by_id = {d["external_id"]: d for d in documents}
        assert by_id["job-3"]["metadata"] == {"years": 4, "city": "Daegu"}
        one = await api.client.get(f"/api/v1/collections/jobs/documents/{by_id['job-3']['id']}")
        assert one.status_code == 200 and one.json() == by_id["job-3"]
        hits = (
            await api.client.post("/api/v1/collections/jobs/search", json={"query": "sourdough", "mode": "keyword"})
        ).json()["hits"]
        assert hits[0]["document_id"] == by_id["job-bread"]["id"]
        years = {"query": "wanted", "filter": {"years": 4}, "mode": "keyword", "limit": 100}
        filtered = (await api.client.post("/api/v1/collections/jobs/search", json=years)).json()["hits"]
        assert {hit["document_id"] for hit in filtered} == {by_id[f"job-{i}"]["id"] for i in range(24) if i % 7 == 3}
        async with db.read(api.services.engine) as conn:
            sent = (await conn.execute(sa.select(webhook_deliveries.c.payload))).scalars().all()
        assert [(p["type"], p["data"]["id"], p["data"]["request_counts"]["completed"]) for p in sent] == [
            ("batch.completed", done["id"], 25)
        ]

        # The same file again: every record unchanged, so no document is touched (none indexed again), and
        # the collection's version advanced exactly once (its cached searches retired).
        before = await version(api)
        again = await finished(api, await start(api, file_id))
        assert again["status"] == "completed" and again["request_counts"] == {"total": 25, "completed": 25, "failed": 0}
        unchanged = (await api.client.get("/api/v1/collections/jobs/documents?limit=100")).json()["items"]
        assert unchanged == documents
        assert await count_jobs(api, "ingest") == 0
        assert await version(api) == before + 1
        listed = (await api.client.get("/api/v1/batches?limit=1")).json()
        assert [b["id"] for b in listed["items"]] == [again["id"]] and listed["next_cursor"]
        rest = (await api.client.get(f"/api/v1/batches?limit=5&cursor={listed['next_cursor']}")).json()
        assert [b["id"] for b in rest["items"]] == [done["id"]] and rest["next_cursor"] is None
        assert (await api.client.post(f"/api/v1/batches/{done['id']}/retry")).status_code == 409  # none failed


async def test_csv_with_a_template_input_of_the_wrong_type_refusals_and_tenants(batch_api: Api) -> None:
    await collection(batch_api, fields={"years": "int", "remote": "bool"})
    csv_text = (
        "custom_id,title,body,years,remote,company\n"
        'p1,Welder,"Welding steel frames\nat a shipyard",5,true,Hanjin\n'
        "p2,Nurse,Night shifts in a children's hospital,3,false,\n"
        "p3,Barista,Latte art and espresso,many,true,Cafe\n"
        "p4,,,2,false,Nobody\n"
        "p5,Driver,Delivery van,1\n"
    )
    done = await finished(
        batch_api,
        await start(batch_api, await upload(batch_api, "jobs.csv", csv_text.encode()), text_template="{title}\n{body}"),
    )
    assert done["status"] == "completed" and done["request_counts"] == {"total": 5, "completed": 2, "failed": 3}
    assert await lines_of(batch_api, done["error_file_id"]) == [
        {"custom_id": "p3", "line": 5, "error": "metadata.years: expected int, got 'many'"},
        {"custom_id": "p4", "line": 6, "error": "text: empty"},
        {"custom_id": None, "line": 7, "error": "4 cells where the header has 6"},
    ]
    documents = (await batch_api.client.get("/api/v1/collections/jobs/documents")).json()["items"]
    welder = next(d for d in documents if d["external_id"] == "p1")
    body = "Welding steel frames\nat a shipyard"
    assert welder["metadata"] == {"title": "Welder", "body": body, "years": 5, "remote": True, "company": "Hanjin"}
    query = {"query": "shipyard", "filter": {"remote": True}, "mode": "keyword"}
    hits = (await batch_api.client.post("/api/v1/collections/jobs/search", json=query)).json()["hits"]
    assert [hit["document_id"] for hit in hits] == [welder["id"]]
    assert "Welding steel frames\nat a shipyard" in hits[0]["text"]

    # Input that is not what its type says fails the batch with the reason.
    no_text = await upload(batch_api, "a.csv", b"custom_id,title\n1,Welder\n")
    failed = await finished(batch_api, await start(batch_api, no_text))
    assert failed["status"] == "failed" and failed["request_counts"]["total"] is None
    assert "no column 'text'" in failed["error"], failed
    not_json = await upload(batch_api, "b.jsonl", b"title,body\nWelder,steel\n")
    every = await finished(batch_api, await start(batch_api, not_json))
    assert every["status"] == "failed" and every["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    assert every["error"] == "every record failed (2): see the error file"
    assert all(e["error"].startswith("not JSON") for e in await lines_of(batch_api, every["error_file_id"]))

    # Refusals, and another tenant's batch.
    api = batch_api
    file_id = await upload(api, "p.jsonl", jsonl([posting(0)]))
    batch = await start(api, file_id)
    other = api.other
    assert (await other.get(f"/api/v1/batches/{batch['id']}")).status_code == 404
    assert (await other.get("/api/v1/batches")).json()["items"] == []
    assert (await other.post(f"/api/v1/batches/{batch['id']}/cancel")).status_code == 404
    assert (await other.post(f"/api/v1/batches/{batch['id']}/retry")).status_code == 404
    theirs = await other.post("/api/v1/batches", json={"input_file_id": file_id, "collection": "jobs"})
    assert theirs.status_code == 404 and "collection" in theirs.json()["detail"]
    assert (await other.post("/api/v1/collections", json={"name": "jobs"})).status_code == 201
    not_theirs = await other.post("/api/v1/batches", json={"input_file_id": file_id, "collection": "jobs"})
    assert not_theirs.status_code == 404 and "file" in not_theirs.json()["detail"]
    bad = await api.client.post(
        "/api/v1/batches", json={"input_file_id": file_id, "collection": "jobs", "text_template": "{title"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "text_template"
    private = {"input_file_id": file_id, "collection": "jobs", "webhook": "http://10.0.0.1/hook"}
    refused = await api.client.post("/api/v1/batches", json=private)
    assert refused.status_code == 422 and refused.json()["field"] == "webhook"
    png = await upload(api, "x.png", bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 64)
    assert (
        await api.client.post("/api/v1/batches", json={"input_file_id": png, "collection": "jobs"})
    ).status_code == 415
    await finished(api, batch)
    assert (await api.client.post(f"/api/v1/batches/{batch['id']}/cancel")).status_code == 409  # it has ended


async def test_bad_records_go_to_the_error_file_a_retry_takes_only_them_and_a_cancel_keeps_what_was_done(
    make_api: MakeApi,
) -> None:
    async with make_api(batch_max_record_bytes=200, batch_max_line_bytes=400) as api:
        await collection(api, fields={"years": "int"})
        good = [posting(i) for i in range(6)]
        content = b"".join(
            [
                jsonl(good[:2]),
                b'{"custom_id": "broken", "text": \n',  # line 3
                jsonl([{"custom_id": "m", "text": "Cook", "metadata": ["not", "an", "object"]}]),  # 4
                jsonl([{"custom_id": "e", "text": "   "}]),  # 5
                jsonl([{"custom_id": "y", "text": "Cook", "metadata": {"years": "five"}}]),  # 6
                jsonl([{"custom_id": "long", "text": "x" * 300}]),  # 7: fits its line, over the record limit
                b"\n",  # 8: blank, no record
                jsonl([{"custom_id": "huge", "text": "y" * 500}]),  # 9: over the line limit
                jsonl([{"text": "no id"}]),  # 10
                jsonl(good[2:]),  # 11-14
                b'{"custom_id": "s", "text": "lone \\ud800 surrogate"}\n',  # 15: JSON allows it, UTF-8 does not
                jsonl([{"custom_id": "\x00" + "i" * 30, "text": ""}]),  # 16: an id with a NUL no column holds
                jsonl([{"custom_id": 42, "text": "Baker in Busan"}]),  # 17: a number is an id
            ]
        )
        done = await finished(api, await start(api, await upload(api, "mixed.jsonl", content), chunk_records=4))
        assert done["status"] == "completed" and done["request_counts"] == {"total": 16, "completed": 7, "failed": 9}
        errors = await lines_of(api, done["error_file_id"])
        assert [(e["custom_id"], e["line"]) for e in errors] == [
            (None, 3),
            ("m", 4),
            ("e", 5),
            ("y", 6),
            ("long", 7),
            (None, 9),
            (None, 10),
            ("s", 15),
            ("i" * 30, 16),
        ]
        assert errors[0]["error"].startswith("not JSON")
        assert errors[1]["error"] == "metadata: must be a JSON object"
        assert errors[2]["error"] == "text: empty"
        assert errors[3]["error"] == "metadata.years: expected int, got 'five'"
        assert errors[4]["error"] == "text: over 200 bytes (setting batch_max_record_bytes)"
        assert errors[5]["error"] == "line over 400 bytes"
        assert errors[6]["error"] == "custom_id: missing or not a string"
        assert errors[7]["error"].startswith("the record cannot be used") and "surrogate" in errors[7]["error"]
        assert errors[8]["error"] == "text: empty"
        output = await lines_of(api, done["output_file_id"])
        assert len(output) == 7 and output[-1]["custom_id"] == "42"

        # The retry is a new batch of the 7 failed records only; they fail again, so it fails.
        ingests = await count_jobs(api, "ingest")
        response = await api.client.post(f"/api/v1/batches/{done['id']}/retry")
        assert response.status_code == 202, response.text
        retried = await finished(api, response.json())
        assert retried["retry_of"] == done["id"] and retried["id"] != done["id"]
        assert retried["status"] == "failed" and retried["request_counts"] == {"total": 9, "completed": 0, "failed": 9}
        assert retried["error"] == "every record failed (9): see the error file"
        assert [e["line"] for e in await lines_of(api, retried["error_file_id"])] == [3, 4, 5, 6, 7, 9, 10, 15, 16]
        assert await count_jobs(api, "ingest") == ingests

        # A cancel stops the batch after a chunk; what was done stays done and counted.
        many = await upload(api, "many.jsonl", jsonl([posting(i) for i in range(80)]))
        batch = await start(api, many, chunk_records=4)

        async def current() -> dict[str, Any]:
            found: dict[str, Any] = (await api.client.get(f"/api/v1/batches/{batch['id']}")).json()
            return found

        await eventually(current, lambda b: b["request_counts"]["completed"] >= 8, timeout_s=60)
        response = await api.client.post(f"/api/v1/batches/{batch['id']}/cancel")
        assert response.status_code == 200 and response.json()["status"] in ("canceling", "canceled")
        canceled = await finished(api, batch)
        assert canceled["status"] == "canceled" and canceled["output_file_id"] is None
        kept = canceled["request_counts"]["completed"]
        assert 8 <= kept < 80 and canceled["request_counts"]["failed"] == 0
        documents = (await api.client.get("/api/v1/collections/jobs/documents?limit=500")).json()["items"]
        assert {f"job-{i}" for i in range(kept)} <= {d["external_id"] for d in documents}


class KilledAfterWriting(Exception):
    """The worker dies between a chunk's rows and its checkpoint: the worst moment for a redo."""


class DiesAtCheckpoint(MemoryContext):
    def __init__(self, dies_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dies_at = dies_at

    async def checkpoint(self, state: JSON, *, progress: float | None = None) -> None:
        if len(self.checkpoints) + 1 == self.dies_at:
            raise KilledAfterWriting
        await super().checkpoint(state, progress=progress)


async def test_a_batch_resumed_from_its_checkpoint_redoes_one_chunk_and_counts_exactly(batch_api: Api) -> None:
    api = batch_api
    collection_id = (await collection(api))["id"]
    file_id = await upload(api, "resume.jsonl", jsonl([posting(i) for i in range(20)]))
    deps = api.services.batches
    models = api.services.models
    # checkpoints: validated, chunk 1, chunk 2, dies at chunk 3
    first = DiesAtCheckpoint(4, tenant="default", models=models)
    row = Batch.new(
        id=new_id(),
        tenant="default",
        collection="jobs",
        input_file_id=file_id,
        job_id=first.id,
        chunk_records=5,
        status=IN_PROGRESS,
    )
    async with db.write(deps.engine) as conn:
        await BatchStore(conn).add(row)
    data = BatchInput(batch_id=row.id, input_file_id=file_id)
    with pytest.raises(KilledAfterWriting):
        await run_batch(deps, first, data)
    assert first.checkpoints[-1] == {"total": 20, "done": 10, "completed": 10, "failed": 0}
    # chunk 3's records were done (one chunk of text each), not checkpointed; chunk 4's were being embedded
    # ahead meanwhile (all or some of them, by then), none of them indexed
    assert 15 <= len(first.predictions) <= 20 and await deps.search.index.count(collection_id) == 15

    second = MemoryContext(tenant="default", last_checkpoint=first.checkpoints[-1], attempt=2, models=models)
    result = await run_batch(deps, second, data)
    assert result == {"batch_id": row.id, "completed": 20, "failed": 0}
    assert second.checkpoints[0] == {"total": 20, "done": 15, "completed": 15, "failed": 0}  # chunk 3 redone
    # The redo found chunk 3's records unchanged: only chunk 4 was embedded, nothing was indexed twice.
    assert len(second.predictions) == 5 and await deps.search.index.count(collection_id) == 20
    assert await count_jobs(api, "ingest") == 0
    async with db.read(deps.engine) as conn:
        done = await BatchStore(conn).batch("default", row.id)
        rows = await conn.scalar(sa.select(sa.func.count()).where(batch_records.c.batch_id == row.id))
    assert done is not None and (done.status, done.total, done.completed, done.failed) == ("completed", 20, 20, 0)
    assert rows == 20
    documents = (await api.client.get("/api/v1/collections/jobs/documents?limit=100")).json()["items"]
    assert sorted(d["external_id"] for d in documents) == sorted(f"job-{i}" for i in range(20))


async def test_finished_batches_write_their_events_to_the_outbox(make_api: MakeApi) -> None:
    # The broker is unreachable: the events stay in the outbox, where the test reads them.
    async with make_api(events_broker="redis://127.0.0.1:1/0") as api:
        await collection(api)
        done = await finished(api, await start(api, await upload(api, "p.jsonl", jsonl([posting(0), posting(1)]))))
        every = await finished(api, await start(api, await upload(api, "b.jsonl", b"title,body\nWelder,steel\n")))
        refused = await finished(api, await start(api, await upload(api, "a.csv", b"custom_id,title\n1,Welder\n")))
        written = await outbox_events(api.services.engine)
    assert (done["status"], every["status"], refused["status"]) == ("completed", "failed", "failed")
    batches = [e for e in written if e["type"].startswith("batch.")]
    expected = [("batch.completed", done["id"]), ("batch.failed", every["id"])]
    assert [(e["type"], e["subject"]) for e in batches] == expected
    for event, view in zip(batches, (done, every), strict=True):
        assert event["tenant"] == "default" and event["data"]["id"] == view["id"]
        assert event["data"]["status"] == view["status"] and event["data"]["request_counts"] == view["request_counts"]
    # A batch refused before its records were read ends as its job's failure.
    assert [e["type"] for e in written if e["subject"] == refused["job_id"]][-1] == "job.failed"
