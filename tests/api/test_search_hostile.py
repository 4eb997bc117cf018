"""Hostile searches and documents through the API: a long Korean query never stalls the event loop, a
query over the length limit is a 422 naming it, and a document no reader can parse fails with its
reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from tests.api.conftest import Api, MakeApi
from tests.api.test_search_api import add, create, ready, search

from inferline.search import tokens as tokens_module

pytestmark = pytest.mark.api


@pytest.fixture
async def search_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    async with make_api(database_url=database_url, max_upload_bytes=2_000_000) as started:
        yield started


async def test_a_long_korean_query_never_stalls_the_event_loop(search_api: Api) -> None:
    """2,000 syllables without a space: Kiwi read them in 0.2-0.35 s on the event loop, holding the GIL
    (so a thread alone would not have helped). Read in pieces on a thread, other coroutines keep
    their pace, and the query gets its answer."""
    await create(search_api)
    await add(search_api, "검색 엔진 문서")
    await asyncio.to_thread(tokens_module.tokenize, "준비")  # Kiwi loaded
    tokens_module._EOJEOLS.clear()
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    result = await search(search_api, "가" * 2000, mode="keyword")
    done.set()
    await ticker
    assert result["total"] == 0 and result["hits"] == []
    assert max(gaps) < 0.1, gaps


async def test_a_query_over_the_length_limit_is_refused_naming_it(search_api: Api) -> None:
    await create(search_api)
    response = await search_api.client.post("/api/v1/collections/docs/search", json={"query": "가" * 2001})
    assert response.status_code == 422 and response.json()["field"] == "body.query"


async def test_hostile_html_is_ingested_or_failed_with_its_reason(search_api: Api) -> None:
    await create(search_api)
    files = {
        "quadratic.html": "<html><body><p>first alpha</p>" + "<a" * 40_000,
        "assertion.html": "<html><p>second bravo</p>" + "<![" * 40_000,
    }
    documents = []
    for name, page in files.items():
        response = await search_api.client.post(
            "/api/v1/collections/docs/documents", files={"file": (name, page.encode(), "text/html")}
        )
        assert response.status_code in (200, 201), response.text
        documents.append(response.json())
    finished = [await ready(search_api, document, timeout_s=60) for document in documents]
    assert [document["status"] for document in finished] == ["ready", "ready"]
    found = await search(search_api, "bravo", mode="keyword")
    assert [hit["document_id"] for hit in found["hits"]] == [documents[1]["id"]]


async def test_a_lone_surrogate_in_metadata_is_a_422_naming_it_on_every_engine(search_api: Api) -> None:
    """A JSON string may hold a lone UTF-16 surrogate, which Python's parser keeps: PostgreSQL's jsonb refused
    the row (a 500); on SQLite it was stored, and the document's ingest crashed in the vector index."""
    await create(search_api)
    bodies = {
        "body.metadata.note": rb'{"text": "alpha", "metadata": {"note": "x\ud800"}}',
        "body.metadata.tags.1": rb'{"text": "alpha", "metadata": {"tags": ["ok", "\udc00"]}}',
    }
    for field, body in bodies.items():
        response = await search_api.client.post(
            "/api/v1/collections/docs/documents", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422 and response.json()["field"] == field, response.text
    multipart = await search_api.client.post(
        "/api/v1/collections/docs/documents",
        files={"file": ("a.txt", b"bravo", "text/plain")},
        data={"metadata": r'{"k": "\udbff"}'},
    )
    assert multipart.status_code == 422 and multipart.json()["field"] == "metadata.k", multipart.text
    assert (await search_api.client.get("/api/v1/collections/docs/documents")).json()["items"] == []
    # A refusal that names what was sent (here a declared field's name) shows the surrogate as U+FFFD: it was
    # a 500, the refusal's own text not encodable.
    named = await search_api.client.post(
        "/api/v1/collections",
        content=rb'{"name": "other", "fields": {"x\ud800": "keyword"}}',
        headers={"content-type": "application/json"},
    )
    assert named.status_code == 422 and "\ufffd" in named.json()["field"], named.text
