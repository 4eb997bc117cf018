"""Collections, ingest and search through the API: real e5 embeddings, real Kiwi, the real embedded
Qdrant Edge index, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.api.conftest import Api, MakeApi
from tests.helpers import eventually
from tests.ocr_samples import KOREAN, image_pdf, render_page

from inferline.search import query as search_query
from inferline.search import tokens as tokens_module

DB_KO = "PostgreSQL 데이터베이스를 설치하는 방법을 설명합니다. 먼저 패키지를 내려받아 서버에 설치하세요."
BREAD_EN = "How to bake sourdough bread at home: feed the starter, mix the dough, and bake it hot."
VECTORS_EN = "Vector databases index embeddings with HNSW graphs for fast nearest neighbour search."


@pytest.fixture
async def search_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    async with make_api(database_url=database_url, max_upload_bytes=2_000_000) as started:
        yield started


async def create(api: Api, name: str = "docs", **body: Any) -> dict[str, Any]:
    response = await api.client.post("/api/v1/collections", json={"name": name} | body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def add(api: Api, text: str, collection: str = "docs", **body: Any) -> dict[str, Any]:
    response = await api.client.post(f"/api/v1/collections/{collection}/documents", json={"text": text} | body)
    assert response.status_code in (200, 201), response.text
    document: dict[str, Any] = response.json()
    return document


async def ready(api: Api, document: dict[str, Any], collection: str = "docs", timeout_s: float = 60) -> dict[str, Any]:
    async def current() -> dict[str, Any]:
        response = await api.client.get(f"/api/v1/collections/{collection}/documents/{document['id']}")
        found: dict[str, Any] = response.json()
        return found

    return await eventually(current, lambda found: found["status"] in ("ready", "failed"), timeout_s=timeout_s)


async def search(api: Api, query: str, collection: str = "docs", **body: Any) -> dict[str, Any]:
    response = await api.client.post(f"/api/v1/collections/{collection}/search", json={"query": query} | body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def query_embeddings(api: Api) -> float:
    """Queries the query model has embedded so far (its batch sizes summed, from /metrics)."""
    text = (await api.client.get("/metrics")).text
    match = re.search(r'inferline_model_batch_size_sum\{model="e5-small:query"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def documents_of(result: dict[str, Any]) -> list[str]:
    return [hit["document_id"] for hit in result["hits"]]


async def test_collections_are_created_listed_scoped_to_their_tenant_and_deleted(search_api: Api) -> None:
    made = await create(search_api, fields={"lang": "keyword", "year": "int"})
    assert made["dim"] == 384 and made["embedding_model"] == "e5-small" and made["fields"]["year"] == "int"
    again = await search_api.client.post("/api/v1/collections", json={"name": "docs"})
    bad_type = await search_api.client.post("/api/v1/collections", json={"name": "x", "fields": {"a": "text"}})
    bad_model = await search_api.client.post("/api/v1/collections", json={"name": "y", "embedding_model": "gpt"})
    bad_name = await search_api.client.post("/api/v1/collections", json={"name": "../etc"})
    assert again.status_code == 409
    assert bad_type.status_code == 422 and bad_type.json()["field"] == "fields.a"
    assert bad_model.status_code == 422 and "e5-small" in bad_model.json()["detail"]
    assert bad_name.status_code == 422
    listed = (await search_api.client.get("/api/v1/collections")).json()["items"]
    assert [c["name"] for c in listed] == ["docs"] and listed[0]["document_count"] == 0
    other = search_api.other
    assert (await other.get("/api/v1/collections/docs")).status_code == 404
    assert (await other.post("/api/v1/collections/docs/search", json={"query": "x"})).status_code == 404
    assert (await other.post("/api/v1/collections/docs/documents", json={"text": "x"})).status_code == 404
    assert (await other.get("/api/v1/collections")).json()["items"] == []
    for bad in ({"query": "   "}, {"query": "x", "limit": 101}, {"query": "x", "mode": "fuzzy"}, {"q": "x"}):
        response = await search_api.client.post("/api/v1/collections/docs/search", json=bad)
        assert response.status_code == 422, bad
    assert (await other.post("/api/v1/collections", json={"name": "docs"})).status_code == 201  # its own "docs"
    assert (await search_api.client.delete("/api/v1/collections/docs")).status_code == 204
    assert (await search_api.client.get("/api/v1/collections/docs")).status_code == 404
    assert (await other.get("/api/v1/collections/docs")).status_code == 200


async def test_korean_and_english_documents_are_found_by_morpheme_meaning_and_across_languages(
    search_api: Api,
) -> None:
    await create(search_api)
    korean, bread, vectors = [await add(search_api, text) for text in (DB_KO, BREAD_EN, VECTORS_EN)]
    for document in (korean, bread, vectors):
        done = await ready(search_api, document)
        assert done["status"] == "ready" and done["chunks"] == 1, done
    job = (await search_api.client.get(f"/api/v1/jobs/{korean['job_id']}")).json()
    assert job["status"] == "succeeded" and job["stage"] == "index" and job["result"]["chunks"] == 1
    # A bare noun finds the text where it carries a particle (데이터베이스를), and nothing else.
    keyword = await search(search_api, "데이터베이스", mode="keyword")
    assert documents_of(keyword) == [korean["id"]]
    start, end = keyword["hits"][0]["highlights"][0]
    assert DB_KO[start:end] == "데이터베이스"
    assert documents_of(await search(search_api, "sourdough", mode="keyword")) == [bread["id"]]
    # Meaning across languages: an English question finds the Korean text first.
    semantic = await search(search_api, "how do I install a database server?", mode="semantic")
    assert documents_of(semantic)[0] == korean["id"] and len(semantic["hits"]) == 3
    # "baking bread at home": e5 puts it nearer the bread text by 0.014-0.02 in cosine on both engines and
    # CPU kinds measured ("빵 굽는 법" was a 0.003 tie that AVX2 rounding turned over).
    hybrid = await search(search_api, "집에서 빵 굽기")
    assert documents_of(hybrid)[0] == bread["id"]
    assert hybrid["took_ms"] > 0 and hybrid["cached"] is False
    # Passages and queries were embedded by two copies of the model, so queries never queue behind ingest.
    models = {m["name"]: m for m in (await search_api.client.get("/api/v1/models")).json()["items"]}
    assert models["e5-small"]["state"] == models["e5-small:query"]["state"] == "ready"
    assert models["e5-small:query"]["processes"] == 1 and models["e5-small:query"]["mode"] == "batched"


async def test_filters_of_every_kind_select_exactly_the_matching_documents(search_api: Api) -> None:
    fields = {"lang": "keyword", "year": "int", "score": "float", "reviewed": "bool", "published": "date"}
    await create(search_api, fields=fields)
    rows = [
        ("ko", 2019, 0.5, True, "2019-03-01"),
        ("en", 2020, 1.5, False, "2020-07-15"),
        ("ko", 2022, 2.5, False, "2022-01-10T09:00:00+09:00"),
        ("ja", 2024, 3.5, True, "2024-12-31"),
    ]
    ids = []
    for i, (lang, year, score, reviewed, published) in enumerate(rows):
        metadata = {"lang": lang, "year": year, "score": score, "reviewed": reviewed, "published": published}
        document = await add(search_api, f"Document number {i} about search engines.", metadata=metadata)
        ids.append(document["id"])
    for document_id in ids:
        assert (await ready(search_api, {"id": document_id}))["status"] == "ready"
    cases: list[tuple[dict[str, Any], set[int]]] = [
        ({"lang": "ko"}, {0, 2}),
        ({"lang": {"in": ["en", "ja"]}}, {1, 3}),
        ({"year": {"gte": 2020, "lte": 2022}}, {1, 2}),
        ({"year": {"gt": 2022}}, {3}),
        ({"score": 1.5}, {1}),
        ({"score": {"lt": 2.0}}, {0, 1}),
        ({"reviewed": True}, {0, 3}),
        ({"reviewed": False}, {1, 2}),
        ({"published": {"gte": "2020-01-01", "lte": "2022-01-10"}}, {1, 2}),  # 09:00+09:00 is 00:00Z
        ({"published": {"gte": "2020-01-01", "lt": "2022-01-10"}}, {1}),
        ({"published": {"gt": "2022-01-10T00:00:00Z"}}, {3}),
        ({"not": {"lang": "ko"}}, {1, 3}),
        ({"or": [{"year": 2019}, {"lang": "ja"}]}, {0, 3}),
        ({"and": [{"lang": "ko"}, {"reviewed": False}]}, {2}),
        ({"lang": "ko", "year": {"gte": 2020}}, {2}),
        ({"lang": "fr"}, set()),
    ]
    for flt, expected in cases:
        for mode in ("semantic", "keyword", "hybrid"):
            result = await search(search_api, "search engines document", mode=mode, filter=flt, limit=100)
            assert set(documents_of(result)) == {ids[i] for i in expected}, (flt, mode)
    for flt, field in [({"colour": "red"}, "filter.colour"), ({"year": "2020"}, "filter.year")]:
        response = await search_api.client.post("/api/v1/collections/docs/search", json={"query": "x", "filter": flt})
        assert response.status_code == 422 and response.json()["field"] == field
    wrong = await search_api.client.post(
        "/api/v1/collections/docs/documents", json={"text": "t", "metadata": {"year": "soon"}}
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "metadata.year"


async def test_pages_of_one_ranked_list_never_repeat_or_skip_and_go_stale_on_change(search_api: Api) -> None:
    await create(search_api, chunk_tokens=32, overlap_tokens=0)
    paragraphs = "\n\n".join(f"Paragraph {i} explains how search engine number {i} ranks results." for i in range(45))
    document = await ready(search_api, await add(search_api, paragraphs))
    assert document["chunks"] >= 20
    first = await search(search_api, "search engine ranking", limit=7)
    seen, cursor, pages = [hit["chunk_id"] for hit in first["hits"]], first["next_cursor"], 1
    while cursor:
        page = await search(search_api, "search engine ranking", limit=7, cursor=cursor)
        assert page["cached"] is True
        seen += [hit["chunk_id"] for hit in page["hits"]]
        cursor, pages = page["next_cursor"], pages + 1
    assert len(seen) == len(set(seen)) == document["chunks"] == first["total"] and pages > 2
    stale = first["next_cursor"]
    other_query = await search_api.client.post(
        "/api/v1/collections/docs/search", json={"query": "bread", "cursor": stale}
    )
    garbage = await search_api.client.post("/api/v1/collections/docs/search", json={"query": "x", "cursor": "zz"})
    assert other_query.status_code == 422 and other_query.json()["field"] == "cursor"
    assert garbage.status_code == 422
    await ready(search_api, await add(search_api, BREAD_EN))
    changed = await search_api.client.post(
        "/api/v1/collections/docs/search", json={"query": "search engine ranking", "limit": 7, "cursor": stale}
    )
    assert changed.status_code == 409 and "changed" in changed.json()["detail"]
    grouped = await search(search_api, "search engine ranking", group_by_document=True, limit=100)
    assert len(grouped["hits"]) == 2 and len(set(documents_of(grouped))) == 2


async def test_the_cache_hits_until_an_ingest_or_delete_and_deleted_documents_vanish_from_every_mode(
    search_api: Api,
) -> None:
    await create(search_api)
    korean = await ready(search_api, await add(search_api, DB_KO))
    assert (await search(search_api, "데이터베이스 설치"))["cached"] is False
    assert (await search(search_api, "  데이터베이스   설치 "))["cached"] is True  # same query, normalized
    embedded = await query_embeddings(search_api)
    assert embedded >= 1
    vectors = await ready(search_api, await add(search_api, "데이터베이스 " + VECTORS_EN))
    after_ingest = await search(search_api, "데이터베이스 설치")
    assert after_ingest["cached"] is False and set(documents_of(after_ingest)) == {korean["id"], vectors["id"]}
    assert await query_embeddings(search_api) == embedded  # searched again, but the query was not re-embedded
    metrics = (await search_api.client.get("/metrics")).text
    # One hit (the repeat); two misses (the first search, the one after the ingest): the ratio's parts.
    assert 'inferline_search_cache_total{result="hit"} 1.0' in metrics
    assert 'inferline_search_cache_total{result="miss"} 2.0' in metrics
    assert (await search_api.client.delete(f"/api/v1/collections/docs/documents/{korean['id']}")).status_code == 204
    for mode in ("hybrid", "semantic", "keyword"):
        result = await search(search_api, "데이터베이스 설치", mode=mode)
        assert korean["id"] not in documents_of(result) and result["cached"] is False
    assert (await search_api.client.get(f"/api/v1/collections/docs/documents/{korean['id']}")).status_code == 404
    assert (await search_api.client.delete(f"/api/v1/collections/docs/documents/{korean['id']}")).status_code == 404


async def test_a_query_another_tenant_searched_is_embedded_anew_for_this_one(search_api: Api) -> None:
    """Query embeddings are cached per tenant: a hit on another tenant's entry would show in `took_ms`."""
    query = "how do I install a database server?"
    await create(search_api)
    await create(search_api, "more")
    assert (await search_api.other.post("/api/v1/collections", json={"name": "docs"})).status_code == 201
    await search(search_api, query, mode="semantic")
    embedded = await query_embeddings(search_api)
    assert (await search(search_api, query, collection="more", mode="semantic"))["cached"] is False
    assert await query_embeddings(search_api) == embedded  # the tenant's own query, from its cache
    response = await search_api.other.post("/api/v1/collections/docs/search", json={"query": query, "mode": "semantic"})
    assert response.status_code == 200 and response.json()["cached"] is False
    assert await query_embeddings(search_api) == embedded + 1


async def test_reingesting_the_same_content_or_external_id_updates_instead_of_duplicating(search_api: Api) -> None:
    await create(search_api)
    first = await ready(search_api, await add(search_api, DB_KO))
    same = await search_api.client.post("/api/v1/collections/docs/documents", json={"text": DB_KO})
    assert same.status_code == 200 and same.json()["id"] == first["id"] and same.json()["job_id"] == first["job_id"]
    old = await ready(search_api, await add(search_api, BREAD_EN, external_id="recipe-1"))
    new = await add(search_api, VECTORS_EN, external_id="recipe-1")
    assert new["id"] == old["id"] and new["job_id"] != old["job_id"]
    await ready(search_api, new)
    listed = (await search_api.client.get("/api/v1/collections/docs/documents")).json()["items"]
    assert sorted(d["id"] for d in listed) == sorted([first["id"], old["id"]])
    assert {d["status"] for d in listed} == {"ready"}
    view = (await search_api.client.get("/api/v1/collections/docs")).json()
    assert view["document_count"] == 2
    assert view["documents_by_status"] == {"queued": 0, "processing": 0, "ready": 2, "failed": 0}
    assert documents_of(await search(search_api, "sourdough", mode="keyword")) == []
    assert documents_of(await search(search_api, "HNSW", mode="keyword")) == [old["id"]]
    page = (await search_api.client.get("/api/v1/collections/docs/documents", params={"limit": 1})).json()
    rest = (
        await search_api.client.get(
            "/api/v1/collections/docs/documents", params={"limit": 1, "cursor": page["next_cursor"]}
        )
    ).json()
    assert len(page["items"]) == len(rest["items"]) == 1 and page["items"][0]["id"] != rest["items"][0]["id"]


def _docx(paragraphs: list[tuple[str | None, str]]) -> bytes:
    body = "".join(
        (f'<w:p><w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else "<w:p>")
        + f"<w:r><w:t>{text}</w:t></w:r></w:p>"
        for style, text in paragraphs
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "word/document.xml",
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            f"<w:body>{body}</w:body></w:document>",
        )
    return buffer.getvalue()


async def test_files_of_every_kind_are_ingested_and_bad_ones_fail_with_a_reason(search_api: Api) -> None:
    await create(search_api, fields={"kind": "keyword"})
    uploads = {
        "page.html": b"<html><body><h1>Guide</h1><p>Kubernetes deployment steps</p><script>x()</script></body></html>",
        "notes.md": "# 설치\n\n쿠버네티스 클러스터를 준비합니다.".encode(),
        "report.docx": _docx([("Heading1", "Quarterly"), (None, "Revenue grew in the third quarter")]),
        "scan.pdf": image_pdf([render_page(KOREAN, "korean")]),
    }
    made = {}
    for name, data in uploads.items():
        response = await search_api.client.post(
            "/api/v1/collections/docs/documents",
            files={"file": (name, data)},
            data={"metadata": json.dumps({"kind": name.split(".")[1]}), "external_id": name},
        )
        assert response.status_code == 201, response.text
        made[name] = await ready(search_api, response.json())
        assert made[name]["status"] == "ready", made[name]
    assert documents_of(await search(search_api, "kubernetes", mode="keyword", filter={"kind": "html"})) == [
        made["page.html"]["id"]
    ]
    assert documents_of(await search(search_api, "쿠버네티스", mode="keyword")) == [made["notes.md"]["id"]]
    revenue = await search(search_api, "revenue", mode="keyword")
    assert documents_of(revenue) == [made["report.docx"]["id"]] and revenue["hits"][0]["heading"] == "Quarterly"
    scanned = await search(search_api, "테헤란로", mode="keyword")  # OCR'd from the scanned page
    assert documents_of(scanned) == [made["scan.pdf"]["id"]] and scanned["hits"][0]["page"] is None
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a.txt", "x")
    refused = await search_api.client.post(
        "/api/v1/collections/docs/documents", files={"file": ("a.zip", archive.getvalue())}
    )
    bad_metadata = await search_api.client.post(
        "/api/v1/collections/docs/documents", files={"file": ("a.txt", b"text")}, data={"metadata": "{not json"}
    )
    assert refused.status_code == 415 and bad_metadata.status_code == 422
    truncated = await search_api.client.post(
        "/api/v1/collections/docs/documents", files={"file": ("t.docx", _docx([(None, "x")])[:-40])}
    )
    assert truncated.status_code == 415  # no longer a readable zip: refused before anything is queued
    bad_xml = io.BytesIO()
    with zipfile.ZipFile(bad_xml, "w") as handle:
        handle.writestr("word/document.xml", "<w:document><unclosed")
    broken = await search_api.client.post(
        "/api/v1/collections/docs/documents", files={"file": ("b.docx", bad_xml.getvalue())}
    )
    assert broken.status_code == 201
    failed = await ready(search_api, broken.json())
    assert failed["status"] == "failed" and "DOCX" in failed["error"]
    empty = await ready(search_api, await add(search_api, "   \n\n  "))
    assert empty["status"] == "failed" and "no text" in empty["error"]


async def test_similar_documents_are_the_nearest_others(search_api: Api) -> None:
    await create(search_api)
    database = await ready(search_api, await add(search_api, DB_KO))
    backup = await ready(search_api, await add(search_api, "데이터베이스 서버의 백업과 복구 절차를 안내합니다."))
    bread = await ready(
        search_api, await add(search_api, "집에서 사워도우 빵을 굽는 방법: 반죽을 섞고 뜨겁게 굽습니다.")
    )
    url = f"/api/v1/collections/docs/documents/{database['id']}/similar"
    first = (await search_api.client.get(url)).json()
    hits = first["hits"]
    assert [hit["document_id"] for hit in hits] == [backup["id"], bread["id"]]  # never itself
    other = await search_api.other.get(url)
    assert other.status_code == 404
    # Cached like a search: the same page again, and another page of the same ranked list.
    again = (await search_api.client.get(url)).json()
    assert (first["cached"], again["cached"], again["hits"]) == (False, True, hits)
    one = (await search_api.client.get(url, params={"limit": 1})).json()
    assert one["cached"] is True and one["hits"] == hits[:1]
    # A delete advances the collection's version: the cached lists are not read again.
    assert (await search_api.client.delete(f"/api/v1/collections/docs/documents/{backup['id']}")).status_code == 204
    after = (await search_api.client.get(url)).json()
    assert after["cached"] is False and [hit["document_id"] for hit in after["hits"]] == [bread["id"]]


async def test_the_pgvector_backend_serves_the_same_api(make_api: MakeApi, pgvector_url: str) -> None:
    # The scale-out index (PostgreSQL 18 + pgvector) behind the same API; jobs on SQLite.
    async with make_api(search_backend="pgvector", search_database_url=pgvector_url) as api:
        await create(api, fields={"lang": "keyword"})
        korean = await ready(api, await add(api, DB_KO, metadata={"lang": "ko"}))
        bread = await ready(api, await add(api, BREAD_EN, metadata={"lang": "en"}))
        assert documents_of(await search(api, "데이터베이스", mode="keyword")) == [korean["id"]]
        semantic = await search(api, "how do I install a database server?", mode="semantic")
        assert documents_of(semantic) == [korean["id"], bread["id"]]
        assert documents_of(await search(api, "bread", filter={"lang": "ko"})) == [korean["id"]]
        assert (await search(api, "bread"))["cached"] is False
        assert (await search(api, "bread"))["cached"] is True
        await api.client.delete(f"/api/v1/collections/docs/documents/{bread['id']}")
        assert documents_of(await search(api, "bread")) == [korean["id"]]
        assert (await api.client.delete("/api/v1/collections/docs")).status_code == 204


async def test_a_restarted_server_loads_what_the_first_search_needs_in_the_background(
    make_api: MakeApi, database_url: str
) -> None:
    async with make_api(workers=0, database_url=database_url) as api:
        assert await search_query.warm_up(api.app.state.services.search) == []  # nothing to search yet
        await create(api)
    async with make_api(workers=0, database_url=database_url) as api:

        async def query_model_state() -> str:
            models = (await api.client.get("/api/v1/models")).json()["items"]
            state: str = {row["name"]: row["state"] for row in models}["e5-small:query"]
            return state

        # No search asked for: the startup's warm-up loads the query model (and Kiwi).
        state = await eventually(query_model_state, lambda state: state == "ready", timeout_s=60, interval_s=0.2)
        assert state == "ready"
        assert tokens_module._kiwi is not None


async def test_a_collection_deleted_while_its_document_is_embedded_leaves_no_index_behind(search_api: Api) -> None:
    made = await create(search_api)
    paragraph = "데이터베이스를 설치하고 서버를 시작한 다음 설정 파일의 경로를 확인합니다. " * 12
    document = await add(search_api, "\n\n".join(f"{i}. {paragraph}" for i in range(40)))  # ~40 chunks: seconds
    await search_api.wait(document["job_id"], lambda job: job["stage"] == "embed")
    assert (await search_api.client.delete("/api/v1/collections/docs")).status_code == 204
    job = await search_api.wait(document["job_id"])
    assert job["status"] == "succeeded" and job["result"]["skipped"].startswith("superseded")
    index_root = search_api.services.settings.data_dir.resolve() / "index"
    assert not (index_root / made["id"]).exists()  # nothing was written to the dropped collection's index


async def test_a_search_while_the_collection_is_being_deleted_is_not_found(search_api: Api) -> None:
    made = await create(search_api)
    bread = await ready(search_api, await add(search_api, BREAD_EN))
    await search(search_api, "bread")  # this process now holds its copy of the collection
    # The last step of a delete, the index's drop, lands between a search's read of the collection and its
    # read of the index.
    await search_api.services.search.index.drop(made["id"])
    for response in (
        await search_api.client.post("/api/v1/collections/docs/search", json={"query": "sourdough starter"}),
        await search_api.client.get(f"/api/v1/collections/docs/documents/{bread['id']}/similar"),
    ):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "the collection was deleted"


@pytest.mark.redis
async def test_a_cached_page_is_answered_from_its_hits_encoded_once_and_redis_keeps_only_the_hits(
    make_api: MakeApi,
) -> None:
    """A rendered page's hits are encoded to JSON once in a process and kept with the page in the local
    cache: a cached answer is those bytes with the rest of the answer around them, the same JSON an
    encoding of the whole answer gives. The copy shared through Redis carries no encoding."""
    import os

    import redis.asyncio as aioredis

    from inferline.search.caches import PREFIX

    redis_url = os.environ.get("INFERLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    async with make_api(redis_url=redis_url) as api:
        await create(api)
        await ready(api, await add(api, DB_KO))
        await ready(api, await add(api, BREAD_EN))
        body = {"query": "database server", "limit": 1}
        first = await api.client.post("/api/v1/collections/docs/search", json=body)
        again = await api.client.post("/api/v1/collections/docs/search", json=body)
        answer = again.json()
        assert (first.json()["cached"], answer["cached"]) == (False, True)
        assert answer["next_cursor"] and answer["total"] == 2 and answer["hits"] == first.json()["hits"]
        assert again.content == json.dumps(answer, separators=(",", ":")).encode()
        local = api.services.search.result_cache._local
        encoded = [key for key, value in local.items() if isinstance(value, dict) and "_hits_json" in value]
        assert len(encoded) == 1 and local[encoded[0]]["_hits_json"] == json.dumps(
            answer["hits"], separators=(",", ":")
        )
        client = aioredis.from_url(redis_url)
        try:
            shared = json.loads(await client.get(PREFIX + encoded[0]))
        finally:
            await client.aclose()
        assert shared == {"hits": answer["hits"], "total": 2}
        # From Redis alone (this process's copies forgotten): the same answer, encoded again here.
        local.clear()
        from_redis = await api.client.post("/api/v1/collections/docs/search", json=body)
        assert from_redis.json() | {"took_ms": 0} == answer | {"took_ms": 0}
