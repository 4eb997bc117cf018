"""The GraphQL API through the ASGI app: each query and mutation against what the REST API answers for the
same thing (real e5 embeddings and the real embedded index where a search runs), tenants, authentication,
the limits on a document and the error codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query
from tests.api.conftest import Api, MakeApi
from tests.api.test_admission_api import CountedBody
from tests.helpers import eventually

from inferline import db
from inferline.api.graphql.schema import sdl
from inferline.schema import jobs

JSON_TYPE = {"content-type": "application/json"}
DOCS = Path(__file__).resolve().parents[2] / "docs"
DB_KO = "PostgreSQL 데이터베이스를 설치하는 방법을 설명합니다. 먼저 패키지를 내려받아 서버에 설치하세요."
BACKUP_KO = "데이터베이스 서버의 백업과 복구 절차를 안내합니다."
BREAD_EN = "How to bake sourdough bread at home: feed the starter, mix the dough, and bake it hot."

SEARCH = """
query Search($collection: String!, $query: String!, $limit: Int!, $after: String, $mode: SearchMode!) {
  search(collection: $collection, query: $query, limit: $limit, after: $after, mode: $mode) {
    total nextCursor cached
    hits { documentId chunkId score text heading page highlights metadata document { id status } }
  }
}
"""


async def graphql(client: httpx.AsyncClient, document: str, /, **variables: Any) -> dict[str, Any]:
    """The answer to `document` run with `variables` (a 200: the document ran)."""
    response = await client.post("/graphql", json={"query": document, "variables": variables})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer: dict[str, Any] = response.json()
    return answer


def codes(answer: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in answer.get("errors", [])]


async def rest_search(api: Api, query: str, **body: Any) -> dict[str, Any]:
    response = await api.client.post("/api/v1/collections/docs/search", json={"query": query} | body)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def rest_view(hit: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL hit under the REST hit's names."""
    names = {"documentId": "document_id", "chunkId": "chunk_id"}
    return {names.get(key, key): value for key, value in hit.items() if key != "document"}


@pytest.fixture
async def search_api(make_api: MakeApi) -> AsyncIterator[Api]:
    # One engine: the resolvers call the REST routes' services, which test_search_api.py runs on both.
    async with make_api() as started:
        yield started


async def add_ready(api: Api, text: str, **body: Any) -> dict[str, Any]:
    response = await api.client.post("/api/v1/collections/docs/documents", json={"text": text} | body)
    assert response.status_code == 201, response.text
    document_id = response.json()["id"]

    async def current() -> dict[str, Any]:
        found: dict[str, Any] = (await api.client.get(f"/api/v1/collections/docs/documents/{document_id}")).json()
        return found

    return await eventually(current, lambda found: found["status"] in ("ready", "failed"), timeout_s=60)


async def collection_of_three(api: Api) -> list[dict[str, Any]]:
    response = await api.client.post("/api/v1/collections", json={"name": "docs", "fields": {"lang": "keyword"}})
    assert response.status_code == 201, response.text
    added = [
        await add_ready(api, DB_KO, metadata={"lang": "ko"}),
        await add_ready(api, BACKUP_KO, metadata={"lang": "ko"}),
        await add_ready(api, BREAD_EN, metadata={"lang": "en"}),
    ]
    assert [document["status"] for document in added] == ["ready"] * 3
    return added


async def test_search_documents_and_similar_answer_what_the_rest_api_answers(search_api: Api) -> None:
    database, backup, bread = await collection_of_three(search_api)
    variables = {"collection": "docs", "query": "database server", "limit": 2, "mode": "SEMANTIC"}
    rest = await rest_search(search_api, "database server", limit=2, mode="semantic")
    answer = await graphql(search_api.client, SEARCH, **variables)
    assert "errors" not in answer, answer
    found = answer["data"]["search"]
    # The same service: the REST search's cached page, hit for hit, and its cursor.
    assert found["cached"] is True and found["total"] == rest["total"] == 3
    assert [rest_view(hit) for hit in found["hits"]] == rest["hits"]
    assert found["nextCursor"] == rest["next_cursor"] is not None
    assert [hit["document"]["id"] for hit in found["hits"]] == [hit["document_id"] for hit in rest["hits"]]
    assert {hit["document"]["status"] for hit in found["hits"]} == {"READY"}
    # The REST cursor pages the GraphQL search, and the other way around: one ranked list.
    page_two = await graphql(search_api.client, SEARCH, **variables | {"after": rest["next_cursor"]})
    rest_two = await rest_search(search_api, "database server", limit=2, mode="semantic", cursor=found["nextCursor"])
    assert [rest_view(hit) for hit in page_two["data"]["search"]["hits"]] == rest_two["hits"]
    assert page_two["data"]["search"]["nextCursor"] is None
    # A document with its similar ones (the REST similar's list) and its ingest job.
    query = """query($id: ID!) { document(collection: "docs", id: $id) {
        id externalId status metadata chunks job { id status kind }
        similar(limit: 5) { cached hits { documentId document { metadata } } } } }"""
    document = (await graphql(search_api.client, query, id=database["id"]))["data"]["document"]
    rest_similar = (await search_api.client.get(f"/api/v1/collections/docs/documents/{database['id']}/similar")).json()
    assert [hit["documentId"] for hit in document["similar"]["hits"]] == [backup["id"], bread["id"]]
    assert [hit["document_id"] for hit in rest_similar["hits"]] == [backup["id"], bread["id"]]
    assert rest_similar["cached"] is True  # the GraphQL request's cache entry, under another limit
    assert document["similar"]["hits"][1]["document"]["metadata"] == {"lang": "en"}
    assert document["status"] == "READY" and document["chunks"] == 1 and document["metadata"] == {"lang": "ko"}
    assert document["job"] == {"id": database["job_id"], "status": "SUCCEEDED", "kind": "ingest"}
    # Its ingest job deleted by the retention of ended jobs: the document is as it was, its job null.
    async with db.write(search_api.services.engine) as conn:
        await conn.execute(jobs.delete().where(jobs.c.id == bread["job_id"]))
    gone = await graphql(search_api.client, query, id=bread["id"])
    assert "errors" not in gone, gone
    assert gone["data"]["document"]["job"] is None and gone["data"]["document"]["status"] == "READY"
    # The tenant's collections, as REST lists them.
    listed = await graphql(search_api.client, "{ collections { name documentCount fields { name type } } }")
    assert listed["data"]["collections"] == [
        {"name": "docs", "documentCount": 3, "fields": [{"name": "lang", "type": "keyword"}]}
    ]
    await another_tenants_collection_and_document_are_not_found(search_api, database, bread["id"])


async def another_tenants_collection_and_document_are_not_found(
    search_api: Api, database: dict[str, Any], bread_id: str
) -> None:
    """(The same test, on the same collection: its ingest is most of the test's time.)"""
    query = """query($id: ID!) { document(collection: "docs", id: $id) { id } }"""
    answer = await graphql(search_api.other, query, id=database["id"])
    assert answer["data"] == {"document": None} and codes(answer) == ["NOT_FOUND"]
    assert answer["errors"][0]["path"] == ["document"]
    searched = await graphql(search_api.other, SEARCH, collection="docs", query="x", limit=1, mode="HYBRID")
    assert searched["data"] == {"search": None} and codes(searched) == ["NOT_FOUND"]
    assert (await graphql(search_api.other, "{ collections { name } }"))["data"] == {"collections": []}
    # Arguments the REST body would refuse, refused naming the GraphQL argument.
    # A filter over the declared fields, as in REST; an undeclared one is refused naming it.
    filtered = """query($filter: JSON) { search(collection: "docs", query: "bread", filter: $filter) {
        hits { documentId } } }"""
    english = await graphql(search_api.client, filtered, filter={"lang": "en"})
    assert {hit["documentId"] for hit in english["data"]["search"]["hits"]} == {bread_id}
    colour = await graphql(search_api.client, filtered, filter={"colour": "red"})
    assert codes(colour) == ["INVALID_INPUT"] and colour["errors"][0]["extensions"]["field"] == "filter.colour"
    too_many = await graphql(search_api.client, SEARCH, collection="docs", query="x", limit=101, mode="HYBRID")
    assert codes(too_many) == ["INVALID_INPUT"] and too_many["errors"][0]["extensions"]["field"] == "limit"
    bad_cursor = await graphql(
        search_api.client, SEARCH, collection="docs", query="x", limit=1, mode="HYBRID", after="nonsense"
    )
    assert codes(bad_cursor) == ["INVALID_INPUT"] and bad_cursor["errors"][0]["extensions"]["field"] == "after"
    similar = """query($id: ID!) { document(collection: "docs", id: $id) { id similar(limit: 0) { tookMs } } }"""
    partial = await graphql(search_api.client, similar, id=database["id"])
    assert partial["data"] == {"document": {"id": database["id"], "similar": None}}
    assert codes(partial) == ["INVALID_INPUT"] and partial["errors"][0]["path"] == ["document", "similar"]


# -- jobs and batches (no worker: what is queued stays queued) -------------------------------------------


@pytest.fixture
async def idle_api(make_api: MakeApi) -> AsyncIterator[Api]:
    async with make_api(workers=0) as started:
        yield started


JOB = """query($id: ID!) { job(id: $id) { id kind status cancelRequested input createdAt } }"""
CANCEL = """mutation($id: ID!) { cancelJob(id: $id) { id status canceledAt } }"""


async def test_a_job_is_read_and_canceled_and_another_tenants_is_not_found(idle_api: Api) -> None:
    job = await idle_api.submit(input={"message": "hi"})
    read = (await graphql(idle_api.client, JOB, id=job["id"]))["data"]["job"]
    assert read == {
        "id": job["id"],
        "kind": "echo",
        "status": "QUEUED",
        "cancelRequested": False,
        "input": job["input"],
        "createdAt": job["created_at"],
    }
    for client, mutation in ((idle_api.other, CANCEL), (idle_api.other, JOB)):
        refused = await graphql(client, mutation, id=job["id"])
        assert codes(refused) == ["NOT_FOUND"] and set(refused["data"].values()) == {None}
    canceled = (await graphql(idle_api.client, CANCEL, id=job["id"]))["data"]["cancelJob"]
    assert canceled["status"] == "CANCELED" and canceled["canceledAt"] is not None
    assert (await idle_api.client.get(f"/api/v1/jobs/{job['id']}")).json()["status"] == "canceled"
    again = await graphql(idle_api.client, CANCEL, id=job["id"])
    assert codes(again) == ["CONFLICT"] and again["data"] == {"cancelJob": None}
    missing = await graphql(idle_api.client, JOB, id="no-such-job")
    assert codes(missing) == ["NOT_FOUND"]


CREATE_BATCH = """mutation($input: CreateBatchInput!) {
  createBatch(input: $input) {
    id status collection inputFileId idField chunkRecords requestCounts { total completed failed }
    job { id kind status }
  }
}"""
BATCH = """query($id: ID!) { batch(id: $id) { id status collection job { id status } } }"""


async def test_create_batch_makes_a_batch_the_rest_api_shows(idle_api: Api) -> None:
    assert (await idle_api.client.post("/api/v1/collections", json={"name": "jobs"})).status_code == 201
    record = {"custom_id": "a", "text": "Welder wanted in Busan", "metadata": {}}
    uploaded = await idle_api.client.post(
        "/api/v1/files", files={"file": ("records.jsonl", json.dumps(record).encode() + b"\n")}
    )
    file_id = uploaded.json()["id"]
    made = await graphql(
        idle_api.client, CREATE_BATCH, input={"inputFileId": file_id, "collection": "jobs", "chunkRecords": 5}
    )
    batch = made["data"]["createBatch"]
    assert batch["status"] == "VALIDATING" and batch["idField"] == "custom_id" and batch["chunkRecords"] == 5
    assert batch["requestCounts"] == {"total": None, "completed": 0, "failed": 0}
    assert batch["job"]["kind"] == "batch" and batch["job"]["status"] == "QUEUED"
    rest = (await idle_api.client.get(f"/api/v1/batches/{batch['id']}")).json()
    assert (rest["status"], rest["job_id"], rest["input_file_id"]) == ("validating", batch["job"]["id"], file_id)
    read = (await graphql(idle_api.client, BATCH, id=batch["id"]))["data"]["batch"]
    job = {"id": batch["job"]["id"], "status": "QUEUED"}
    assert read == {"id": batch["id"], "status": "VALIDATING", "collection": "jobs", "job": job}
    # Canceling its job shows as the batch's status, as in REST.
    await graphql(idle_api.client, CANCEL, id=batch["job"]["id"])
    assert (await graphql(idle_api.client, BATCH, id=batch["id"]))["data"]["batch"]["status"] == "CANCELED"
    other = await graphql(idle_api.other, BATCH, id=batch["id"])
    assert codes(other) == ["NOT_FOUND"] and other["data"] == {"batch": None}
    # The tenant's own file and collection only; the REST body's checks, naming the argument.
    for input_, code, field in (
        ({"inputFileId": file_id, "collection": "nope"}, "NOT_FOUND", None),
        ({"inputFileId": file_id, "collection": "jobs", "chunkRecords": 0}, "INVALID_INPUT", "input.chunkRecords"),
        (
            {"inputFileId": file_id, "collection": "jobs", "textTemplate": "{title"},
            "INVALID_INPUT",
            "input.textTemplate",
        ),
    ):
        refused = await graphql(idle_api.client, CREATE_BATCH, input=input_)
        assert codes(refused) == [code], refused
        assert refused["errors"][0]["extensions"].get("field") == field
    assert codes(await graphql(idle_api.other, CREATE_BATCH, input={"inputFileId": file_id, "collection": "jobs"})) == [
        "NOT_FOUND"
    ]
    assert len((await idle_api.client.get("/api/v1/batches")).json()["items"]) == 1


# -- the request: authentication, limits, the document's own errors ---------------------------------------


async def test_a_request_without_a_valid_key_is_unauthenticated_before_its_body_is_read(idle_api: Api) -> None:
    body = CountedBody(8 * 2**20)
    response = await idle_api.anonymous.post("/graphql", content=body.chunks(), headers=JSON_TYPE)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert codes(response.json()) == ["UNAUTHENTICATED"] and "data" not in response.json()
    assert body.pulled == 0
    wrong = await idle_api.anonymous.post(
        "/graphql", json={"query": "{ collections { name } }"}, headers={"Authorization": "Bearer il_wrong"}
    )
    assert wrong.status_code == 401 and codes(wrong.json()) == ["UNAUTHENTICATED"]


async def test_a_client_guessing_keys_is_rate_limited_like_on_the_rest_api(make_api: MakeApi) -> None:
    async with make_api(workers=0, unknown_key_burst=1, unknown_keys_per_s=0.01) as api:
        headers = {"Authorization": "Bearer il_guess"}
        first = await api.anonymous.post("/graphql", json={"query": "{ collections { name } }"}, headers=headers)
        second = await api.anonymous.post("/graphql", json={"query": "{ collections { name } }"}, headers=headers)
        assert first.status_code == 401 and second.status_code == 429
        assert codes(second.json()) == ["RATE_LIMITED"] and int(second.headers["retry-after"]) >= 1
        assert second.json()["errors"][0]["extensions"]["retryAfter"] == int(second.headers["retry-after"])


async def test_documents_over_the_limits_are_refused_with_their_codes(idle_api: Api) -> None:
    deep = """{ search(collection: "c", query: "q", limit: 1) { hits { document { similar(limit: 1) { hits {
        document { similar(limit: 1) { hits { document { id } } } } } } } } } }"""
    too_deep = await graphql(idle_api.client, deep)
    assert codes(too_deep) == ["QUERY_TOO_DEEP"] and "data" not in too_deep  # refused before it ran
    wide = (
        "{ "
        + " ".join(f'a{i}: search(collection: "c", query: "q", limit: 100) {{ hits {{ chunkId }} }}' for i in range(11))
        + " }"
    )
    too_complex = await graphql(idle_api.client, wide)
    assert codes(too_complex) == ["QUERY_TOO_COMPLEX"] and "costs 1210" in too_complex["errors"][0]["message"]
    aliases = "{ " + " ".join(f"a{i}: collections {{ name }}" for i in range(11)) + " }"
    root = await graphql(idle_api.client, aliases)  # cheap, but each its own reads, all at once
    assert codes(root) == ["QUERY_TOO_COMPLEX"] and "11 fields at its root" in root["errors"][0]["message"]
    spread = "{ ...A ...A } fragment A on Query { " + " ".join(f"a{i}: collections {{ name }}" for i in range(6)) + " }"
    assert codes(await graphql(idle_api.client, spread)) == ["QUERY_TOO_COMPLEX"]  # 12, through a fragment
    assert "errors" not in await graphql(idle_api.client, "{ ...A } fragment A on Query { a: collections { name } }")
    # Under the token limit, yet validating it compared the 480 fields pairwise (~1 s on the event loop).
    repeated = await graphql(idle_api.client, "{ collections { " + "fields { name } " * 480 + "} }")
    assert codes(repeated) == ["QUERY_TOO_COMPLEX"] and "data" not in repeated
    assert "over 300 fields and fragments" in repeated["errors"][0]["message"]
    fewer = await graphql(idle_api.client, "{ collections { " + "fields { name } " * 100 + "} }")
    assert codes(fewer) == ["QUERY_TOO_COMPLEX"] and "data" not in fewer
    assert "fields 100 times in one place; the limit is 10" in fewer["errors"][0]["message"]
    tokens = await graphql(idle_api.client, "{ " + "collections { name } " * 600 + "}")
    assert codes(tokens) == ["GRAPHQL_PARSE_FAILED"]
    unknown = await graphql(idle_api.client, "{ collections { secret } }")
    assert codes(unknown) == ["GRAPHQL_VALIDATION_FAILED"] and "secret" in unknown["errors"][0]["message"]
    syntax = await graphql(idle_api.client, "{ collections { name }")
    assert codes(syntax) == ["GRAPHQL_PARSE_FAILED"]
    # The standard introspection query (GraphiQL's) is allowed.
    schema = await graphql(idle_api.client, get_introspection_query(descriptions=True))
    assert "errors" not in schema and schema["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_bodies_that_are_no_graphql_request_are_refused_as_the_rest_api_refuses_them(idle_api: Api) -> None:
    client = idle_api.client
    huge = await client.post("/graphql", json={"query": "{ collections { name } }", "pad": "x" * 70_000})
    assert huge.status_code == 413 and codes(huge.json()) == ["TOO_LARGE"]
    streamed = CountedBody(8 * 2**20, chunk_bytes=16 * 1024)  # no Content-Length: counted as it comes
    cut = await client.post("/graphql", content=streamed.chunks(), headers=JSON_TYPE)
    assert cut.status_code == 413 and streamed.pulled <= 64 * 1024 + 16 * 1024
    form = await client.post("/graphql", content=b"query={collections{name}}", headers={"content-type": "text/plain"})
    assert form.status_code == 415 and codes(form.json()) == ["UNSUPPORTED_MEDIA_TYPE"]
    for body, field in (
        (b"{", "body"),
        (b"[]", "body"),
        (b'{"query": 3}', "query"),
        (b'{"query": "{ x }", "variables": []}', "variables"),
    ):
        response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422 and codes(response.json()) == ["INVALID_INPUT"], body
        assert response.json()["errors"][0]["extensions"]["field"] == field
    no_operation = await client.post(
        "/graphql", json={"query": "query A { collections { name } }", "operationName": "B"}
    )
    assert no_operation.status_code == 422 and codes(no_operation.json()) == ["INVALID_INPUT"]


async def test_the_graphiql_page_is_served_only_when_the_setting_is_on(make_api: MakeApi) -> None:
    async with make_api(workers=0) as api:
        assert (await api.anonymous.get("/graphql")).status_code == 405
    async with make_api(workers=0, graphql_ide=True) as api:
        page = await api.anonymous.get("/graphql")
        assert page.status_code == 200 and "graphiql" in page.text.lower()


def test_the_committed_schema_is_the_schema() -> None:
    committed = (DOCS / "graphql.schema.graphql").read_text(encoding="utf-8")
    assert committed == sdl(), "regenerate it: .venv/bin/python -m inferline.api.graphql > docs/graphql.schema.graphql"
