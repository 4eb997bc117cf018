"""The `batch` kind's bulk path run with an in-memory job context: real rows (SQLite), the embedded Qdrant
index, and a small deterministic embedding model behind the real model runtime (its batcher), whose
batches a test can see and poison. Through the API with e5: tests/api/test_batches_api.py."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from tests.adapters.test_ingest_kind import MODEL, Setup, hash16, ingest_context
from tests.conftest import sqlite_url

from inferline import db
from inferline.batches import kind as batch_kind
from inferline.batches import upsert
from inferline.batches.deps import BatchDeps
from inferline.batches.kind import BatchInput, run_batch
from inferline.batches.model import IN_PROGRESS, Batch
from inferline.batches.store import BatchStore
from inferline.errors import ModelError, NonRetryable, NotFound
from inferline.files.blobs import BlobStore
from inferline.files.service import FileInfo, get_file, receive_file, record_file
from inferline.ids import new_id
from inferline.inference.model import Model, ProcessingMode
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.submission import Submitter
from inferline.jobs.testing import MemoryContext
from inferline.metrics import Metrics
from inferline.ocr.deps import OcrDeps
from inferline.ocr.documents import Limits
from inferline.schema import batch_records, documents, files, jobs
from inferline.search import kind as search_kind
from inferline.search.caches import ResultCache
from inferline.search.deps import SearchDeps
from inferline.search.documents import add_document, delete_document, get_document
from inferline.search.embedders import EmbedInput
from inferline.search.index import ChunkRecord, IndexSpec
from inferline.search.kind import IngestInput, run_ingest
from inferline.search.model import Collection, Document, DocumentStatus
from inferline.search.qdrant import QdrantIndex
from inferline.search.tokens import tokenize
from inferline.turns import TenantSlots


class HashModel(Model[EmbedInput, np.ndarray]):
    """`hash16` as a batched model; it keeps the size of every batch it ran, and a batch holding a text with
    "poison" fails whole, as a model whose process a bad input crashes does."""

    name: ClassVar[str] = MODEL
    max_batch_size: ClassVar[int] = 8
    default_mode: ClassVar[ProcessingMode | None] = ProcessingMode.BATCHED
    batches: ClassVar[list[int]] = []
    down: ClassVar[bool] = False

    def predict_batch(self, inputs: list[EmbedInput]) -> list[np.ndarray | BaseException]:
        HashModel.batches.append(len(inputs))
        if HashModel.down or any("poison" in item.text for item in inputs):
            raise RuntimeError("the model process died")
        return [hash16(item) for item in inputs]


class Bulk(Setup):
    def __init__(self, search: SearchDeps, ocr: OcrDeps, submitter: Submitter, batches: BatchDeps) -> None:
        super().__init__(search, ocr, submitter)
        self.batches = batches

    async def batch(self, collection: Collection, records: list[dict[str, Any]], chunk_records: int = 10) -> Batch:
        content = b"".join(json.dumps(record).encode() + b"\n" for record in records)
        return await self.file_batch(collection, content, "r.jsonl", chunk_records)

    async def file_batch(self, collection: Collection, content: bytes, filename: str, chunk_records: int) -> Batch:
        file = await receive_file(
            self.search.blobs, tenant=collection.tenant, source=io.BytesIO(content), filename=filename, max_bytes=10**7
        )
        await record_file(self.search.engine, file)
        batch = Batch.new(
            id=new_id(),
            tenant=collection.tenant,
            collection=collection.name,
            input_file_id=file.id,
            job_id=new_id(),
            chunk_records=chunk_records,
            status=IN_PROGRESS,
        )
        async with db.write(self.search.engine) as conn:
            await BatchStore(conn).add(batch)
        return batch

    def context(self, **kwargs: Any) -> MemoryContext:
        return MemoryContext(tenant="t", models=self.search.models, **kwargs)

    async def run(self, batch: Batch, ctx: MemoryContext | None = None) -> dict[str, Any]:
        data = BatchInput(batch_id=batch.id, input_file_id=batch.input_file_id)
        return await run_batch(self.batches, ctx or self.context(), data)

    async def count(self, table: sa.Table) -> int:
        async with db.read(self.search.engine) as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)

    async def errors(self, batch: Batch) -> list[dict[str, Any]]:
        async with db.read(self.search.engine) as conn:
            return await BatchStore(conn).records(batch.id, failed=True, after_line=0)

    async def chunk_ids(self, collection: Collection, words: str) -> dict[str, str]:
        """Chunk id by document id, of the chunks holding these words."""
        found = await self.search.index.keyword(collection.spec, tokenize(words), None, 100)
        return {candidate.document_id or "": candidate.chunk_id for candidate in found}


@pytest.fixture
async def bulk(tmp_path: Path) -> AsyncIterator[Bulk]:
    HashModel.batches, HashModel.down = [], False
    url = sqlite_url(tmp_path)
    db.upgrade(url)
    engine = db.create_engine(url)
    blobs = BlobStore(tmp_path / "blobs")
    metrics = Metrics()
    models = ModelRuntime(device="cpu", modes={}, queue_limit=1000, metrics=metrics)
    models.register(MODEL, HashModel)
    await models.predict(MODEL, EmbedInput("loaded before the tests count its batches"))
    HashModel.batches.clear()
    index = QdrantIndex(tmp_path / "index")
    search = SearchDeps(
        engine=engine,
        blobs=blobs,
        index=index,
        models=models,
        result_cache=ResultCache(10),
        metrics=metrics,
        embedding_models=frozenset({MODEL}),
        default_model=MODEL,
    )
    ocr = OcrDeps(engine, blobs, models, Limits(max_pages=10, max_page_pixels=50_000_000), default_dpi=150)
    registry = KindRegistry()
    search_kind.register(registry, search, ocr)
    submitter = Submitter(engine, registry, default_max_attempts=3)
    batches = BatchDeps(engine=engine, blobs=blobs, submitter=submitter, search=search)
    batch_kind.register(registry, batches)
    yield Bulk(search, ocr, submitter, batches)
    submitter.close()
    await index.close()
    await models.aclose()
    await engine.dispose()


def posting(i: int, **changes: Any) -> dict[str, Any]:
    record = {"custom_id": f"p{i}", "text": f"posting {i}: welder wanted, shift {i % 3}", "metadata": {"n": i}}
    return record | changes


async def test_a_batch_indexes_its_records_in_bulk_with_full_model_batches_and_no_job_or_file_per_record(
    bulk: Bulk,
) -> None:
    collection = await bulk.collection()
    batch = await bulk.batch(collection, [posting(i) for i in range(40)], chunk_records=16)
    ctx = bulk.context()

    assert await bulk.run(batch, ctx) == {"batch_id": batch.id, "completed": 40, "failed": 0}

    assert await bulk.count(jobs) == 0  # no ingest job
    assert await bulk.count(files) == 2  # the input and the output file: none per record
    assert len(ctx.predictions) == 40 and await bulk.search.index.count(collection.id) == 40
    assert HashModel.batches == [8] * 5  # 16 records' chunks handed over at once: every batch full
    async with db.read(bulk.search.engine) as conn:
        output = await BatchStore(conn).records(batch.id, failed=False, after_line=0)
    document = await get_document(bulk.search, collection=collection, document_id=output[3]["document_id"])
    assert (document.external_id, document.status, document.chunks) == ("p3", DocumentStatus.READY, 1)
    assert (document.file_id, document.job_id, document.metadata) == (None, ctx.id, {"n": 3})
    assert document.id in await bulk.chunk_ids(collection, "posting 3")
    assert await bulk.version(collection) == 1  # advanced once, at the end


async def test_a_chunks_index_write_is_split_into_transactions_of_bounded_size(
    bulk: Bulk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite every writer of every tenant waits for the transaction that writes a chunk's records to the
    index: a chunk of up to 10,000 records is written in groups of INDEX_WRITE_RECORDS chunks (here 6), each
    document's chunks still replaced whole in one of them."""
    monkeypatch.setattr(upsert, "INDEX_WRITE_RECORDS", 6)
    collection = await bulk.collection()
    batch = await bulk.batch(collection, [posting(i) for i in range(16)], chunk_records=16)
    written: list[int] = []
    index = bulk.search.index
    original = index.delete_documents

    async def counted(collection_id: str, document_ids: Any) -> None:
        written.append(len(document_ids))
        await original(collection_id, document_ids)

    monkeypatch.setattr(index, "delete_documents", counted)
    assert (await bulk.run(batch))["completed"] == 16
    assert written == [6, 6, 4]  # one chunk of 16 records (a chunk each), three transactions
    assert await bulk.search.index.count(collection.id) == 16
    rows = await _output(bulk, batch.id)
    statuses = [
        (await get_document(bulk.search, collection=collection, document_id=row["document_id"])).status for row in rows
    ]
    assert len(rows) == 16 and set(statuses) == {DocumentStatus.READY}


async def _output(bulk: Bulk, batch_id: str) -> list[dict[str, Any]]:
    async with db.read(bulk.search.engine) as conn:
        return await BatchStore(conn).records(batch_id, failed=False, after_line=0)


async def test_unchanged_records_cost_nothing_and_a_changed_one_replaces_its_chunks(bulk: Bulk) -> None:
    collection = await bulk.collection()
    records = [posting(i) for i in range(10)]
    await bulk.run(await bulk.batch(collection, records))
    before = await bulk.chunk_ids(collection, "welder")
    records[3] = posting(3, text="posting 3: baker wanted at dawn")
    records[5] = posting(5, metadata={"n": 50})
    ctx = bulk.context()

    await bulk.run(await bulk.batch(collection, records), ctx)

    assert sorted(item.text for _, item in ctx.predictions) == ["posting 3: baker wanted at dawn", posting(5)["text"]]
    after = await bulk.chunk_ids(collection, "welder")
    assert await bulk.search.index.count(collection.id) == 10  # replaced, not added
    three = next(iter(await bulk.chunk_ids(collection, "baker")))
    assert three in before and three not in after and len(after) == 9  # p3's old text is gone from the index
    five = next(d for d, c in after.items() if c != before.get(d))  # p5: a new chunk, the same document
    kept = {d: c for d, c in before.items() if d not in (three, five)}
    assert {d: c for d, c in after.items() if d != five} == kept  # the other 8: the very same chunks
    document = await get_document(bulk.search, collection=collection, document_id=five)
    assert document.metadata == {"n": 50} and document.job_id == ctx.id


async def test_a_record_whose_embedding_fails_alone_goes_to_the_error_file_while_the_rest_complete(
    bulk: Bulk,
) -> None:
    collection = await bulk.collection()
    records = [posting(i) for i in range(10)]
    records[4] = posting(4, text="posting 4: poison in the model")

    result = await bulk.run(await bulk.batch(collection, records))

    assert result["completed"] == 9 and result["failed"] == 1
    [error] = await bulk.errors(await _only_batch(bulk))
    assert (error["custom_id"], error["line"]) == ("p4", 5)
    assert error["error"].startswith("internal error (RuntimeError)"), error  # the log has the text
    assert await bulk.search.index.count(collection.id) == 9
    # The poisoned micro-batch failed whole; the runtime ran each of its records alone, then the other 2.
    assert HashModel.batches == [8, 1, 1, 1, 1, 1, 1, 1, 1, 2]


async def test_a_model_down_for_every_record_fails_the_attempt_not_the_records(bulk: Bulk) -> None:
    collection = await bulk.collection()
    batch = await bulk.batch(collection, [posting(i) for i in range(3)])
    HashModel.down = True
    ctx = bulk.context()
    with pytest.raises(ModelError, match="does not answer") as failed:
        await bulk.run(batch, ctx)
    assert "died" in str(failed.value.__cause__)
    assert ctx.checkpoints == [{"total": 3, "done": 0, "completed": 0, "failed": 0}]  # retried from here
    assert await bulk.count(batch_records) == 0
    # Its documents say why they are not indexed (none left `processing`, which would pass for unchanged).
    assert await statuses(bulk, collection) == {f"p{i}": DocumentStatus.FAILED for i in range(3)}
    HashModel.down = False
    assert (await bulk.run(batch, bulk.context(last_checkpoint=ctx.checkpoints[-1], attempt=2)))["completed"] == 3
    assert await statuses(bulk, collection) == {f"p{i}": DocumentStatus.READY for i in range(3)}


async def test_a_chunk_whose_every_record_breaks_the_model_fails_those_records_when_the_model_still_answers(
    bulk: Bulk,
) -> None:
    collection = await bulk.collection()
    records = [posting(i, text=f"posting {i}: poison") for i in range(2)] + [posting(2)]

    result = await bulk.run(await bulk.batch(collection, records, chunk_records=2))

    assert (result["completed"], result["failed"]) == (1, 2)  # not a model down: the batch completes
    assert {error["custom_id"] for error in await bulk.errors(await _only_batch(bulk))} == {"p0", "p1"}
    assert await statuses(bulk, collection) == {
        "p0": DocumentStatus.FAILED,
        "p1": DocumentStatus.FAILED,
        "p2": DocumentStatus.READY,
    }


async def statuses(bulk: Bulk, collection: Collection) -> dict[str | None, DocumentStatus]:
    async with db.read(bulk.search.engine) as conn:
        rows = await conn.execute(
            sa.select(documents.c.external_id, documents.c.status).where(documents.c.collection_id == collection.id)
        )
        return {row.external_id: DocumentStatus(row.status) for row in rows}


class StallingIndex(QdrantIndex):
    """Its `upsert` of chunks waits until `release` is set (after `reached`); `on_upsert` runs first."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reached, self.release = asyncio.Event(), asyncio.Event()
        self.on_upsert: Callable[[], Awaitable[None]] | None = None

    async def upsert(self, spec: IndexSpec, records: list[ChunkRecord]) -> None:
        if self.on_upsert is not None:
            await self.on_upsert()
        self.reached.set()
        await self.release.wait()
        await super().upsert(spec, records)


async def test_a_batch_stopped_while_it_indexes_a_chunk_leaves_its_documents_failed_not_processing(
    bulk: Bulk, tmp_path: Path
) -> None:
    collection = await bulk.collection()
    batch = await bulk.batch(collection, [posting(i) for i in range(4)])
    await bulk.search.index.close()
    stalling = StallingIndex(tmp_path / "index")
    bulk.batches = replace(bulk.batches, search=replace(bulk.search, index=stalling))
    running = asyncio.create_task(bulk.run(batch))
    await stalling.reached.wait()
    running.cancel()  # as a worker stops a job's task: canceled, its lease lost, a shutdown
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await statuses(bulk, collection) == {f"p{i}": DocumentStatus.FAILED for i in range(4)}
    await stalling.close()


async def test_the_next_two_chunks_are_embedded_while_a_chunk_is_written_and_none_of_their_rows_before_its_checkpoint(
    bulk: Bulk, tmp_path: Path
) -> None:
    collection = await bulk.collection()
    batch = await bulk.batch(collection, [posting(i) for i in range(16)], chunk_records=4)
    await bulk.search.index.close()
    stalling = StallingIndex(tmp_path / "index")
    bulk.batches = replace(bulk.batches, search=replace(bulk.search, index=stalling))
    ctx = bulk.context()
    running = asyncio.create_task(bulk.run(batch, ctx))
    await asyncio.wait_for(stalling.reached.wait(), 10)  # chunk 1's index write, held
    for _ in range(1000):  # chunks 2 and 3 go to the model meanwhile
        if len(ctx.predictions) >= 12:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert len(ctx.predictions) == 12  # the old loop: 4, the model idle while a chunk was written; chunk 4 waits
    assert sorted((await document_ids(bulk, collection)).values()) == ["p0", "p1", "p2", "p3"]  # chunk 1's rows only
    assert [c["done"] for c in ctx.checkpoints] == [0]
    stalling.release.set()

    assert (await running)["completed"] == 16
    assert [c["done"] for c in ctx.checkpoints] == [0, 4, 8, 12, 16, 16]  # a checkpoint per chunk
    assert len(ctx.predictions) == 16 and await stalling.count(collection.id) == 16  # each embedded once
    await stalling.close()


async def test_the_chunks_embedded_ahead_share_one_budget_of_predictions_in_the_model_queue(bulk: Bulk) -> None:
    """Two chunks embedded ahead of the one written, each with a budget of its own, would hold twice the
    budget in the model runtime's queue (its limit: 256, the budget 128): one batch would then get the
    searches and ingests of every tenant refused. All of a process's batches share `embed_slots`."""
    collection = await bulk.collection()
    batch = await bulk.batch(collection, [posting(i) for i in range(24)], chunk_records=4)
    bulk.batches = replace(bulk.batches, embed_slots=TenantSlots(3))
    ctx = bulk.context()
    in_flight, most = 0, 0

    async def counted(item: EmbedInput) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.005)  # long enough for every waiting embedding to hand over its next item
            return await bulk.search.models.predict(MODEL, item)
        finally:
            in_flight -= 1

    ctx.models = {MODEL: counted}
    assert (await bulk.run(batch, ctx))["completed"] == 24
    assert most == 3  # at the budget, never past it (4 per chunk, up to 3 chunks at once without it)


async def test_a_document_deleted_while_a_batch_indexes_it_waits_and_leaves_no_chunk_behind(
    bulk: Bulk, tmp_path: Path
) -> None:
    collection = await bulk.collection()
    batch = await bulk.batch(collection, [posting(1), posting(2)])
    await bulk.search.index.close()
    stalling = StallingIndex(tmp_path / "index")
    stalling.release.set()
    bulk.batches = replace(bulk.batches, search=replace(bulk.search, index=stalling))

    deleting: list[asyncio.Future[None]] = []
    waited: list[bool] = []

    async def delete_p1() -> None:  # through the documents API, while the chunk is written to the index
        stalling.on_upsert = None
        [p1] = [d for d, external in (await document_ids(bulk, collection)).items() if external == "p1"]
        deleting.append(
            asyncio.ensure_future(delete_document(bulk.batches.search, collection=collection, document_id=p1))
        )
        await asyncio.sleep(0.3)
        waited.append(not deleting[0].done())  # the rows are locked until the index write is whole

    stalling.on_upsert = delete_p1
    await bulk.run(batch)
    await deleting[0]
    assert waited == [True]
    remaining = await document_ids(bulk, collection)
    assert sorted(remaining.values()) == ["p2"]
    assert await stalling.count(collection.id) == 1  # p2's chunk; p1's went with its row
    await stalling.close()


async def document_ids(bulk: Bulk, collection: Collection) -> dict[str, str | None]:
    async with db.read(bulk.search.engine) as conn:
        rows = await conn.execute(
            sa.select(documents.c.id, documents.c.external_id).where(documents.c.collection_id == collection.id)
        )
        return {row.id: row.external_id for row in rows}


class KilledAfterIndexing(Exception):
    pass


class DyingIndex(QdrantIndex):
    """Dies right after its `upsert` number `dies_at` is written: the chunk's documents are indexed, not yet
    marked ready nor checkpointed."""

    def __init__(self, root: Path, dies_at: int) -> None:
        super().__init__(root)
        self.upserts, self.dies_at = 0, dies_at

    async def upsert(self, spec: IndexSpec, records: list[ChunkRecord]) -> None:
        await super().upsert(spec, records)
        self.upserts += 1
        if self.upserts == self.dies_at:
            raise KilledAfterIndexing


async def test_a_chunk_redone_after_a_crash_between_index_and_checkpoint_indexes_nothing_twice(
    bulk: Bulk, tmp_path: Path
) -> None:
    collection = await bulk.collection()
    batch = await bulk.batch(collection, [posting(i) for i in range(15)], chunk_records=5)
    await bulk.search.index.close()
    dying = DyingIndex(tmp_path / "index", dies_at=2)
    bulk.batches = replace(bulk.batches, search=replace(bulk.search, index=dying))
    first = bulk.context()
    with pytest.raises(KilledAfterIndexing):
        await bulk.run(batch, first)
    assert first.checkpoints[-1]["done"] == 5 and await dying.count(collection.id) == 10

    dying.dies_at = 0
    second = bulk.context(last_checkpoint=first.checkpoints[-1], attempt=2)
    assert (await bulk.run(batch, second))["completed"] == 15
    assert len(second.predictions) == 10  # chunk 2 (processing, not ready) embedded again, and chunk 3
    assert await dying.count(collection.id) == 15  # chunk 2's first chunks replaced, not doubled
    await dying.close()


def parquet_bytes(table: pa.Table, row_group_size: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


async def test_a_parquet_batch_resumed_after_a_crash_redoes_one_chunk_and_a_fake_one_fails(
    bulk: Bulk, tmp_path: Path
) -> None:
    collection = await bulk.collection()
    rows = pa.table({"custom_id": [f"p{i}" for i in range(25)], "text": [posting(i)["text"] for i in range(25)]})
    rows = rows.append_column("n", pa.array(range(25)))
    batch = await bulk.file_batch(collection, parquet_bytes(rows, row_group_size=7), "rows.parquet", chunk_records=5)
    await bulk.search.index.close()
    dying = DyingIndex(tmp_path / "index", dies_at=3)
    bulk.batches = replace(bulk.batches, search=replace(bulk.search, index=dying))
    first = bulk.context()
    with pytest.raises(KilledAfterIndexing):
        await bulk.run(batch, first)
    assert first.checkpoints[-1]["done"] == 10 and first.checkpoints[0]["total"] == 25

    dying.dies_at = 0
    second = bulk.context(last_checkpoint=first.checkpoints[-1], attempt=2)
    assert (await bulk.run(batch, second))["completed"] == 25
    assert len(second.predictions) == 15  # the chunk that died, redone, and the two after it
    assert await dying.count(collection.id) == 25
    document = await get_document(bulk.search, collection=collection, document_id=(await document_ids_of(bulk))["p7"])
    assert document.metadata == {"n": 7}

    fake = await bulk.file_batch(collection, b'{"custom_id": "a", "text": "x"}\n', "rows.parquet", chunk_records=5)
    with pytest.raises(NonRetryable, match=r"named \.parquet but is not a Parquet file"):
        await bulk.run(fake)
    await dying.close()


async def document_ids_of(bulk: Bulk) -> dict[str | None, str]:
    async with db.read(bulk.search.engine) as conn:
        rows = await conn.execute(sa.select(documents.c.id, documents.c.external_id))
        return {row.external_id: row.id for row in rows}


async def upload_p1(bulk: Bulk, collection: Collection, tmp_path: Path, text: str) -> tuple[FileInfo, Document]:
    """A text uploaded as the document of external id "p1" (the id `posting(1)` has): its file and it."""
    path = tmp_path / "p1.txt"
    path.write_text(text)
    with path.open("rb") as source:
        file = await receive_file(bulk.search.blobs, tenant="t", source=source, filename="p1.txt", max_bytes=10**6)
    _, uploaded, _ = await add_document(
        bulk.submitter, bulk.search.blobs, tenant="t", name=collection.name, file=file, metadata={}, external_id="p1"
    )
    return file, uploaded


async def test_a_batch_document_is_one_of_the_collection_for_the_documents_api_and_a_stale_ingest(
    bulk: Bulk, tmp_path: Path
) -> None:
    collection = await bulk.collection()
    file, uploaded = await upload_p1(bulk, collection, tmp_path, "an uploaded text that a batch will replace")
    assert uploaded.status == DocumentStatus.QUEUED and uploaded.file_id == file.id

    await bulk.run(await bulk.batch(collection, [posting(1), posting(2)]))

    taken = await get_document(bulk.search, collection=collection, document_id=uploaded.id)
    assert taken.status == DocumentStatus.READY and taken.file_id is None
    with pytest.raises(NotFound):  # the upload's file went with it (nothing else used it)
        await get_file(bulk.search.engine, tenant="t", file_id=file.id)
    # The upload's ingest job, queued before the batch took the document, finds it no longer its own.
    ctx = ingest_context(uploaded, {MODEL: hash16})
    stale = IngestInput(collection_id=collection.id, document_id=taken.id)
    assert "skipped" in await run_ingest(bulk.search, bulk.ocr, ctx, stale) and ctx.predictions == []
    assert await get_document(bulk.search, collection=collection, document_id=taken.id) == taken

    await delete_document(bulk.search, collection=collection, document_id=taken.id)
    assert await bulk.search.index.count(collection.id) == 1
    assert taken.id not in await bulk.chunk_ids(collection, "posting")


async def test_an_uploads_ingest_running_when_a_batch_takes_its_document_writes_nothing(
    bulk: Bulk, tmp_path: Path
) -> None:
    collection = await bulk.collection()
    _, uploaded = await upload_p1(
        bulk, collection, tmp_path, "an uploaded text about lighthouse keepers, replaced while it is embedded"
    )
    release, reached = asyncio.Event(), asyncio.Event()

    async def held(item: EmbedInput) -> np.ndarray:
        reached.set()
        await release.wait()
        return hash16(item)

    ingest = IngestInput(collection_id=collection.id, document_id=uploaded.id)
    running = asyncio.ensure_future(run_ingest(bulk.search, bulk.ocr, ingest_context(uploaded, {MODEL: held}), ingest))
    await asyncio.wait_for(reached.wait(), 10)
    await bulk.run(await bulk.batch(collection, [posting(1)]))
    release.set()
    stale = await running

    taken = await get_document(bulk.search, collection=collection, document_id=uploaded.id)
    assert (taken.status, taken.chunks, taken.file_id) == (DocumentStatus.READY, 1, None)
    assert await bulk.chunk_ids(collection, "lighthouse keepers") == {}
    assert set(await bulk.chunk_ids(collection, "posting 1")) == {uploaded.id}
    assert "skipped" in stale


async def _only_batch(bulk: Bulk) -> Batch:
    async with db.read(bulk.search.engine) as conn:
        batch_id = await conn.scalar(sa.select(sa.text("id")).select_from(sa.table("batches")))
        found = await BatchStore(conn).batch("t", str(batch_id))
    assert found is not None
    return found


class HeldAfterClaim:
    """The first chunk upserted is held after its claim (its rows written, this writer's), before its
    embedding and index write, until `release` is set: an older writer caught mid-chunk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached, self.release = asyncio.Event(), asyncio.Event()
        index = upsert._index
        held = [False]

        async def held_index(*args: Any) -> Any:
            if not held[0]:
                held[0] = True
                self.reached.set()
                await self.release.wait()
            return await index(*args)

        monkeypatch.setattr(upsert, "_index", held_index)


async def held_batch(
    bulk: Bulk, collection: Collection, records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> tuple[HeldAfterClaim, asyncio.Future[dict[str, Any]]]:
    """A batch of `records` running, held after its first chunk's claim (`HeldAfterClaim`)."""
    held = HeldAfterClaim(monkeypatch)
    running = asyncio.ensure_future(bulk.run(await bulk.batch(collection, records)))
    await asyncio.wait_for(held.reached.wait(), 10)
    return held, running


LIGHTHOUSE = "an uploaded text about lighthouse keepers, sent after the batch took the document"


async def test_an_older_batch_overtaken_by_an_upload_and_its_ingest_leaves_the_newer_content(
    bulk: Bulk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = await bulk.collection()
    held, running = await held_batch(bulk, collection, [posting(1), posting(2)], monkeypatch)

    file, uploaded = await upload_p1(bulk, collection, tmp_path, LIGHTHOUSE)
    ingest = IngestInput(collection_id=collection.id, document_id=uploaded.id)
    newer = await run_ingest(bulk.search, bulk.ocr, ingest_context(uploaded, {MODEL: hash16}), ingest)
    held.release.set()
    assert (await running)["completed"] == 2

    document = await get_document(bulk.search, collection=collection, document_id=uploaded.id)
    assert (document.status, document.file_id, document.job_id) == (DocumentStatus.READY, file.id, uploaded.job_id)
    assert document.chunks == newer["chunks"] == 1 and document.sha256 == uploaded.sha256
    assert set(await bulk.chunk_ids(collection, "lighthouse keepers")) == {uploaded.id}
    assert uploaded.id not in await bulk.chunk_ids(collection, "posting 1")
    assert await bulk.search.index.count(collection.id) == 2  # the upload's chunk and p2's


async def test_an_older_batch_overtaken_by_an_upload_still_queued_writes_neither_row_nor_chunks(
    bulk: Bulk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = await bulk.collection()
    held, running = await held_batch(bulk, collection, [posting(1), posting(2)], monkeypatch)

    _, uploaded = await upload_p1(bulk, collection, tmp_path, LIGHTHOUSE)
    held.release.set()
    await running

    queued = await get_document(bulk.search, collection=collection, document_id=uploaded.id)
    assert (queued.status, queued.job_id, queued.chunks) == (DocumentStatus.QUEUED, uploaded.job_id, 0)
    assert uploaded.id not in await bulk.chunk_ids(collection, "posting 1")
    ingest = IngestInput(collection_id=collection.id, document_id=uploaded.id)
    assert (await run_ingest(bulk.search, bulk.ocr, ingest_context(uploaded, {MODEL: hash16}), ingest))["chunks"] == 1
    assert set(await bulk.chunk_ids(collection, "lighthouse keepers")) == {uploaded.id}
    assert await bulk.search.index.count(collection.id) == 2


async def test_an_older_batch_overtaken_by_a_newer_batch_leaves_the_newer_records(
    bulk: Bulk, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = await bulk.collection()
    held, older = await held_batch(bulk, collection, [posting(1)], monkeypatch)

    ctx = bulk.context()
    newer = posting(1, text="posting 1 rewritten: harbour pilot wanted", metadata={"n": 10})
    assert (await bulk.run(await bulk.batch(collection, [newer]), ctx))["completed"] == 1
    held.release.set()
    assert (await older)["completed"] == 1

    [(document_id, _)] = (await document_ids(bulk, collection)).items()
    document = await get_document(bulk.search, collection=collection, document_id=document_id)
    assert (document.status, document.job_id, document.metadata) == (DocumentStatus.READY, ctx.id, {"n": 10})
    assert set(await bulk.chunk_ids(collection, "harbour pilot")) == {document_id}
    assert await bulk.chunk_ids(collection, "welder") == {}
    assert await bulk.search.index.count(collection.id) == 1
