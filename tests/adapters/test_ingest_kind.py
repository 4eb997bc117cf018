"""The `ingest` kind run with an in-memory job context: no worker; its collection, document and file are
real rows (SQLite), its index the embedded Qdrant one, and its embedding model a small deterministic
function (the real models are tested in test_embedders.py and through the API)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import sqlite_url
from tests.helpers import eventually

from inferline import db
from inferline.clock import utcnow
from inferline.errors import BadDocument, Canceled
from inferline.files.blobs import BlobStore
from inferline.files.service import receive_file
from inferline.ids import new_id
from inferline.inference.model import Model
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus
from inferline.jobs.service import cancel_job, get_job
from inferline.jobs.submission import Submitter
from inferline.jobs.testing import MemoryContext
from inferline.metrics import Metrics
from inferline.ocr.deps import OcrDeps
from inferline.ocr.documents import Limits
from inferline.ocr.tesseract import OcrInput, text_layer_result
from inferline.search import kind as search_kind
from inferline.search.caches import ResultCache
from inferline.search.deps import SearchDeps
from inferline.search.documents import add_document, delete_document, get_document
from inferline.search.embedders import EmbedInput
from inferline.search.index import SearchIndex
from inferline.search.indexing import embed_budget
from inferline.search.kind import IngestInput, run_ingest
from inferline.search.model import Collection, Document, DocumentStatus
from inferline.search.qdrant import QdrantIndex
from inferline.search.store import SearchStore
from inferline.search.tokens import tokenize

DIM = 16
MODEL = "hash16"
# Text no one here wrote: a Debian package's.
GPL = Path("/usr/share/common-licenses/GPL-3")
PDF = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ocr" / "doc_text_layer.pdf"
PDF_TRUTH = PDF.with_suffix(".gt.txt")


def hash16(item: EmbedInput) -> np.ndarray:
    """A bag of hashed words: texts sharing words get close vectors, the same text the same vector."""
    vector = np.zeros(DIM, dtype=np.float32)
    for word in item.text.lower().split():
        vector[hashlib.blake2b(word.encode(), digest_size=1).digest()[0] % DIM] += 1.0
    return vector / max(float(np.linalg.norm(vector)), 1e-6)


class Setup:
    def __init__(self, search: SearchDeps, ocr: OcrDeps, submitter: Submitter) -> None:
        self.search, self.ocr, self.submitter = search, ocr, submitter

    async def collection(self, tenant: str = "t", name: str = "docs") -> Collection:
        collection = Collection(
            id=new_id(),  # a UUID, as pgvector's table names need
            tenant=tenant,
            name=name,
            fields={},
            embedding_model=MODEL,
            dim=DIM,
            chunk_tokens=128,
            overlap_tokens=16,
            version=0,
            created_at=utcnow(),
        )
        async with db.write(self.search.engine) as conn:
            await SearchStore(conn).add_collection(collection)
        await self.search.index.create(collection.spec)
        return collection

    async def document(self, collection: Collection, path: Path, filename: str) -> Document:
        with path.open("rb") as source:
            file = await receive_file(
                self.search.blobs, tenant=collection.tenant, source=source, filename=filename, max_bytes=10**8
            )
        _, document, _ = await add_document(
            self.submitter,
            self.search.blobs,
            tenant=collection.tenant,
            name=collection.name,
            file=file,
            metadata={},
            external_id=None,
        )
        return document

    async def reread(self, collection: Collection, document: Document) -> Document:
        return await get_document(self.search, collection=collection, document_id=document.id)

    async def version(self, collection: Collection) -> int:
        async with db.read(self.search.engine) as conn:
            found = await SearchStore(conn).collection(collection.tenant, collection.id)
        assert found is not None
        return found.version


@asynccontextmanager
async def setup_on(url: str, index: SearchIndex, tmp_path: Path) -> AsyncIterator[Setup]:
    """A `Setup` on the database at `url` (migrated here) and `index` (closed at the end)."""
    db.upgrade(url)
    engine = db.create_engine(url)
    blobs = BlobStore(tmp_path / "blobs")
    metrics = Metrics()
    models = ModelRuntime(device="cpu", modes={}, queue_limit=100, metrics=metrics)
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
    yield Setup(search, ocr, submitter)
    submitter.close()
    await index.close()
    await models.aclose()
    await engine.dispose()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with setup_on(sqlite_url(tmp_path), QdrantIndex(tmp_path / "index"), tmp_path) as made:
        yield made


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data missing: {path}")
    return path


def ingest_input(document: Document) -> IngestInput:
    return IngestInput(collection_id=document.collection_id, document_id=document.id)


def ingest_context(document: Document, models: dict[str, Any], **kwargs: Any) -> MemoryContext:
    """A context of the ingest job the document was queued with (its row names it)."""
    assert document.job_id is not None
    job = replace(Job.running_now(kind=search_kind.KIND, tenant=document.tenant), id=document.job_id)
    return MemoryContext(job, models=models, **kwargs)


async def test_a_text_document_is_chunked_embedded_indexed_and_ready(setup: Setup) -> None:
    collection = await setup.collection()
    document = await setup.document(collection, needs(GPL), "GPL-3.txt")
    assert document.status == DocumentStatus.QUEUED
    ctx = ingest_context(document, {MODEL: hash16})

    result = await run_ingest(setup.search, setup.ocr, ctx, ingest_input(document))

    chunks = result["chunks"]
    assert chunks > 10 and result["document_id"] == document.id
    assert ctx.stages == ["extract", "chunk", "embed", "index"]
    assert ctx.percents[-1] == 100.0 and ctx.percents == sorted(ctx.percents)
    assert len(ctx.predictions) == chunks and all(model == MODEL and not item.query for model, item in ctx.predictions)
    ready = await setup.reread(collection, document)
    assert ready.status == DocumentStatus.READY and ready.chunks == chunks and ready.error is None
    assert await setup.version(collection) == 1  # cached searches of the collection retired
    assert await setup.search.index.count(collection.id) == chunks
    # A sentence of the text is found by its words and by its vector, in this document.
    sentence = "The GNU General Public License is a free, copyleft license for software"
    by_words = await setup.search.index.keyword(collection.spec, tokenize(sentence), None, 3)
    by_vector = await setup.search.index.semantic(collection.spec, hash16(EmbedInput(sentence)), None, 3)
    assert by_words and by_vector and by_words[0].document_id == by_vector[0].document_id == document.id


async def test_ingesting_again_replaces_the_documents_chunks(setup: Setup) -> None:
    collection = await setup.collection()
    document = await setup.document(collection, needs(GPL), "GPL-3.txt")
    first = await run_ingest(setup.search, setup.ocr, ingest_context(document, {MODEL: hash16}), ingest_input(document))
    again = await run_ingest(setup.search, setup.ocr, ingest_context(document, {MODEL: hash16}), ingest_input(document))
    assert again["chunks"] == first["chunks"]
    assert await setup.search.index.count(collection.id) == first["chunks"]
    assert await setup.version(collection) == 2


async def test_a_pdf_is_read_through_the_ocr_page_reader(setup: Setup) -> None:
    collection = await setup.collection()
    document = await setup.document(collection, needs(PDF), "doc.pdf")

    def text_layer_only(item: OcrInput) -> dict[str, Any]:
        # The engine's process reads each page (`ocr.pages`): here every page has a text layer, so no OCR.
        page = item.read()
        assert page.image is None, "a page of the text PDF went to OCR"
        return text_layer_result(page)

    ctx = ingest_context(document, {MODEL: hash16, "tesseract": text_layer_only})
    result = await run_ingest(setup.search, setup.ocr, ctx, ingest_input(document))
    assert ctx.stages[:5] == ["extract", "extract 1/3", "extract 2/3", "extract 3/3", "chunk"]
    assert [model for model, _ in ctx.predictions if model != MODEL] == ["tesseract"] * 3
    found = await setup.search.index.keyword(collection.spec, tokenize(truth := PDF_TRUTH.read_text()), None, 50)
    chunks = await setup.search.index.fetch(collection.id, [candidate.chunk_id for candidate in found])
    assert len(chunks) == result["chunks"] >= 1
    assert {chunk.page for chunk in chunks.values()} <= {0, 1, 2}  # 0-based pages of the 3-page PDF
    words = " ".join(chunk.text for chunk in chunks.values()).split()
    assert all(word in words for word in truth.split()[:20])


async def test_a_document_without_text_fails_with_its_reason_and_no_retry(setup: Setup, tmp_path: Path) -> None:
    collection = await setup.collection()
    blank = tmp_path / "blank.txt"
    blank.write_text("   \n\n  \t\n")
    document = await setup.document(collection, blank, "blank.txt")
    with pytest.raises(BadDocument, match="no text found"):
        await run_ingest(setup.search, setup.ocr, ingest_context(document, {MODEL: hash16}), ingest_input(document))
    failed = await setup.reread(collection, document)
    assert failed.status == DocumentStatus.FAILED and failed.error is not None and "no text found" in failed.error


async def test_a_transient_failure_queues_the_document_again_until_the_last_attempt(setup: Setup) -> None:
    collection = await setup.collection()
    document = await setup.document(collection, needs(GPL), "GPL-3.txt")

    def down(item: EmbedInput) -> Any:
        raise ConnectionError("model server restarting")

    with pytest.raises(ConnectionError):
        await run_ingest(
            setup.search, setup.ocr, ingest_context(document, {MODEL: down}, attempt=1), ingest_input(document)
        )
    retrying = await setup.reread(collection, document)
    assert retrying.status == DocumentStatus.QUEUED and retrying.error is not None
    assert retrying.error.startswith("retrying after: internal error (ConnectionError)")

    with pytest.raises(ConnectionError):
        await run_ingest(
            setup.search, setup.ocr, ingest_context(document, {MODEL: down}, attempt=3), ingest_input(document)
        )
    failed = await setup.reread(collection, document)
    assert failed.status == DocumentStatus.FAILED and failed.error is not None
    assert failed.error.startswith("internal error (ConnectionError)") and "restarting" not in failed.error
    assert await setup.search.index.count(collection.id) == 0 and await setup.version(collection) == 0


async def test_a_canceled_ingest_indexes_nothing_and_fails_the_document(setup: Setup) -> None:
    collection = await setup.collection()
    document = await setup.document(collection, needs(GPL), "GPL-3.txt")
    ctx = ingest_context(document, {})

    def cancel_on_first_chunk(item: EmbedInput) -> np.ndarray:
        ctx.cancel("canceled by user")
        return hash16(item)

    ctx.models = {MODEL: cancel_on_first_chunk}
    with pytest.raises(Canceled):
        await run_ingest(setup.search, setup.ocr, ctx, ingest_input(document))
    failed = await setup.reread(collection, document)
    assert failed.status == DocumentStatus.FAILED and failed.error == "canceled by user"
    assert await setup.search.index.count(collection.id) == 0


async def test_an_ingest_whose_task_the_worker_cancels_fails_the_document(setup: Setup) -> None:
    """A worker stops a canceled job, or one past its deadline, by cancelling its task: the cancellation
    arrives at the next `await`, not through `raise_if_canceled`. The document says so (before, it stayed
    `processing`, and an upload of the same file was answered "unchanged")."""
    collection = await setup.collection()
    document = await setup.document(collection, needs(GPL), "GPL-3.txt")
    ctx = ingest_context(document, {})
    embedding, never = asyncio.Event(), asyncio.Event()

    async def hang(item: EmbedInput) -> np.ndarray:
        embedding.set()
        await never.wait()
        raise AssertionError("never reached")

    ctx.models = {MODEL: hang}
    task = asyncio.create_task(run_ingest(setup.search, setup.ocr, ctx, ingest_input(document)))
    await asyncio.wait_for(embedding.wait(), 10)
    ctx.cancel("deadline")  # as `Attempt.interrupt` does: the reason, then the task cancelled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    failed = await setup.reread(collection, document)
    assert failed.status == DocumentStatus.FAILED and failed.error == "deadline"
    assert await setup.search.index.count(collection.id) == 0


async def test_a_document_whose_ingest_job_ended_unsaid_is_queued_again_by_the_same_upload(setup: Setup) -> None:
    """Its ingest job canceled while queued (it never ran, so the document still says `queued`): the same
    file uploaded again queues a new ingest rather than being answered "unchanged" for ever."""
    collection = await setup.collection()
    first = await setup.document(collection, needs(GPL), "GPL-3.txt")
    assert first.job_id is not None
    await cancel_job(setup.submitter.engine, tenant=collection.tenant, job_id=first.job_id)
    again = await setup.document(collection, needs(GPL), "GPL-3.txt")
    assert again.id == first.id and again.status == DocumentStatus.QUEUED
    assert again.job_id is not None and again.job_id != first.job_id
    job = await get_job(setup.submitter.engine, tenant=collection.tenant, job_id=again.job_id)
    assert job.status is JobStatus.QUEUED
    # While that job is queued, the same upload is unchanged: no second job.
    assert (await setup.document(collection, needs(GPL), "GPL-3.txt")).job_id == again.job_id


async def test_a_document_deleted_before_its_ingest_is_skipped(setup: Setup) -> None:
    collection = await setup.collection()
    document = await setup.document(collection, needs(GPL), "GPL-3.txt")
    await delete_document(setup.search, collection=collection, document_id=document.id)
    ctx = ingest_context(document, {MODEL: hash16})
    result = await run_ingest(setup.search, setup.ocr, ctx, ingest_input(document))
    assert "skipped" in result and ctx.predictions == []
    assert await setup.search.index.count(collection.id) == 0


async def test_another_tenants_collection_is_not_ingested_into(setup: Setup) -> None:
    collection = await setup.collection(tenant="owner")
    document = await setup.document(collection, needs(GPL), "GPL-3.txt")
    ctx = ingest_context(document, {MODEL: hash16}, tenant="thief")
    result = await run_ingest(setup.search, setup.ocr, ctx, ingest_input(document))
    assert "skipped" in result and ctx.predictions == []
    untouched = await setup.reread(collection, document)
    assert untouched.status == DocumentStatus.QUEUED


class Hash16Model(Model[EmbedInput, np.ndarray]):
    """`hash16` as a model of the runtime, a little slow, so that items queue as a real model's do."""

    name = MODEL
    max_batch_size = 8
    max_wait_ms = 2.0

    def setup(self, device: str) -> None:
        pass

    def predict_batch(self, inputs: list[EmbedInput]) -> list[np.ndarray | BaseException]:
        time.sleep(0.005)
        return [hash16(item) for item in inputs]


async def test_ingests_at_once_share_one_budget_of_the_model_queue_and_none_is_refused(setup: Setup) -> None:
    """Each ingest handed up to 128 chunks at once to the model runtime: three at once passed its queue's
    limit (here 100) and the items past it were refused (`Overloaded`), failing those attempts."""
    models = setup.search.models
    models.register(MODEL, Hash16Model)
    collection = await setup.collection()
    documents = [await setup.document(collection, needs(GPL), f"GPL-{n}.txt") for n in range(3)]
    contexts = [ingest_context(document, {}) for document in documents]
    for ctx in contexts:
        ctx.models = models  # the real runtime: its queue and its limit
    ingests = [
        run_ingest(setup.search, setup.ocr, ctx, ingest_input(doc))
        for ctx, doc in zip(contexts, documents, strict=True)
    ]
    results = await asyncio.gather(*ingests)
    chunks = [result["chunks"] for result in results]
    assert sum(chunks) > models.queue_limit  # together more than the queue holds
    assert setup.search.embed_slots.free == embed_budget(models.queue_limit)  # all given back
    assert chunks == [chunks[0]] * 3
    for document in documents:
        assert (await setup.reread(collection, document)).status == DocumentStatus.READY


async def test_another_tenants_ingest_gets_the_next_freed_unit_of_the_budget_not_the_last(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant a's three ingests hold the whole embedding budget (50 here) with ~220 more chunks waiting for
    it (a's model calls held until b asks); tenant b's ingest, started after, has its first chunk in the
    model queue when the next unit is freed. In one line (a plain semaphore) it came after all of a's."""
    models = setup.search.models
    models.register(MODEL, Hash16Model)
    entered: list[str] = []  # the tenant of each chunk as it enters the model runtime
    asked = asyncio.Event()  # b's ingest asked for a unit of the budget

    def counted(tenant: str) -> Callable[[EmbedInput], Awaitable[Any]]:
        async def predict(item: EmbedInput) -> Any:
            entered.append(tenant)
            await asked.wait()  # a's first 50 hold their units until b has asked
            return await models.predict(MODEL, item, tenant)

        return predict

    async def ingest(tenant: str, n: int) -> dict[str, Any]:
        collection = await setup.collection(tenant=tenant, name=f"docs-{n}")
        document = await setup.document(collection, needs(GPL), f"GPL-{n}.txt")
        return await run_ingest(
            setup.search, setup.ocr, ingest_context(document, {MODEL: counted(tenant)}), ingest_input(document)
        )

    budget = setup.search.embed_slots
    hold = budget.hold
    before: list[int] = []  # how many chunks had entered when b's ingest first asked for a unit

    def watched(tenant: str) -> Any:
        if tenant == "b" and not asked.is_set():
            before.append(len(entered))
            asked.set()
        return hold(tenant)

    monkeypatch.setattr(budget, "hold", watched)
    bulk = [asyncio.create_task(ingest("a", n)) for n in range(3)]
    await eventually(lambda: budget.free == 0 and budget.waiting > 150)
    late = asyncio.create_task(ingest("b", 3))
    results = await asyncio.gather(*bulk, late)
    a_chunks = sum(result["chunks"] for result in results[:3])
    assert before == [embed_budget(100)] and a_chunks - before[0] > 150  # a's chunks waiting when b asked
    first_b = entered.index("b")
    assert first_b == before[0], (first_b, before)  # the next unit freed went to b, not to a's 150
    assert entered.count("b") == results[3]["chunks"] and budget.free == embed_budget(100)
