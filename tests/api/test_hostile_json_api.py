"""JSON a client sends, however nested and whatever its numbers, is a 4xx naming the field when it is out of
bounds: never a RecursionError or an OverflowError (a 500), nor a value the database refuses later."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.api.conftest import Api, MakeApi

from inferline.jsonvalues import MAX_DEPTH

PROBLEM = "application/problem+json"


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.fixture
async def search_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    async with make_api(database_url=database_url, workers=0) as started:
        made = await started.client.post(
            "/api/v1/collections",
            json={"name": "docs", "fields": {"year": "int", "score": "float", "day": "date"}},
        )
        assert made.status_code == 201, made.text
        yield started


def assert_422(response: Any, *fields: str) -> None:
    """A 422 problem naming one of `fields`."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["field"] in fields, response.json()


async def add_document(api: Api, metadata: str, *, as_json: bool) -> Any:
    path = "/api/v1/collections/docs/documents"
    if not as_json:
        return await api.client.post(path, files={"file": ("a.txt", b"some text")}, data={"metadata": metadata})
    body = '{"text": "some text", "metadata": ' + metadata + "}"
    return await api.client.post(path, content=body, headers={"content-type": "application/json"})


async def test_metadata_nested_deeper_than_the_bound_or_the_parser_is_422(search_api: Api) -> None:
    for depth in (MAX_DEPTH + 1, 50_000):
        assert_422(await add_document(search_api, nested(depth), as_json=False), "metadata")
        assert_422(await add_document(search_api, nested(depth), as_json=True), "body")
    assert (await search_api.client.get("/api/v1/collections/docs/documents")).json()["items"] == []


async def test_metadata_numbers_and_dates_the_stores_cannot_hold_are_422(search_api: Api) -> None:
    cases = [
        ('{"year": 18446744073709551616}', "metadata.year"),  # 2**64, in a declared int field
        ('{"note": 18446744073709551616}', "metadata.note"),  # undeclared keys are stored too
        ('{"score": 1e999}', "metadata.score"),  # parses as Infinity
        ('{"note": [NaN]}', "metadata.note.0"),
        ('{"day": "9999-12-31T23:00:00-05:00"}', "metadata.day"),  # past year 9999 in UTC
    ]
    for metadata, field in cases:
        assert_422(await add_document(search_api, metadata, as_json=False), field)
        assert_422(await add_document(search_api, metadata, as_json=True), field, f"body.{field}")
    assert (await search_api.client.get("/api/v1/collections/docs/documents")).json()["items"] == []


async def test_filter_values_out_of_range_are_422_naming_the_field(search_api: Api) -> None:
    cases = [
        ('{"year": 18446744073709551616}', "body.filter"),  # the message names year
        ('{"year": {"gte": -9223372036854775809}}', "body.filter"),
        ('{"score": {"lt": 1' + "0" * 400 + "}}", "body.filter"),
        ('{"score": {"gt": -1e999}}', "body.filter"),
        ('{"day": {"gte": "9999-12-31T23:00:00-05:00"}}', "filter.day.gte"),
        (nested(MAX_DEPTH + 1), "body.filter"),
    ]
    for flt, field in cases:
        body = '{"query": "text", "mode": "keyword", "filter": ' + flt + "}"
        response = await search_api.client.post(
            "/api/v1/collections/docs/search", content=body, headers={"content-type": "application/json"}
        )
        assert_422(response, field)
    ok = await search_api.client.post(
        "/api/v1/collections/docs/search",
        json={"query": "text", "mode": "keyword", "filter": {"year": 2**63 - 1, "score": {"gte": -1.5}}},
    )
    assert ok.status_code == 200, ok.text


async def test_a_forged_search_cursor_is_422(search_api: Api) -> None:
    for forged in ({"k": "x", "v": 1e999, "o": 0}, {"k": "x", "v": 0, "o": 10**30}, [[[]]]):
        raw = json.dumps(forged).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        response = await search_api.client.post(
            "/api/v1/collections/docs/search", json={"query": "text", "mode": "keyword", "cursor": cursor}
        )
        assert_422(response, "cursor")


async def test_job_input_out_of_bounds_is_422_and_never_stored(api: Api) -> None:
    # `gate` has no input model: its input is stored as sent (PostgreSQL's json refuses NaN).
    for extra in ("NaN", "[1e999]", "170141183460469231731687303715884105728", nested(MAX_DEPTH)):
        text = '{"kind": "gate", "input": {"closed_while": "/nonexistent", "extra": ' + extra + "}}"
        response = await api.client.post("/api/v1/jobs", content=text, headers={"content-type": "application/json"})
        assert_422(response, "body.input")
    too_deep = '{"kind": "gate", "input": ' + nested(50_000) + "}"
    response = await api.client.post("/api/v1/jobs", content=too_deep, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert (await api.client.get("/api/v1/jobs")).json()["items"] == []
