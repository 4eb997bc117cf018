"""A file's delete against what races it: a job naming the file, its own commit failing, a download."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.responses import Response
from tests.api.conftest import Api, MakeApi
from tests.api.test_files_api import stored, upload

from inferline import db
from inferline.api.routes import files
from inferline.files.service import delete_file
from inferline.files.store import delete_row, hold_files, release_files
from inferline.jobs.submission import JobRequest
from inferline.schema import jobs


@pytest.fixture
async def files_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    async with make_api(workers=0, database_url=database_url, plugins=["tests.plugins.kinds"]) as api:
        yield api


async def test_a_job_naming_a_file_deleted_before_it_is_404_on_every_route(files_api: Api) -> None:
    made = await upload(files_api.client, b"soon gone")
    assert (await files_api.client.delete(f"/api/v1/files/{made['id']}")).status_code == 204
    for headers in ({}, {"Idempotency-Key": "once"}):
        job = {"kind": "record", "input": {"file_id": made["id"]}}
        refused = await files_api.client.post("/api/v1/jobs", json=job, headers=headers)
        assert refused.status_code == 404 and made["id"] in refused.json()["detail"]
    theirs = await upload(files_api.other, b"another tenant's")
    job = {"kind": "record", "input": {"file_id": theirs["id"]}}
    assert (await files_api.client.post("/api/v1/jobs", json=job)).status_code == 404
    listed = (await files_api.client.get("/api/v1/jobs")).json()["items"]
    assert listed == []


async def test_a_delete_waits_for_a_job_insert_holding_its_file_and_then_sees_the_job(files_api: Api) -> None:
    services = files_api.services
    made = await upload(files_api.client, b"held")
    async with services.submitter.transaction() as tx:
        await hold_files(tx.conn, "default", [made["id"]])
        deleting = asyncio.create_task(
            delete_file(services.engine, services.blobs, tenant="default", file_id=made["id"])
        )
        await asyncio.sleep(0.3)  # the delete is waiting on the held row (the write lock on SQLite)
        assert not deleting.done()
        job = await tx.add(JobRequest(kind="record", input={"file_id": made["id"]}), tenant="default")
    with pytest.raises(Exception) as refused:
        await deleting
    assert "in use" in str(refused.value) and job.id in str(refused.value)
    assert (await files_api.client.get(f"/api/v1/files/{made['id']}/content")).content == b"held"


async def test_a_job_insert_waits_for_a_delete_of_its_file_and_then_is_404(files_api: Api) -> None:
    services = files_api.services
    made = await upload(files_api.client, b"deleted first")
    async with db.write(services.engine) as conn:
        await delete_row(conn, tenant="default", file_id=made["id"])
        job = {"kind": "record", "input": {"file_id": made["id"]}}
        submitting = asyncio.create_task(files_api.client.post("/api/v1/jobs", json=job))
        await asyncio.sleep(0.3)  # the insert is waiting on the deleted row (the write lock on SQLite)
        assert not submitting.done()
    assert (await submitting).status_code == 404
    assert (await files_api.client.get("/api/v1/jobs")).json()["items"] == []


@contextmanager
def failing_commits(api: Api) -> Iterator[list[int]]:
    """Every commit on the API's engine fails while inside: the database refuses it at the last step, and
    the transaction is rolled back."""
    failed: list[int] = []

    def refuse(conn: sa.Connection) -> None:
        failed.append(1)
        conn.connection.rollback()
        raise RuntimeError("commit refused")

    sync_engine = api.services.engine.sync_engine
    sa.event.listen(sync_engine, "commit", refuse)
    try:
        yield failed
    finally:
        sa.event.remove(sync_engine, "commit", refuse)


async def test_a_delete_whose_commit_fails_keeps_the_row_and_its_bytes(files_api: Api) -> None:
    made = await upload(files_api.client, b"still here")
    with failing_commits(files_api) as failed, pytest.raises(RuntimeError, match="commit refused"):
        await delete_file(files_api.services.engine, files_api.services.blobs, tenant="default", file_id=made["id"])
    assert failed
    content = await files_api.client.get(f"/api/v1/files/{made['id']}/content")
    assert content.status_code == 200 and content.content == b"still here"
    assert (await files_api.client.delete(f"/api/v1/files/{made['id']}")).status_code == 204
    assert stored(files_api)["blobs"] == []


async def test_a_download_whose_blob_goes_right_after_the_lookup_is_404(files_api: Api) -> None:
    made = await upload(files_api.client, b"raced download")
    blob = files_api.services.blobs.path(made["sha256"])

    def unlink_after_lookup(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM files" in statement:
            blob.unlink(missing_ok=True)  # what a delete committing right then does

    sync_engine = files_api.services.engine.sync_engine
    sa.event.listen(sync_engine, "after_cursor_execute", unlink_after_lookup)
    try:
        response = await files_api.client.get(f"/api/v1/files/{made['id']}/content")
    finally:
        sa.event.remove(sync_engine, "after_cursor_execute", unlink_after_lookup)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert str(files_api.services.blobs.root) not in response.text


async def _served(response: Response, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Send `response` as the server would (offering `pathsend`, as some servers do)."""
    scope = {"type": "http", "method": "GET", "headers": headers, "extensions": {"http.response.pathsend": {}}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response(scope, receive, send)
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return sent[0]["status"], body


async def test_a_download_answered_before_its_blob_is_unlinked_sends_all_its_bytes(files_api: Api) -> None:
    """The route has answered; a delete unlinks the blob before the server sends the response."""
    data = bytes(range(256)) * 1024  # four chunks of FileResponse's 64 KiB
    made = await upload(files_api.client, data, name="data.bin")
    blobs = files_api.services.blobs
    for headers, expected in (([], (200, data)), ([(b"range", b"bytes=100-199")], (206, data[100:200]))):
        response = await files.file_content(made["id"], files_api.services, "default")
        blobs.path(made["sha256"]).unlink()
        assert await _served(response, headers) == expected
        blobs.place(blobs.stage(io.BytesIO(data), max_bytes=len(data)))  # back, for the next round


async def test_files_a_kind_names_under_its_own_fields_are_held_like_file_id(files_api: Api) -> None:
    """A kind's input marks its file fields (`FileId`, one or a list): a missing one is a 404 at submission,
    and a file a queued job names cannot be deleted under it, whatever the field's name."""
    cover, page, spare = [await upload(files_api.client, body) for body in (b"cover", b"page", b"spare")]
    assert (await files_api.client.delete(f"/api/v1/files/{spare['id']}")).status_code == 204
    missing = {"kind": "collage", "input": {"cover": cover["id"], "pages": [page["id"], spare["id"]]}}
    refused = await files_api.client.post("/api/v1/jobs", json=missing)
    assert refused.status_code == 404 and spare["id"] in refused.json()["detail"]
    theirs = await upload(files_api.other, b"another tenant's")
    foreign = {"kind": "collage", "input": {"pages": [theirs["id"]]}}
    assert (await files_api.client.post("/api/v1/jobs", json=foreign)).status_code == 404
    assert (await files_api.client.get("/api/v1/jobs")).json()["items"] == []
    queued = await files_api.client.post(
        "/api/v1/jobs", json={"kind": "collage", "input": {"cover": cover["id"], "pages": [page["id"]]}}
    )
    assert queued.status_code == 201
    job_id = queued.json()["id"]
    for made in (cover, page):
        held = await files_api.client.delete(f"/api/v1/files/{made['id']}")
        assert held.status_code == 409 and job_id in held.json()["detail"]
    assert (await files_api.client.post(f"/api/v1/jobs/{job_id}/cancel")).status_code == 200
    for made in (cover, page):  # a canceled job needs its files no more
        assert (await files_api.client.delete(f"/api/v1/files/{made['id']}")).status_code == 204


async def test_a_release_keeps_a_file_a_queued_job_names_under_any_field(files_api: Api) -> None:
    """`release_files` (a document replaced or deleted) keeps a file while a queued job names it, under any
    `FileId` field (`collage`'s `cover`), as `job_files` records; the check read `input.file_id` only."""
    made = await upload(files_api.client, b"a cover")
    job = await files_api.client.post("/api/v1/jobs", json={"kind": "collage", "input": {"cover": made["id"]}})
    assert job.status_code == 201, job.text
    engine = files_api.services.engine
    async with db.write(engine) as conn:
        assert await release_files(conn, "default", [made["id"]]) == []
    assert (await files_api.client.get(f"/api/v1/files/{made['id']}/content")).content == b"a cover"
    async with db.write(engine) as conn:
        await conn.execute(jobs.update().where(jobs.c.id == job.json()["id"]).values(status="succeeded"))
    async with db.write(engine) as conn:
        assert await release_files(conn, "default", [made["id"]]) == [made["sha256"]]
