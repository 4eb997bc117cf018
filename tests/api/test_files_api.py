"""Deleting files, per-tenant quotas, and no blob left without a file row: refused uploads, deletes of
shared bytes, and the sweep."""

from __future__ import annotations

import asyncio
import io
import os
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.api.conftest import Api, MakeApi
from tests.helpers import eventually
from typer.testing import CliRunner

from inferline import db
from inferline.cli import app as cli_app
from inferline.files.blobs import BlobStore
from inferline.files.service import delete_file, receive_file, record_file
from inferline.files.sweep import sweep_orphans
from inferline.schema import files


@pytest.fixture
async def files_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    """No workers: jobs stay queued. A quota of 3 files and 1,000 bytes per tenant."""
    settings = {"files_max_per_tenant": 3, "files_max_bytes_per_tenant": 1000, "files_gc_interval_s": 0}
    async with make_api(workers=0, database_url=database_url, plugins=["tests.plugins.kinds"], **settings) as api:
        yield api


def stored(api: Api) -> dict[str, list[Path]]:
    """The blob folder's files: placed blobs and staged uploads."""
    root = api.services.blobs.root
    found: dict[str, list[Path]] = {"blobs": [], "staged": []}
    for path in root.rglob("*"):
        if path.is_file():
            found["staged" if path.relative_to(root).parts[0] == "tmp" else "blobs"].append(path)
    return found


async def file_rows(api: Api) -> int:
    async with db.read(api.services.engine) as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(files))).scalar_one())


async def upload(client: Any, data: bytes, name: str = "a.txt") -> dict[str, Any]:
    response = await client.post("/api/v1/files", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_deleted_file_is_gone_with_its_bytes_and_other_tenants_get_404(files_api: Api) -> None:
    made = await upload(files_api.client, b"delete me")
    assert (await files_api.other.delete(f"/api/v1/files/{made['id']}")).status_code == 404
    assert (await files_api.client.get(f"/api/v1/files/{made['id']}")).status_code == 200

    deleted = await files_api.client.delete(f"/api/v1/files/{made['id']}")
    assert deleted.status_code == 204
    assert (await files_api.client.get(f"/api/v1/files/{made['id']}")).status_code == 404
    assert (await files_api.client.delete(f"/api/v1/files/{made['id']}")).status_code == 404
    assert stored(files_api) == {"blobs": [], "staged": []}


async def test_bytes_shared_by_two_files_live_until_the_last_is_deleted(files_api: Api) -> None:
    mine = await upload(files_api.client, b"same bytes")
    theirs = await upload(files_api.other, b"same bytes")
    assert mine["sha256"] == theirs["sha256"] and len(stored(files_api)["blobs"]) == 1

    assert (await files_api.client.delete(f"/api/v1/files/{mine['id']}")).status_code == 204
    assert (await files_api.other.get(f"/api/v1/files/{theirs['id']}/content")).content == b"same bytes"
    assert (await files_api.other.delete(f"/api/v1/files/{theirs['id']}")).status_code == 204
    assert stored(files_api)["blobs"] == []


async def test_a_file_a_queued_job_names_cannot_be_deleted_until_the_job_ends(files_api: Api) -> None:
    made = await upload(files_api.client, b"input of a job")
    job = await files_api.submit(kind="record", input={"file_id": made["id"]})
    refused = await files_api.client.delete(f"/api/v1/files/{made['id']}")
    assert refused.status_code == 409 and job["id"] in refused.json()["detail"]
    assert refused.headers["content-type"] == "application/problem+json"
    await files_api.client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert (await files_api.client.delete(f"/api/v1/files/{made['id']}")).status_code == 204


async def test_uploads_past_the_tenants_quota_are_409_naming_the_limit(files_api: Api) -> None:
    kept = [await upload(files_api.client, f"file {n}".encode()) for n in range(3)]
    too_many = await files_api.client.post("/api/v1/files", files={"file": ("x.txt", b"a fourth")})
    assert too_many.status_code == 409 and "files_max_per_tenant" in too_many.json()["detail"]
    await upload(files_api.other, b"another tenant has its own quota")

    assert (await files_api.client.delete(f"/api/v1/files/{kept[0]['id']}")).status_code == 204
    too_big = await files_api.client.post("/api/v1/files", files={"file": ("big.txt", b"x" * 990)})
    assert too_big.status_code == 409 and "files_max_bytes_per_tenant" in too_big.json()["detail"]
    await upload(files_api.client, b"x" * 900)
    assert await file_rows(files_api) == 4
    assert stored(files_api)["staged"] == []  # the refused uploads left nothing
    assert len(stored(files_api)["blobs"]) == 4


async def test_a_refused_ocr_upload_leaves_no_file_and_no_blob(files_api: Api) -> None:
    response = await files_api.client.post("/api/v1/ocr", files={"file": ("notes.txt", b"plain text is no image")})
    assert response.status_code == 415
    assert await file_rows(files_api) == 0
    assert stored(files_api) == {"blobs": [], "staged": []}


async def test_refused_document_uploads_leave_no_blob(make_api: MakeApi) -> None:
    async with make_api(workers=0) as api:
        assert (
            await api.client.post("/api/v1/collections", json={"name": "docs", "fields": {"year": "int"}})
        ).status_code == 201
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("a.txt", "not a document type")
        url = "/api/v1/collections/docs/documents"
        unsupported = await api.client.post(url, files={"file": ("a.zip", archive.getvalue())})
        assert unsupported.status_code == 415
        bad_metadata = await api.client.post(url, json={"text": "hello", "metadata": {"year": "not a year"}})
        assert bad_metadata.status_code == 422
        assert stored(api) == {"blobs": [], "staged": []} and await file_rows(api) == 0

        document = (await api.client.post(url, json={"text": "kept"})).json()
        unchanged = await api.client.post(url, json={"text": "kept"})
        assert unchanged.status_code == 200 and len(stored(api)["blobs"]) == 1 and stored(api)["staged"] == []
        in_use = await api.client.delete(f"/api/v1/files/{document['file_id']}")
        assert in_use.status_code == 409 and document["id"] in in_use.json()["detail"]
        await api.client.delete(f"/api/v1/collections/docs/documents/{document['id']}")
        assert (await api.client.get(f"/api/v1/files/{document['file_id']}")).status_code == 404  # went with it
        assert stored(api)["blobs"] == []


async def listed(client: Any, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/files", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_documents_files_count_toward_the_quota_until_the_document_lets_them_go(files_api: Api) -> None:
    client, url = files_api.client, "/api/v1/collections/docs/documents"
    assert (await client.post("/api/v1/collections", json={"name": "docs"})).status_code == 201
    first = (await client.post(url, json={"text": "version one", "external_id": "readme"})).json()
    assert [item["id"] for item in await listed(client)] == [first["file_id"]]

    replaced = (await client.post(url, json={"text": "version two", "external_id": "readme"})).json()
    assert replaced["id"] == first["id"] and replaced["file_id"] != first["file_id"]
    assert [item["id"] for item in await listed(client)] == [replaced["file_id"]]  # the old one went
    assert (await client.get(f"/api/v1/files/{first['file_id']}")).status_code == 404

    uploaded = await upload(client, b"a plain file")
    await client.post(url, json={"text": "another document"})
    over = await client.post(url, json={"text": "one too many"})
    assert over.status_code == 409 and "files_max_per_tenant" in over.json()["detail"]

    # A file a queued job names stays when its document goes; the others go with theirs.
    job = await files_api.submit(kind="record", input={"file_id": replaced["file_id"]})
    assert (await client.delete(f"{url}/{replaced['id']}")).status_code == 204
    assert {item["id"] for item in await listed(client)} >= {replaced["file_id"], uploaded["id"]}
    assert (await client.delete("/api/v1/collections/docs")).status_code == 204
    assert {item["id"] for item in await listed(client)} == {replaced["file_id"], uploaded["id"]}
    await client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert (await client.delete(f"/api/v1/files/{replaced['file_id']}")).status_code == 204
    assert len(stored(files_api)["blobs"]) == 1 and await file_rows(files_api) == 1


async def test_files_are_listed_newest_first_in_pages_and_only_the_tenants_own(files_api: Api) -> None:
    made = [await upload(files_api.client, f"file {n}".encode(), name=f"{n}.txt") for n in range(3)]
    await upload(files_api.other, b"another tenant's")
    page = (await files_api.client.get("/api/v1/files", params={"limit": 2})).json()
    assert [item["id"] for item in page["items"]] == [made[2]["id"], made[1]["id"]]
    assert page["items"][0] == made[2]  # the same view as the upload's
    rest = (await files_api.client.get("/api/v1/files", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [item["id"] for item in rest["items"]] == [made[0]["id"]] and rest["next_cursor"] is None
    assert [item["filename"] for item in await listed(files_api.other)] == ["a.txt"]
    bad = await files_api.client.get("/api/v1/files", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"


async def test_a_delete_between_an_uploads_staging_and_its_row_keeps_its_bytes(files_api: Api) -> None:
    services = files_api.services
    first = await upload(files_api.client, b"raced bytes")
    pending = await receive_file(
        services.blobs, tenant="other", source=io.BytesIO(b"raced bytes"), filename=None, max_bytes=100
    )
    await delete_file(services.engine, services.blobs, tenant="default", file_id=first["id"])
    assert stored(files_api)["blobs"] == []  # no row referred to them at the delete
    await record_file(services.engine, pending)
    content = await files_api.other.get(f"/api/v1/files/{pending.id}/content")
    assert content.status_code == 200 and content.content == b"raced bytes"


def _orphan(blobs: BlobStore, name: str, age_s: float) -> Path:
    path = blobs.root / name[:2] / name[2:4] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"orphan")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


async def test_the_sweep_removes_old_blobs_no_file_refers_to(files_api: Api) -> None:
    blobs = files_api.services.blobs
    kept = await upload(files_api.client, b"referenced")
    referenced = blobs.path(kept["sha256"])
    then = time.time() - 3600
    os.utime(referenced, (then, then))
    old_orphan = _orphan(blobs, "a" * 64, age_s=3600)
    new_orphan = _orphan(blobs, "b" * 64, age_s=0)
    (blobs.root / "tmp").mkdir(exist_ok=True)
    stale_staged = blobs.root / "tmp" / "upload-of-a-dead-process"
    stale_staged.write_bytes(b"half")
    os.utime(stale_staged, (then, then))

    swept = await sweep_orphans(files_api.services.engine, blobs, min_age_s=600)
    assert (swept.blobs, swept.staged) == (1, 1)
    assert referenced.exists() and new_orphan.exists()
    assert not old_orphan.exists() and not stale_staged.exists()


async def test_workers_sweep_orphans_and_the_cli_does_on_demand(make_api: MakeApi, tmp_path: Path) -> None:
    async with make_api(workers=1, files_gc_interval_s=0.2, files_orphan_age_s=60) as api:
        orphan = _orphan(api.services.blobs, "c" * 64, age_s=120)
        await eventually(lambda: not orphan.exists(), timeout_s=10)
        data_dir = api.services.settings.data_dir
    again = _orphan(BlobStore(data_dir.resolve() / "blobs"), "d" * 64, age_s=3600)
    command = ["files", "gc", "--data-dir", str(data_dir), "--json"]
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, command)
    assert result.exit_code == 0, result.output
    assert '"blobs_removed": 1' in result.output and not again.exists()
