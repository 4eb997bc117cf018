"""Chunk → embed → index: how documents' text becomes chunk records of a collection's index. One path for
its two callers, so a document is the same chunks, vectors and tokens whichever way it came:

- the `ingest` kind (`kind.py`): one document, its text extracted from its file;
- a batch (`batches/kind.py`): the documents of a chunk of records together, their chunks handed to the
  model runtime at once so that its micro-batches are full.

Embedding reports each document's failure apart (`embed_documents`): the caller decides whether it is
the document's own (a batch sets that record aside) or the job's (an ingest raises it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inferline.errors import JobError, Overloaded, Unavailable
from inferline.ids import new_id
from inferline.jobs.context import JobContext
from inferline.search.chunks import Chunk, chunk_pages
from inferline.search.embedders import EmbedInput
from inferline.search.index import ChunkRecord, IndexSpec, SearchIndex, Vector
from inferline.search.model import Collection
from inferline.search.tokens import chunk_terms
from inferline.turns import TenantSlots

EMBED_IN_FLIGHT = 128  # chunks handed to the batcher at once: several full batches, bounded memory


def embed_budget(queue_limit: int) -> int:
    """How many chunks all the ingests, batches and record streams of a process may have in a model's
    queue at once: EMBED_IN_FLIGHT, within half of the queue's limit (`model_queue_limit`), so together they
    never fill it and the rest is left to others (a collection's probe, another model's caller). Each ingest
    taking EMBED_IN_FLIGHT on its own, three at once (256 by default) had the third's items refused
    (`Overloaded`) and its attempt failed."""
    return max(1, min(EMBED_IN_FLIGHT, queue_limit // 2))


UPSERT_BATCH = 256

# Failures that are the job's, never one item's: a stop, a full queue, a database that does not answer.
NOT_THE_ITEMS = (JobError, Overloaded, Unavailable)

Progress = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class DocumentText:
    """A document's text as the index takes it: its pages' texts (one for unpaged text), its title ("" for
    none) and the metadata its chunks carry."""

    id: str
    pages: list[str]
    metadata: dict[str, Any]
    title: str = ""


def chunk_documents(collection: Collection, documents: Sequence[DocumentText]) -> list[list[Chunk]]:
    """Each document's chunks, with the collection's budget and overlap (CPU work: run it on a thread)."""
    return [
        chunk_pages(
            document.pages,
            budget_tokens=collection.chunk_tokens,
            overlap_tokens=collection.overlap_tokens,
            title=document.title,
        )
        for document in documents
    ]


async def embed_documents(
    ctx: JobContext,
    model: str,
    chunked: Sequence[list[Chunk]],
    progress: Progress | None = None,
    *,
    in_flight: TenantSlots | None = None,
) -> list[list[Vector] | Exception]:
    """Each document's vectors, or the first exception one of its chunks raised. Every chunk of every
    document goes to the model runtime together (up to EMBED_IN_FLIGHT at a time, or as many as
    `in_flight` lets, a budget shared with other embeddings), so documents of a chunk or two fill its
    batches as one large document does. `progress(done, total)` in chunks."""
    flat = [chunk for chunks in chunked for chunk in chunks]
    vectors = await _embed(ctx, model, flat, progress, in_flight)
    found: list[list[Vector] | Exception] = []
    start = 0
    for chunks in chunked:
        mine = vectors[start : start + len(chunks)]
        start += len(chunks)
        failure = next((item for item in mine if isinstance(item, Exception)), None)
        found.append(failure if failure is not None else [item for item in mine if not isinstance(item, Exception)])
    return found


async def _embed(
    ctx: JobContext, model: str, chunks: list[Chunk], progress: Progress | None, in_flight: TenantSlots | None
) -> list[Any]:
    """Vectors (or an item's exception) in the order of `chunks`. A fixed number of workers take the next
    chunk as each finishes, so the batcher never waits for a whole window to drain."""
    results: list[Any] = [None] * len(chunks)
    todo = iter(range(len(chunks)))  # shared: each index is taken by one worker
    done = 0

    async def worker() -> None:
        nonlocal done
        for i in todo:
            ctx.raise_if_canceled()
            try:
                if in_flight is None:
                    results[i] = await ctx.predict(model, EmbedInput(chunks[i].embedding_text()))
                else:
                    async with in_flight.hold(ctx.tenant):
                        results[i] = await ctx.predict(model, EmbedInput(chunks[i].embedding_text()))
            except NOT_THE_ITEMS:
                raise
            except Exception as exc:  # this item's: the caller decides whose failure it is
                results[i] = exc
            done += 1
            if progress is not None and (done % EMBED_IN_FLIGHT == 0 or done == len(chunks)):
                await progress(done, len(chunks))

    workers = [asyncio.ensure_future(worker()) for _ in range(min(EMBED_IN_FLIGHT, len(chunks)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return results


def chunk_records(document: DocumentText, chunks: list[Chunk], vectors: list[Vector]) -> list[ChunkRecord]:
    """The document's chunks as index records: vectors and keyword tokens (CPU work: run it on a thread)."""
    records = []
    for chunk, vector in zip(chunks, vectors, strict=True):
        tokens, heading_tokens = chunk_terms(chunk.heading, chunk.text)
        records.append(
            ChunkRecord(
                id=new_id(),
                document_id=document.id,
                index=chunk.index,
                text=chunk.text,
                heading=chunk.heading,
                page=chunk.page,
                vector=vector,
                tokens=tokens,
                metadata=document.metadata,
                heading_tokens=heading_tokens,
            )
        )
    return records


async def replace_chunks(
    index: SearchIndex, spec: IndexSpec, document_ids: Sequence[str], records: list[ChunkRecord]
) -> None:
    """These documents' chunks in the index are `records` (their old chunks deleted first). NotFound if the
    collection was dropped meanwhile."""
    await index.delete_documents(spec.collection_id, document_ids)
    for start in range(0, len(records), UPSERT_BATCH):
        await index.upsert(spec, records[start : start + UPSERT_BATCH])
