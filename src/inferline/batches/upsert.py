"""A chunk of a batch's records upserted as documents of its collection, in bulk, inside the batch job (or
the record stream's server, `records/stream.py`): no ingest job, no file per record.

1. Each record checked (`checked`): a record that cannot be used gets its reason and goes no further.
2. One write transaction reads the documents of the chunk's ids and writes those to (re)index as
   `processing` rows. A record whose document is `ready` with the same text (sha256) and metadata costs
   nothing; a changed one keeps its document id. Rows come before the index is touched, so a chunk redone
   after a crash finds them and replaces their chunks by document id: nothing is indexed twice.
3. The documents' text chunked, every chunk of the chunk of records embedded together (full micro-batches,
   `search/indexing.py`, the ingest's own path), their old chunks replaced in the index.
4. The caller writes the outcome (`Upserted`) with the batch's records and counts, in one transaction.

A batch does 1 and the read-only part of 3 ahead (`check_chunk`, `embed_ahead`), while the chunk before
is still written: the model is never idle between chunks. Only reads and embedding run ahead: which
records need embedding is guessed from the rows as read then; the claim (2) decides, after the chunk
before is settled and checkpointed. A record embedded ahead that the claim finds unchanged costs its
embedding only; one the claim finds changed since is embedded then (`upsert_checked`).

A record that breaks the model fails the whole micro-batch it is in; the model runtime's batcher then runs
each item of that batch alone (`inference/batching.py`), so only the record's own chunks fail, and that is
the record's failure (the error file has it). When every record of a chunk fails (a chunk of one
included: a stream's group can be one record), the model is asked to embed a known text: if that fails too,
the model is down, not the records, and the attempt fails (a batch is retried from its last checkpoint, a
stream ends `UNAVAILABLE` and its client resends); if it answers, the records were the cause and fail.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from inferline import db
from inferline.batches.deps import BatchDeps
from inferline.batches.records import Record
from inferline.clock import utcnow
from inferline.errors import Canceled, InvalidInput, ModelError, NonRetryable, NotFound, Retry, shown_message
from inferline.files import sniff
from inferline.files.service import remove_blobs
from inferline.files.store import release_files
from inferline.ids import new_id
from inferline.jobs.context import JobContext
from inferline.jobs.statements import runs_within
from inferline.search import documents
from inferline.search.chunks import Chunk
from inferline.search.embedders import EmbedInput
from inferline.search.extract import plain_text
from inferline.search.filters import FieldType, check_metadata
from inferline.search.index import ChunkRecord, Vector
from inferline.search.indexing import DocumentText, chunk_documents, chunk_records, embed_documents, replace_chunks
from inferline.search.model import Collection, Document, DocumentStatus
from inferline.search.store import SearchStore
from inferline.shielding import despite_cancel
from inferline.turns import TenantSlots

log = structlog.get_logger(__name__)
# Chunk records written to the index in one transaction (`_index_writes`): ~0.3 s with embedded Qdrant.
INDEX_WRITE_RECORDS = 1_000

MAX_ERROR_CHARS = 1000


@dataclass
class _Pending:
    """A document the chunk names: the text and metadata of the last record with its id, and the
    outcomes of every record with it (an id twice in a chunk is one document, as it would be in two)."""

    text: str
    metadata: dict[str, Any]
    sha256: str
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    document_id: str = ""
    chunks: list[Chunk] = field(default_factory=list)
    vectors: list[Vector] | str | None = None  # None: not embedded yet; a str: why its embedding failed


@dataclass(frozen=True)
class Upserted:
    outcomes: list[dict[str, Any]]  # per record: line, custom_id, document_id, error
    ready: dict[str, int]  # document id -> its chunks
    failed: dict[str, str]  # document id -> why its embedding failed


@dataclass(frozen=True)
class Checked:
    """A chunk of records checked: each record's outcome so far and the documents they name."""

    outcomes: list[dict[str, Any]]  # per record: line, custom_id, document_id, error
    pending: dict[str, _Pending]  # by external id


async def upsert_chunk(
    deps: BatchDeps,
    ctx: JobContext,
    collection: Collection,
    chunk: list[Record],
    *,
    id_field: str,
    job_id: str | None,
) -> Upserted:
    """`chunk` upserted into `collection`; `id_field` names the records' id in their errors, `job_id` is
    the job the documents are shown as made by (None: a record stream's, made by no job)."""
    return await upsert_checked(deps, ctx, collection, check_chunk(deps, collection, chunk, id_field=id_field), job_id)


def check_chunk(deps: BatchDeps, collection: Collection, chunk: list[Record], *, id_field: str) -> Checked:
    """Each record checked (step 1): no row read or written."""
    return Checked(*_check_all(deps, id_field, collection, chunk))


async def embed_ahead(deps: BatchDeps, ctx: JobContext, collection: Collection, checked: Checked) -> None:
    """The chunks and vectors of the checked records whose documents, as read now, are to be indexed: reads
    and embedding only, so it may run while the chunk before is written. If it fails (a model down, a
    stop), they are embedded again after the claim, where a failure is the chunk's: its rows say why."""
    if not checked.pending:
        return
    try:
        async with db.read(deps.engine) as conn:
            existing = await SearchStore(conn).documents_by_external_id(collection.id, list(checked.pending))
        items = [
            item
            for external_id, item in checked.pending.items()
            if (document := existing.get(external_id)) is None or not _unchanged(document, item)
        ]
        await _embed_items(deps, ctx, collection, items)
    except Exception as exc:
        log.info("batch_embed_ahead_failed", job_id=ctx.id, error=repr(exc)[:MAX_ERROR_CHARS])


async def upsert_checked(
    deps: BatchDeps, ctx: JobContext, collection: Collection, checked: Checked, job_id: str | None
) -> Upserted:
    """Steps 2-3 for a checked chunk: rows claimed, the records not embedded ahead embedded, chunks indexed."""
    outcomes = checked.outcomes
    todo = await _claim(deps, job_id, collection, checked.pending)
    if not todo:
        return Upserted(outcomes, {}, {})
    try:
        ready, failed = await _index(deps, ctx, collection, todo, job_id)
    except BaseException as exc:
        # What this chunk had begun is not indexed: say so, as a canceled ingest does, whatever stopped it
        # (a cancel, the worker's task cancelled, an error): a document left `processing` would pass for
        # unchanged and never be indexed again. The next attempt, if any, redoes them. Documents of the
        # index writes that had committed (`_index_writes`) have their new chunks searchable meanwhile.
        if isinstance(exc, Canceled):
            reason = str(exc) or "canceled"
        elif isinstance(exc, Exception):
            reason = f"not indexed: {shown_message(exc, reference=job_id or 'record stream')}"
        else:
            reason = "not indexed: stopped before its chunks were (canceled, or its worker stopped)"
        failed_all = {item.document_id: reason for item in todo}

        async def mark_failed() -> None:
            async with db.write(deps.engine, slow=True) as conn:
                store = SearchStore(conn)
                await store.mark_indexed(collection.id, job_id=job_id, ready={}, failed=failed_all, now=utcnow())

        await despite_cancel(mark_failed())
        raise
    for item in todo:
        error = failed.get(item.document_id)
        for outcome in item.outcomes:
            outcome["document_id"], outcome["error"] = (None, error) if error else (item.document_id, None)
    return Upserted(outcomes, ready, failed)


# -- 1. checks ----------------------------------------------------------------------------------------------


def _check_all(
    deps: BatchDeps, id_field: str, collection: Collection, chunk: list[Record]
) -> tuple[list[dict[str, Any]], dict[str, _Pending]]:
    outcomes: list[dict[str, Any]] = []
    pending: dict[str, _Pending] = {}
    for record in chunk:
        outcome: dict[str, Any] = {
            "line": record.line,
            "custom_id": shown_id(record.custom_id),
            "document_id": None,
            "error": None,
        }
        outcomes.append(outcome)
        try:
            try:
                text, metadata, external_id = checked(deps, id_field, collection, record)
            except (ValueError, TypeError, RecursionError) as exc:  # a record no check foresaw: its own failure
                raise InvalidInput(f"the record cannot be used: {str(exc)[:200] or type(exc).__name__}") from exc
        except InvalidInput as exc:
            outcome["error"] = str(exc)[:MAX_ERROR_CHARS]
            continue
        sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()  # as a file of the same text would have
        earlier = pending.pop(external_id, None)  # re-added: the dict keeps the order of last occurrences
        pending[external_id] = _Pending(text, metadata, sha256, [*(earlier.outcomes if earlier else []), outcome])
    return outcomes, pending


def shown_id(custom_id: object) -> str | None:
    """The id as an output row can hold it (the column's 500 characters, no NUL, no lone surrogate)."""
    if isinstance(custom_id, int) and not isinstance(custom_id, bool):
        return str(custom_id)
    if not isinstance(custom_id, str):
        return None
    return custom_id.replace("\x00", "")[:500].encode("utf-8", "replace").decode("utf-8")


def checked(deps: BatchDeps, id_field: str, collection: Collection, record: Record) -> tuple[str, dict[str, Any], str]:
    """The record's text, metadata (the collection's declared fields typed) and id, or InvalidInput with
    the reason it cannot be used."""
    if record.error is not None:
        raise InvalidInput(record.error)
    custom_id = record.custom_id
    if isinstance(custom_id, int) and not isinstance(custom_id, bool):
        custom_id = str(custom_id)
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise InvalidInput(f"{id_field}: missing or not a string")
    text = record.text
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text: empty")
    if "\x00" in text:
        raise InvalidInput("text: holds a NUL character")
    # Strict UTF-8: a JSON string may hold a lone surrogate, which no database column takes.
    custom_id.encode("utf-8")
    if len(text.encode("utf-8")) > deps.limits.max_record_bytes:
        raise InvalidInput(f"text: over {deps.limits.max_record_bytes} bytes (setting batch_max_record_bytes)")
    metadata = record.metadata
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInput("metadata: must be a JSON object")
    if not record.typed and metadata:
        metadata = _typed(collection.fields, metadata)
    if metadata:
        json.dumps(metadata, ensure_ascii=False).encode("utf-8")
    metadata, external_id = documents.check_document_input(metadata, custom_id)
    assert external_id is not None
    return text, check_metadata(collection.fields, metadata), external_id


def _typed(fields: dict[str, FieldType], cells: dict[str, Any]) -> dict[str, Any]:
    """CSV cells of the collection's declared fields as their types ("3" for an int field is 3)."""
    typed = dict(cells)
    for name, kind in fields.items():
        value = cells.get(name)
        if not isinstance(value, str):
            continue
        try:
            if kind is FieldType.INT:
                typed[name] = int(value)
            elif kind is FieldType.FLOAT:
                typed[name] = float(value)
            elif kind is FieldType.BOOL:
                typed[name] = {"true": True, "false": False, "1": True, "0": False}[value.strip().lower()]
        except (ValueError, KeyError) as exc:
            raise InvalidInput(f"metadata.{name}: expected {kind.value}, got {value[:50]!r}") from exc
    return typed


# -- 2. the rows --------------------------------------------------------------------------------------------


async def _claim(
    deps: BatchDeps, job_id: str | None, collection: Collection, pending: dict[str, _Pending]
) -> list[_Pending]:
    """The documents to (re)index, written `processing` (each with its id set); the unchanged ones' outcomes
    get their document id. The files of replaced documents made from a file are released."""
    if not pending:
        return []
    try:
        async with db.write(deps.engine, slow=True) as conn:  # a chunk of up to 10,000 records
            store = SearchStore(conn)
            if not await store.collection_exists(collection.id):
                raise NonRetryable(f"collection {collection.name!r} was deleted")
            existing = await store.documents_by_external_id(collection.id, list(pending))
            todo, added, replaced = _sorted_out(job_id, collection, pending, existing)
            await store.add_documents(added)
            await store.update_documents(replaced)
            old_files = [row["_file_id"] for row in replaced if row["_file_id"] is not None]
            released = await release_files(conn, collection.tenant, old_files)
    except IntegrityError as exc:  # a document of one of these ids added through the API meanwhile
        raise Retry("a document of this chunk was added by another request meanwhile", after_s=1.0) from exc
    await remove_blobs(deps.engine, deps.blobs, released)
    return todo


def _sorted_out(
    job_id: str | None, collection: Collection, pending: dict[str, _Pending], existing: dict[str, Document]
) -> tuple[list[_Pending], list[dict[str, Any]], list[dict[str, Any]]]:
    """(the documents to index, rows to add, rows to replace: each with the file it was made from as
    `_file_id`)."""
    now = utcnow()
    todo: list[_Pending] = []
    added: list[dict[str, Any]] = []
    replaced: list[dict[str, Any]] = []
    for external_id, item in pending.items():
        document = existing.get(external_id)
        if document is not None and _unchanged(document, item):
            item.document_id = document.id
            for outcome in item.outcomes:
                outcome["document_id"] = document.id
            continue
        values: dict[str, Any] = {
            "sha256": item.sha256,
            "file_id": None,
            "filename": None,
            "content_type": sniff.TEXT,
            "metadata": item.metadata,
            "status": DocumentStatus.PROCESSING,
            "job_id": job_id,
            "error": None,
            "updated_at": now,
        }
        if document is None:
            item.document_id = new_id()
            values |= {"id": item.document_id, "collection_id": collection.id, "tenant": collection.tenant}
            added.append(values | {"external_id": external_id, "chunks": 0, "created_at": now})
        else:
            item.document_id = document.id
            replaced.append(values | {"_document_id": document.id, "_file_id": document.file_id})
        todo.append(item)
    return todo, added, replaced


def _unchanged(document: Document, item: _Pending) -> bool:
    """Indexed already with this text and metadata. Only `ready` counts: a `processing` one is a chunk
    redone after a crash (its chunks may be half written), a `queued` one an upload's ingest to come."""
    return (
        document.sha256 == item.sha256
        and document.metadata == item.metadata
        and document.status == DocumentStatus.READY
    )


# -- 3. chunk, embed, index ---------------------------------------------------------------------------------


async def _index(
    deps: BatchDeps, ctx: JobContext, collection: Collection, todo: list[_Pending], job_id: str | None
) -> tuple[dict[str, int], dict[str, str]]:
    """(ready: chunks by document id, failed: error by document id); their chunks replaced in the index,
    of those still this writer's (`job_id`) only, while their rows are locked, as an ingest does: a document
    uploaded again or upserted by a newer batch since the claim keeps its newer chunks, and a replacement
    or a delete of one waits for the index write. The caller's `mark_indexed` is fenced the same way."""
    await _embed_items(deps, ctx, collection, [item for item in todo if item.vectors is None])
    failed = {item.document_id: item.vectors for item in todo if isinstance(item.vectors, str)}

    def records() -> list[ChunkRecord]:
        made: list[ChunkRecord] = []
        for item in todo:
            if isinstance(item.vectors, list):
                made += chunk_records(DocumentText(item.document_id, [], item.metadata), item.chunks, item.vectors)
        return made

    made = await ctx.to_thread(records)
    ready = {item.document_id: len(item.chunks) for item in todo if item.document_id not in failed}
    by_document: dict[str, list[ChunkRecord]] = {}
    for record in made:
        by_document.setdefault(record.document_id, []).append(record)
    try:
        for group in _index_writes(list(ready), ready):
            async with db.write(deps.engine, slow=True) as conn:
                current = await SearchStore(conn).lock_current(collection.id, group, job_id=job_id)
                mine = [document_id for document_id in group if document_id in current]
                ours = [record for document_id in mine for record in by_document.get(document_id, [])]
                await replace_chunks(deps.search.index, collection.spec, mine, ours)
    except NotFound as exc:
        raise NonRetryable(f"collection {collection.name!r} was deleted") from exc
    return ready, failed


def _index_writes(document_ids: list[str], chunks: dict[str, int]) -> list[list[str]]:
    """The documents in runs of at most INDEX_WRITE_RECORDS chunks (a document of more alone), each written
    to the index in a transaction of its own. On SQLite every writer of every tenant waits for that
    transaction: a chunk of 10,000 records (`chunk_records`' bound) held them ~0.3 s per 1,000 chunks in the
    embedded index, seconds at a time. Each document's chunks are still replaced in one transaction."""
    sizes = [chunks[document_id] for document_id in document_ids]
    return [document_ids[run.start : run.stop] for run in runs_within(sizes, INDEX_WRITE_RECORDS) if run]


async def _embed_items(deps: BatchDeps, ctx: JobContext, collection: Collection, items: list[_Pending]) -> None:
    """Each item's chunks and vectors (or why its embedding failed), every chunk handed over together."""
    if not items:
        return
    texts = [DocumentText("", [plain_text(item.text)], item.metadata) for item in items]
    chunked = await ctx.to_thread(chunk_documents, collection, texts)
    found = await _embed(ctx, collection.embedding_model, chunked, deps.embed_slots)
    for item, chunks, vectors in zip(items, chunked, found, strict=True):
        item.chunks, item.vectors = chunks, vectors


async def _embed(
    ctx: JobContext, model: str, chunked: list[list[Chunk]], in_flight: TenantSlots
) -> list[list[Vector] | str]:
    """Each document's vectors, or the reason its embedding failed alone (see the module's docstring)."""
    found: list[list[Vector] | str] = []
    failures: list[Exception] = []
    for vectors in await embed_documents(ctx, model, chunked, in_flight=in_flight):
        if isinstance(vectors, Exception):
            failures.append(vectors)
            log.warning("batch_record_embedding_failed", job_id=ctx.id, error=repr(vectors)[:MAX_ERROR_CHARS])
            found.append(shown_message(vectors, reference=f"job {ctx.id}")[:MAX_ERROR_CHARS])
        else:
            found.append(vectors)
    if failures and len(failures) == len(chunked) and not await _model_answers(ctx, model):
        raise ModelError(f"model {model} does not answer: {type(failures[0]).__name__}") from failures[0]
    return found


CANARY_TEXT = "inferline model check"


async def _model_answers(ctx: JobContext, model: str) -> bool:
    """Whether the model embeds a plain text now: a chunk whose every record failed says nothing by itself
    about whether the records or the model are to blame."""
    try:
        await ctx.predict(model, EmbedInput(CANARY_TEXT))
    except Exception as exc:
        log.warning("batch_model_down", job_id=ctx.id, model=model, error=repr(exc)[:MAX_ERROR_CHARS])
        return False
    return True
