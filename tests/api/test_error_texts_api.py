"""What tenants read of a failure names the problem, never our internals (paths, SQL); the full text is
in the log under the job's id."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image
from tests.api.conftest import Api, MakeApi
from tests.conftest import LogRecorder
from tests.plugins.leaky import LEAKED_PATH, LEAKED_SQL, LEAKED_WEIGHTS

from inferline.errors import ModelError


@pytest.fixture
async def leaky_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    async with make_api(database_url=database_url, plugins=["tests.plugins.leaky"]) as started:
        yield started


@pytest.mark.allow_error_logs  # the crash is logged at ERROR, in full: that is the point
async def test_an_unexpected_exception_is_shown_by_type_and_logged_in_full(
    leaky_api: Api, log_records: LogRecorder
) -> None:
    job = await leaky_api.submit(kind="leak", max_attempts=2)
    done = await leaky_api.wait(job["id"])
    assert done["status"] == "failed"
    shown = [done["detail"], done["error"]["message"], *(a["message"] for a in done["error"]["attempts"])]
    assert len(shown) == 4
    for text in shown:
        assert LEAKED_PATH not in text and "SELECT" not in text and "webhook_secret" not in text
        assert "RuntimeError" in text and job["id"] in text
    assert done["error"]["type"] == "RuntimeError"
    logged = [e for e in log_records.events if e.get("job_id") == job["id"] and e["event"] == "job_attempt_crashed"]
    assert len(logged) == 2 and all(LEAKED_SQL in e["error"] and e["exc_info"] for e in logged)


async def test_a_missing_blob_is_404_without_the_data_dir(make_api: MakeApi) -> None:
    async with make_api(workers=0) as api:
        uploaded = (await api.client.post("/api/v1/files", files={"file": ("a.txt", b"some text")})).json()
        api.services.blobs.path(uploaded["sha256"]).unlink()
        response = await api.client.get(f"/api/v1/files/{uploaded['id']}/content")
        assert response.status_code == 404
        detail = response.json()["detail"]
        data_dir = str(api.services.settings.data_dir.resolve())
        assert uploaded["id"] in detail and data_dir not in detail and "blobs" not in detail


async def test_an_unreadable_image_fails_its_ocr_job_without_the_blob_path(make_api: MakeApi) -> None:
    png = io.BytesIO()
    Image.new("L", (40, 40), 255).save(png, "PNG")
    broken = png.getvalue()[:16] + b"\x00not png chunks" * 50  # the signature passes, the chunks do not
    async with make_api(workers=1) as api:
        response = await api.client.post(
            "/api/v1/ocr", files={"file": ("scan.png", broken)}, headers={"Prefer": "wait=60"}
        )
        assert response.status_code == 201, response.text
        job = await api.wait(response.json()["id"])
        assert job["status"] == "failed" and job["error"]["type"] == "BadDocument"
        message = job["error"]["message"]
        assert "corrupt or unreadable image" in message
        assert str(api.services.blobs.root) not in message and "/" not in message


@pytest.mark.allow_error_logs  # logged at ERROR in full
async def test_an_error_without_a_status_is_a_500_naming_its_type_and_request(
    leaky_api: Api, log_records: LogRecorder
) -> None:
    response = await leaky_api.client.get("/api/v1/leaky/model", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500 and response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert LEAKED_PATH not in detail and "SELECT" not in detail
    assert "ModelError" in detail and "req-42" in detail
    [logged] = [e for e in log_records.events if e["event"] == "request_failed"]
    assert logged["request_id"] == "req-42" and logged["exc_info"]


async def test_a_model_that_failed_to_load_is_listed_without_its_paths(leaky_api: Api) -> None:
    with pytest.raises(ModelError):
        await leaky_api.services.models.batcher("broken").ensure_loaded()
    listed = (await leaky_api.client.get("/api/v1/models")).json()["items"]
    [broken] = [model for model in listed if model["name"] == "broken"]
    assert broken["state"] == "failed" and "FileNotFoundError" in broken["error"]
    assert LEAKED_WEIGHTS not in broken["error"] and "/srv" not in broken["error"]
