"""The `ingest` job kind: one document of a collection through extract → chunk → embed → index.

- extract: text, Markdown, HTML and DOCX are read here (`extract.py`); PDFs and images go through the
  OCR service's page reader (text layers where a page has one, OCR elsewhere; stage "extract 3/40");
- chunk: `chunks.chunk_pages` with the collection's budget and overlap;
- embed: every chunk through the model runtime, concurrently, so the batcher fills its batches (progress
  by chunk); chunk, embed and index are `indexing.py`'s, the path a batch's records take too;
- index: the document's old chunks are replaced by the new ones; the collection's version advances,
  which retires every cached search of it.

The document row follows along: `processing`, then `ready` (with its chunk count) or `failed` (with
the reason, once the job will not be retried). Every write to the row or the index is made only while
the document is still this job's (its row names the job): a document uploaded again, upserted by a
batch or deleted meanwhile is left as its newer submission made it, and the job ends `SUPERSEDED`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferline import db
from inferline.clock import utcnow
from inferline.errors import BadDocument, Canceled, NonRetryable, NotFound, shown_message
from inferline.files.service import FileInfo, blob_path
from inferline.jobs.context import LEASE_LOST, SHUTDOWN, JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.ocr.deps import OcrDeps
from inferline.ocr.options import OcrOptions
from inferline.ocr.pages import read_pages
from inferline.search.deps import SearchDeps
from inferline.search.extract import TEXT_TYPES, extract_document
from inferline.search.index import ChunkRecord
from inferline.search.indexing import DocumentText, chunk_documents, chunk_records, embed_documents, replace_chunks
from inferline.search.model import Collection, Document, DocumentStatus
from inferline.search.store import SearchStore
from inferline.search.tokens import normalize
from inferline.shielding import despite_cancel

KIND = "ingest"


class IngestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection_id: str = Field(min_length=1, max_length=36)
    document_id: str = Field(min_length=1, max_length=36)


# Each (re)submission of a document (uploaded again, upserted by a batch's record) names the job that indexes
# it in its row (`job_id`); an older job that finds another id there ends with this, writing nothing.
SUPERSEDED = (
    "superseded: the document was replaced (uploaded again or upserted by a batch) or deleted since this job "
    "was queued, or its collection was deleted; its newer content is left as it is"
)


async def run_ingest(deps: SearchDeps, ocr: OcrDeps, ctx: JobContext, data: IngestInput) -> dict[str, Any]:
    started = await _start(deps, data, ctx)
    if started is None:
        return {"document_id": data.document_id, "skipped": SUPERSEDED}
    collection, document, file = started
    try:
        chunks = await _ingest(deps, ocr, ctx, collection, document, file)
    except Exception as exc:
        if isinstance(exc, Canceled) and ctx.cancel_reason in (SHUTDOWN, LEASE_LOST):
            raise  # the job runs again (here or on the worker that has it now): the document is its next run's
        if not await _set_failure(deps, ctx, document, exc) and not isinstance(exc, Canceled):
            return {"document_id": document.id, "skipped": SUPERSEDED}  # the failure is moot: not retried
        raise
    except BaseException:
        # The task cancelled by the worker: a cancel or the job's deadline ends the job, and the document says
        # so (else it stayed `processing`, and an upload of the same file was answered "unchanged"). A worker
        # stopping (the job goes back to the queue) or a lost lease (another worker runs it) leaves the
        # document to the job's next run.
        reason = ctx.cancel_reason
        if reason is not None and reason not in (SHUTDOWN, LEASE_LOST):
            await despite_cancel(_mark_stopped(deps, ctx, document, reason))
        raise
    if chunks is None:
        return {"document_id": document.id, "skipped": SUPERSEDED}
    return {"document_id": document.id, "chunks": chunks}


def register(registry: KindRegistry, deps: SearchDeps, ocr: OcrDeps) -> None:
    async def ingest(ctx: JobContext, data: IngestInput) -> dict[str, Any]:
        return await run_ingest(deps, ocr, ctx, data)

    registry.kind(KIND, input_model=IngestInput)(ingest)


async def _start(
    deps: SearchDeps, data: IngestInput, ctx: JobContext
) -> tuple[Collection, Document, FileInfo | None] | None:
    """The collection, the document (now `processing`) and its file, in one transaction; None if the
    collection or the document is gone, or the document is no longer this job's."""
    async with db.write(deps.engine) as conn:
        store = SearchStore(conn)
        collection = await store.collection(ctx.tenant, data.collection_id)
        if collection is None:
            return None
        document = await store.mark_processing(data.collection_id, data.document_id, job_id=ctx.id, now=utcnow())
        if document is None:
            return None
        file = await store.file(ctx.tenant, document.file_id) if document.file_id is not None else None
    return collection, document, file


async def _set_failure(deps: SearchDeps, ctx: JobContext, document: Document, exc: Exception) -> bool:
    """The document `failed` (or `queued` again, when the job will be retried) with the reason; False if it
    is no longer this job's, and then left as it is."""
    final = isinstance(exc, NonRetryable | Canceled) or ctx.attempt >= ctx.job.max_attempts
    shown = shown_message(exc, reference=f"job {ctx.id}")  # the worker logs the full text
    status, error = (DocumentStatus.FAILED, shown) if final else (DocumentStatus.QUEUED, f"retrying after: {shown}")
    async with db.write(deps.engine) as conn:
        return await SearchStore(conn).set_ingest_status(
            document.collection_id, document.id, job_id=ctx.id, status=status, error=error, now=utcnow()
        )


async def _mark_stopped(deps: SearchDeps, ctx: JobContext, document: Document, reason: str) -> None:
    await _set_failure(deps, ctx, document, Canceled(reason))


async def _pages(
    deps: SearchDeps, ocr: OcrDeps, ctx: JobContext, document: Document, file: FileInfo | None
) -> tuple[str, list[str]]:
    """The document's title ("" where it has none) and its pages' texts."""
    await ctx.stage("extract")
    if document.file_id is None:  # mark_processing passes none such: a batch that takes a document makes it its own
        raise NonRetryable("the document has no file to extract text from")
    if document.content_type in TEXT_TYPES:
        if file is None:
            raise NonRetryable(f"file {document.file_id} not found")
        path = blob_path(deps.blobs, file)  # missing bytes may be a volume not mounted yet: retried
        title, text = await ctx.to_thread(extract_document, path, document.content_type)
        return title, [text]

    async def report(finished: int, total: int) -> None:
        await ctx.stage(f"extract {finished}/{total}")

    done: dict[int, dict[str, Any]] = {}
    pages, _, _ = await read_pages(ocr, ctx, document.file_id, OcrOptions(), done, report)
    return "", [normalize(page["text"] or "") for page in pages]


async def _records(
    deps: SearchDeps, ctx: JobContext, collection: Collection, document: Document, title: str, pages: list[str]
) -> list[ChunkRecord]:
    """The document's chunks, embedded and tokenized, ready for the index (`indexing.py`, the path a batch
    takes too)."""
    text = DocumentText(document.id, pages, document.metadata, title)
    await ctx.stage("chunk")
    chunked = await ctx.to_thread(chunk_documents, collection, [text])

    async def progress(done: int, total: int) -> None:
        await ctx.progress(100 * done / total, f"{done}/{total} chunks")

    await ctx.stage("embed", f"{len(chunked[0])} chunks")
    [vectors] = await embed_documents(ctx, collection.embedding_model, chunked, progress, in_flight=deps.embed_slots)
    if isinstance(vectors, Exception):
        raise vectors
    await ctx.stage("index", f"{len(chunked[0])} chunks")
    return await ctx.to_thread(chunk_records, text, chunked[0], vectors)


async def _ingest(
    deps: SearchDeps, ocr: OcrDeps, ctx: JobContext, collection: Collection, document: Document, file: FileInfo | None
) -> int | None:
    """The document's chunk count once indexed; None if it was replaced or deleted meanwhile."""
    title, pages = await _pages(deps, ocr, ctx, document, file)
    if not any(page.strip() for page in pages):
        raise BadDocument("no text found in the document (empty, or pictures without readable text)")
    records = await _records(deps, ctx, collection, document, title, pages)
    ctx.raise_if_canceled()
    try:
        version = await _index(deps, ctx.id, collection, document.id, records)
    except NotFound:  # the collection was deleted while we worked
        return None
    if version is None:
        return None
    deps.collection_cache.advanced(collection.id, version)
    return len(records)


async def _index(
    deps: SearchDeps, job_id: str, collection: Collection, document_id: str, records: list[ChunkRecord]
) -> int | None:
    """The document's chunks replaced by `records`, the document ready and the collection's version advanced,
    all while the document's row is locked and still this job's: a replacement or a delete waits for the
    index to be written, so an older job never overwrites newer chunks, and whoever sees the document ready
    sees the new version (no search after that is answered from a cache entry made before). Returns the new
    version; None, having written nothing, if the document is no longer this job's."""
    async with db.write(deps.engine) as conn:
        store = SearchStore(conn)
        if not await store.lock_if_current(collection.id, document_id, job_id=job_id):
            return None
        await replace_chunks(deps.index, collection.spec, [document_id], records)
        await store.mark_ready(collection.id, document_id, job_id=job_id, chunks=len(records), now=utcnow())
        return await store.advance_version(collection.id)
