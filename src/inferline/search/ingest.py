"""The `ingest` job kind: one document of a collection through extract → chunk → embed → index.

- extract: text, Markdown, HTML and DOCX are read here (`extract.py`); PDFs and images go through the
  OCR service's page reader (text layers where a page has one, OCR elsewhere; stage "extract 3/40");
- chunk: `chunks.chunk_pages` with the collection's budget and overlap;
- embed: every chunk through the model runtime, concurrently, so the batcher fills its batches (progress
  by chunk);
- index: the document's old chunks are replaced by the new ones; the collection's version is bumped,
  which retires every cached search of it.

The document row follows along: `processing`, then `ready` (with its chunk count) or `failed` (with
the reason, once the job will not be retried).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from inferline import db
from inferline.clock import utcnow
from inferline.errors import BadDocument, Canceled, NonRetryable
from inferline.files.service import FileInfo, blob_path
from inferline.ids import new_id
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.ocr.deps import OcrDeps
from inferline.ocr.options import OcrOptions
from inferline.ocr.pages import read_pages
from inferline.schema import collections, documents, files
from inferline.search.chunks import Chunk, chunk_pages
from inferline.search.embedders import EmbedInput
from inferline.search.extract import extract_text
from inferline.search.index import ChunkRecord
from inferline.search.service import (
    TEXT_TYPES,
    Collection,
    Document,
    DocumentStatus,
    SearchConfig,
    collection_from_row,
    version_bump,
    version_seen,
)
from inferline.search.tokens import normalize, tokenize

EMBED_IN_FLIGHT = 128  # chunks handed to the batcher at once: several full batches, bounded memory
UPSERT_BATCH = 256


class IngestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection_id: str = Field(min_length=1, max_length=36)
    document_id: str = Field(min_length=1, max_length=36)


@dataclass(frozen=True)
class IngestConfig:
    search: SearchConfig
    ocr: OcrDeps


async def _start(
    config: SearchConfig, data: IngestInput, tenant: str
) -> tuple[Collection, Document, FileInfo | None] | None:
    """The collection, the document (now `processing`) and its file, in one transaction (were three)."""
    ids = {"_collection_id": data.collection_id, "_document_id": data.document_id}
    params = {"collection_id": data.collection_id, "tenant": tenant, **ids}
    async with db.write(config.engine) as conn:
        crow = (await conn.execute(_collection_query(), params)).mappings().first()
        if crow is None:
            return None
        marked = await conn.execute(_processing_update(), params | {"updated_at": utcnow()})
        drow = marked.mappings().first()
        if drow is None:
            return None
        document = Document(**drow)
        frow = (await conn.execute(_file_query(), {"file_id": document.file_id, "tenant": tenant})).mappings().first()
    return collection_from_row(crow), document, FileInfo(**frow) if frow is not None else None


async def _set_status(config: SearchConfig, document_id: str, **values: Any) -> None:
    async with db.write(config.engine) as conn:
        await conn.execute(
            documents.update().where(documents.c.id == document_id).values(updated_at=utcnow(), **values)
        )


async def run_ingest(config: IngestConfig, ctx: JobContext, data: IngestInput) -> dict[str, Any]:
    search = config.search
    started = await _start(search, data, ctx.tenant)
    if started is None:  # deleted before its ingest ran: nothing to do, and nothing wrong
        return {"document_id": data.document_id, "skipped": "the document or its collection was deleted"}
    collection, document, file = started
    try:
        chunks = await _ingest(config, ctx, collection, document, file)
    except Exception as exc:
        final = isinstance(exc, NonRetryable | Canceled) or ctx.attempt >= ctx.job.max_attempts
        if final:
            await _set_status(search, document.id, status=DocumentStatus.FAILED, error=str(exc) or type(exc).__name__)
        else:
            await _set_status(search, document.id, status=DocumentStatus.QUEUED, error=f"retrying after: {exc}")
        raise
    return {"document_id": document.id, "chunks": chunks}


async def _pages(config: IngestConfig, ctx: JobContext, document: Document, file: FileInfo | None) -> list[str]:
    await ctx.stage("extract")
    if document.content_type in TEXT_TYPES:
        if file is None:
            raise NonRetryable(f"file {document.file_id} not found")
        path = blob_path(config.search.blobs, file)  # missing bytes may be a volume not mounted yet: retried
        return [await ctx.to_thread(extract_text, path, document.content_type)]

    async def report(finished: int, total: int) -> None:
        await ctx.stage(f"extract {finished}/{total}")

    done: dict[int, dict[str, Any]] = {}
    pages, _, _ = await read_pages(config.ocr, ctx, document.file_id, OcrOptions(), done, report)
    return [normalize(page["text"] or "") for page in pages]


async def _embed(ctx: JobContext, model: str, chunks: list[Chunk]) -> list[Any]:
    await ctx.stage("embed", f"{len(chunks)} chunks")
    vectors: list[Any] = [None] * len(chunks)
    for start in range(0, len(chunks), EMBED_IN_FLIGHT):
        ctx.raise_if_canceled()
        window = chunks[start : start + EMBED_IN_FLIGHT]
        results = await asyncio.gather(*(ctx.predict(model, EmbedInput(c.embedding_text())) for c in window))
        vectors[start : start + len(window)] = results
        await ctx.progress(100 * (start + len(window)) / len(chunks), f"{start + len(window)}/{len(chunks)} chunks")
    return vectors


async def _ingest(
    config: IngestConfig, ctx: JobContext, collection: Collection, document: Document, file: FileInfo | None
) -> int:
    search = config.search
    pages = await _pages(config, ctx, document, file)
    if not any(page.strip() for page in pages):
        raise BadDocument("no text found in the document (empty, or pictures without readable text)")
    await ctx.stage("chunk")
    chunks = await ctx.to_thread(
        lambda: chunk_pages(pages, budget_tokens=collection.chunk_tokens, overlap_tokens=collection.overlap_tokens)
    )
    vectors = await _embed(ctx, collection.embedding_model, chunks)
    await ctx.stage("index", f"{len(chunks)} chunks")
    tokens = await ctx.to_thread(lambda: [tokenize(chunk.embedding_text()) for chunk in chunks])
    records = [
        ChunkRecord(
            id=new_id(),
            document_id=document.id,
            index=chunk.index,
            text=chunk.text,
            heading=chunk.heading,
            page=chunk.page,
            vector=vector,
            tokens=chunk_tokens,
            metadata=document.metadata,
        )
        for chunk, vector, chunk_tokens in zip(chunks, vectors, tokens, strict=True)
    ]
    ctx.raise_if_canceled()
    await search.index.delete_document(collection.id, document.id)
    for start in range(0, len(records), UPSERT_BATCH):
        await search.index.upsert(collection.spec, records[start : start + UPSERT_BATCH])
    version = await _mark_ready(search, collection.id, document.id, len(records))
    if version is None:  # deleted while we worked: take back what we wrote
        if await _collection_exists(search, collection.id):
            await search.index.delete_document(collection.id, document.id)
        else:  # our upsert may have brought the dropped collection's index back
            await search.index.drop(collection.id)
        return 0
    version_seen(search, collection.id, version)
    return len(records)


async def _mark_ready(config: SearchConfig, collection_id: str, document_id: str, chunks: int) -> int | None:
    """The document ready and the collection's version bumped, in one transaction: whoever sees the
    document ready also sees the new version, so no search after that is answered from a cache entry
    made before its chunks were indexed. Returns the new version; None if the document is gone."""
    ids = {"_collection_id": collection_id, "_document_id": document_id}
    params = {"collection_id": collection_id, "chunks": chunks, "updated_at": utcnow(), **ids}
    async with db.write(config.engine) as conn:
        if not (await conn.execute(_ready_update(), params)).rowcount:
            return None
        return int((await conn.execute(version_bump(), params)).scalar_one())


async def _collection_exists(config: SearchConfig, collection_id: str) -> bool:
    async with db.read(config.engine) as conn:
        found = await conn.execute(sa.select(collections.c.id).where(collections.c.id == collection_id))
        return found.first() is not None


def register(registry: KindRegistry, config: IngestConfig) -> None:
    async def ingest(ctx: JobContext, data: IngestInput) -> dict[str, Any]:
        return await run_ingest(config, ctx, data)

    registry.kind("ingest", input_model=IngestInput)(ingest)


# Statements run for every document are built once, with bind parameters (see jobs/store.py).


@functools.cache
def _collection_query() -> sa.Select[Any]:
    return sa.select(collections).where(
        collections.c.id == sa.bindparam("collection_id"), collections.c.tenant == sa.bindparam("tenant")
    )


@functools.cache
def _file_query() -> sa.Select[Any]:
    return sa.select(files).where(files.c.id == sa.bindparam("file_id"), files.c.tenant == sa.bindparam("tenant"))


def _this_document() -> sa.ColumnElement[bool]:
    """Parameters `_document_id`, `_collection_id` (an UPDATE keeps the plain names for its columns)."""
    return sa.and_(
        documents.c.id == sa.bindparam("_document_id"), documents.c.collection_id == sa.bindparam("_collection_id")
    )


@functools.cache
def _processing_update() -> sa.Update:
    values: dict[str, Any] = {
        "status": DocumentStatus.PROCESSING,
        "error": None,
        "updated_at": sa.bindparam("updated_at"),
    }
    return documents.update().where(_this_document()).values(values).returning(*documents.columns)


@functools.cache
def _ready_update() -> sa.Update:
    values: dict[str, Any] = {
        "status": DocumentStatus.READY,
        "chunks": sa.bindparam("chunks"),
        "error": None,
        "updated_at": sa.bindparam("updated_at"),
    }
    return documents.update().where(_this_document()).values(values)
