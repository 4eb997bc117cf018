"""No byte of a body is read before its route admits the caller, and a body is held to its route's limit
(not to one the client picks with its Content-Type). Bodies here are streamed by a generator that counts
what the app pulled, with no Content-Length unless a test sends one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from tests.api.conftest import Api, MakeApi

PROBLEM = "application/problem+json"
MULTIPART = {"content-type": "multipart/form-data; boundary=xyz"}
MiB = 2**20


@dataclass
class CountedBody:
    """`total_bytes` of body in `chunk_bytes` pieces; `pulled` is what the app asked for so far."""

    total_bytes: int
    chunk_bytes: int = 64 * 1024
    pulled: int = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total_bytes:
            piece = min(self.chunk_bytes, self.total_bytes - self.pulled)
            self.pulled += piece
            yield b"x" * piece


async def post_counted(
    client: httpx.AsyncClient, path: str, body: CountedBody, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(path, content=body.chunks(), headers=headers)


async def test_an_unauthenticated_upload_sized_body_is_refused_before_a_byte_is_read(idle_api: Api) -> None:
    body = CountedBody(8 * MiB)
    response = await post_counted(idle_api.anonymous, "/api/v1/jobs", body, MULTIPART)
    assert response.status_code == 401 and response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"
    assert body.pulled == 0


async def test_an_unknown_key_is_refused_before_a_byte_is_read_too(idle_api: Api) -> None:
    for path, headers in [("/api/v1/jobs", MULTIPART), ("/api/v1/files", MULTIPART), ("/api/v1/schedules", {})]:
        body = CountedBody(8 * MiB)
        response = await post_counted(idle_api.anonymous, path, body, headers | {"authorization": "Bearer il_nope"})
        assert response.status_code == 401, path
        assert body.pulled == 0, path


async def test_a_declared_length_does_not_get_an_unauthenticated_body_read(idle_api: Api) -> None:
    body = CountedBody(8 * MiB)
    headers = MULTIPART | {"content-length": str(body.total_bytes)}
    response = await post_counted(idle_api.anonymous, "/api/v1/jobs", body, headers)
    assert response.status_code == 401 and body.pulled == 0


async def test_a_json_route_keeps_its_limit_when_the_client_claims_multipart(idle_api: Api) -> None:
    limit = idle_api.services.settings.max_request_bytes
    streamed = CountedBody(8 * MiB)
    response = await post_counted(idle_api.client, "/api/v1/jobs", streamed, MULTIPART)
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM
    assert str(limit) in response.json()["detail"]
    assert streamed.pulled <= limit + streamed.chunk_bytes  # stopped at the JSON limit, not the upload one

    declared = CountedBody(8 * MiB)
    headers = MULTIPART | {"content-length": str(declared.total_bytes)}
    assert (await post_counted(idle_api.client, "/api/v1/jobs", declared, headers)).status_code == 413
    assert declared.pulled == 0


async def test_an_absurd_content_length_is_413_not_a_crash(idle_api: Api) -> None:
    headers = {"content-type": "application/json", "content-length": "9" * 5000}
    response = await idle_api.client.post("/api/v1/jobs", content=CountedBody(10).chunks(), headers=headers)
    assert response.status_code == 413


async def test_upload_routes_take_files_over_the_json_limit_and_hold_json_to_it(make_api: MakeApi) -> None:
    async with make_api(workers=0, max_request_bytes=64 * 1024, max_upload_bytes=MiB) as api:
        text = b"plain text, " * 20_000  # 240 KB: over the JSON limit, under the upload limit
        uploaded = await api.client.post("/api/v1/files", files={"file": ("notes.txt", text)})
        assert uploaded.status_code == 201, uploaded.text
        too_big = await api.client.post("/api/v1/files", files={"file": ("big.txt", b"x" * (MiB + 1))})
        assert too_big.status_code == 413

        big_json = {"file_id": uploaded.json()["id"], "lang": "eng", "pages": "1" + " " * 100_000}
        ocr_json = await api.client.post("/api/v1/ocr", json=big_json)
        assert ocr_json.status_code == 413 and ocr_json.headers["content-type"] == PROBLEM


async def test_metrics_can_require_a_key(make_api: MakeApi) -> None:
    async with make_api(workers=0, metrics_require_key=True) as api:
        assert (await api.anonymous.get("/metrics")).status_code == 401
        wrong = await api.anonymous.get("/metrics", headers={"Authorization": "Bearer il_nope"})
        assert wrong.status_code == 401 and wrong.headers["content-type"] == PROBLEM
        for client in (api.client, api.other):  # any tenant's key
            response = await client.get("/metrics")
            assert response.status_code == 200 and "inferline_jobs_submitted_total" in response.text
        assert (await api.anonymous.get("/healthz")).status_code == 200  # probes stay open


async def test_metrics_are_open_by_default(idle_api: Api) -> None:
    assert (await idle_api.anonymous.get("/metrics")).status_code == 200
