from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from tests.api.conftest import Api, MakeApi

from inferline.api import problems
from inferline.errors import Overloaded


async def test_models_are_listed_unloaded_until_first_use_then_ready(api: Api) -> None:
    listing = (await api.client.get("/api/v1/models")).json()
    [doubler] = [m for m in listing["items"] if m["name"] == "doubler"]
    assert doubler["state"] == "unloaded" and doubler["mode"] == "standard"  # CPU default
    assert listing["device"] == "cpu"
    job = await api.submit(kind="double", input={"n": 21})
    finished = await api.wait(job["id"])
    assert finished["result"] == {"doubled": 42}, finished["error"]
    [doubler] = [m for m in (await api.client.get("/api/v1/models")).json()["items"] if m["name"] == "doubler"]
    assert doubler["state"] == "ready" and doubler["max_batch_size"] == 1


@pytest.mark.allow_error_logs  # the bad item raises ValueError inside its job, logged at ERROR per attempt
async def test_jobs_share_a_batched_model_and_a_bad_item_fails_only_its_job(make_api: MakeApi) -> None:
    batched = make_api(workers=8, plugins=["tests.plugins.kinds"], device="cpu", model_modes={"doubler": "batched"})
    async with batched as api:
        jobs = [await api.submit(kind="double", input={"n": n}) for n in [1, 2, -3, 4, 5, 6]]
        done = [await api.wait(job["id"]) for job in jobs]
        assert [d["result"]["doubled"] for d in done if d["status"] == "succeeded"] == [2, 4, 8, 10, 12]
        [failed] = [d for d in done if d["status"] != "succeeded"]
        assert failed["input"] == {"n": -3} and failed["error"]["type"] == "ValueError"
        # A model's own exception is not the tenant's to read: its type, and where the log has it.
        assert "negative" not in failed["error"]["message"] and failed["id"] in failed["error"]["message"]
        [doubler] = [m for m in (await api.client.get("/api/v1/models")).json()["items"] if m["name"] == "doubler"]
        assert doubler["mode"] == "batched" and doubler["max_batch_size"] == 8
        text = (await api.anonymous.get("/metrics")).text
        assert 'inferline_model_batch_size_count{model="doubler"}' in text


async def test_models_need_a_key(api: Api) -> None:
    assert (await api.anonymous.get("/api/v1/models")).status_code == 401


async def test_a_full_model_queue_is_a_429_with_retry_after() -> None:
    app = FastAPI()
    problems.install(app)

    @app.get("/busy")
    async def busy() -> None:
        raise Overloaded("model doubler has 256 items queued", retry_after_s=2.4)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/busy")
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert response.headers["content-type"] == "application/problem+json"
