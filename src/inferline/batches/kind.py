"""The `batch` job kind: validate the input file, then upsert its records chunk by chunk as documents of
the collection (each through `search.documents.add_document`, whose `ingest` job embeds and indexes it),
then write the output and error files.

- validating: the file is read once to count its records (and to fail early on input that is not what
  its type says); `total` is known from then on.
- in_progress: per chunk of `chunk_records` records: each record checked (its failure goes aside with
  the reason), upserted by `custom_id`, and its ingest waited for (a model error on that record alone is a
  failed record too); the chunk's outcomes and the counts are written, then the job checkpoints. A worker
  killed mid-chunk leaves the checkpoint of the chunk before: the next attempt redoes at most that one
  chunk, and the upsert by `custom_id` makes the redo cost nothing for the records it had done.
- finalizing: the output file (`custom_id`, `line`, `document_id`) and the error file (`custom_id`,
  `line`, `error`), JSONL, stored as the tenant's files; the collection's version advanced once (its
  cached searches retired) with the batch marked completed, in one transaction.

Every record failing, or input that is not what its type says, fails the batch with the reason.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from inferline import db
from inferline.batches.deps import BatchDeps
from inferline.batches.model import COMPLETED, FAILED, FINALIZING, IN_PROGRESS, VALIDATING, Batch
from inferline.batches.records import BadInput, Format, Record, input_format, read_records
from inferline.batches.store import BatchStore
from inferline.clock import utcnow
from inferline.errors import InferlineError, InvalidInput, NonRetryable, NotFound
from inferline.events import outbox
from inferline.files import sniff
from inferline.files.refs import FileId
from inferline.files.service import FileInfo, blob_path, finish_upload, get_file, insert_file, receive_file
from inferline.jobs import webhooks
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.store import JobStore
from inferline.search import documents
from inferline.search.filters import FieldType
from inferline.search.model import Collection, DocumentStatus
from inferline.search.store import SearchStore

KIND = "batch"
MAX_ERROR_CHARS = 1000


class BatchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: str = Field(min_length=1, max_length=36)
    input_file_id: FileId = Field(min_length=1, max_length=36)


def register(registry: KindRegistry, deps: BatchDeps) -> None:
    async def batch(ctx: JobContext, data: BatchInput) -> dict[str, Any]:
        return await run_batch(deps, ctx, data)

    # It waits for its records' ingest jobs: in the orchestration lane, never in a slot they need.
    registry.kind(KIND, input_model=BatchInput, waits_on_jobs=True)(batch)


async def run_batch(deps: BatchDeps, ctx: JobContext, data: BatchInput) -> dict[str, Any]:
    async with db.read(deps.engine) as conn:
        batch = await BatchStore(conn).batch(ctx.tenant, data.batch_id)
    if batch is None:
        raise NonRetryable(f"batch {data.batch_id} not found")
    try:
        return await _run(deps, ctx, batch)
    except (BadInput, NonRetryable) as exc:
        reason = str(exc)[:MAX_ERROR_CHARS]
        await _update(deps, batch.id, {"status": FAILED, "error": reason, "completed_at": utcnow()})
        raise NonRetryable(reason) from exc


async def _run(deps: BatchDeps, ctx: JobContext, batch: Batch) -> dict[str, Any]:
    collection = await _collection(deps, batch)
    file = await get_file(deps.engine, tenant=batch.tenant, file_id=batch.input_file_id)
    path = blob_path(deps.blobs, file)
    fmt = await ctx.to_thread(_format_of, file, path, deps.max_file_bytes)
    only = await _only_lines(deps, batch)
    state = ctx.last_checkpoint if isinstance(ctx.last_checkpoint, dict) else None
    if state is None:
        await ctx.stage(VALIDATING)
        await _update(deps, batch.id, {"status": VALIDATING})
        total = await ctx.to_thread(lambda: sum(1 for _ in _records(deps, batch, path, fmt, only)))
        if total == 0:
            raise BadInput(f"the {fmt.upper()} file holds no records")
        state = {"total": total, "done": 0, "completed": 0, "failed": 0}
        await _update(deps, batch.id, {"status": IN_PROGRESS, "total": total, "completed": 0, "failed": 0})
        await ctx.checkpoint(state, progress=0.0)
    if state.get("finalizing"):
        return await _finalize(deps, ctx, batch, collection, state)
    await ctx.stage(IN_PROGRESS, f"{state['done']}/{state['total']} records")
    records = _records(deps, batch, path, fmt, only)
    try:
        await ctx.to_thread(_skip, records, state["done"])
        while chunk := await ctx.to_thread(_take, records, batch.chunk_records):
            ctx.raise_if_canceled()
            outcomes = await _chunk(deps, ctx, batch, collection, chunk)
            failed = sum(1 for outcome in outcomes if outcome["error"] is not None)
            state = state | {
                "done": state["done"] + len(chunk),
                "completed": state["completed"] + len(chunk) - failed,
                "failed": state["failed"] + failed,
            }
            async with db.write(deps.engine) as conn:
                store = BatchStore(conn)
                await store.replace_records(batch.id, chunk[0].line, outcomes)
                await store.update(
                    batch.id, {"completed": state["completed"], "failed": state["failed"], "updated_at": utcnow()}
                )
            await ctx.checkpoint(state, progress=95.0 * state["done"] / max(state["total"], 1))
            await ctx.stage(IN_PROGRESS, f"{state['done']}/{state['total']} records")
    finally:
        await asyncio.to_thread(records.close)  # the file it holds open
    state = state | {"finalizing": True}
    await ctx.checkpoint(state)
    return await _finalize(deps, ctx, batch, collection, state)


async def _collection(deps: BatchDeps, batch: Batch) -> Collection:
    async with db.read(deps.engine) as conn:
        collection = await SearchStore(conn).collection_named(batch.tenant, batch.collection)
    if collection is None:
        raise NonRetryable(f"collection {batch.collection!r} was deleted")
    return collection


def _format_of(file: FileInfo, path: Path, max_file_bytes: int) -> Format:
    if file.size > max_file_bytes:
        raise BadInput(f"the input file is over {max_file_bytes} bytes (setting batch_max_file_bytes)")
    if file.content_type not in (sniff.TEXT, sniff.HTML):
        raise BadInput(f"the input file is {file.content_type}, not JSONL or CSV text")
    with path.open("rb") as stream:
        head = stream.read(sniff.HEAD_BYTES)
    return input_format(file.filename, head)


async def _only_lines(deps: BatchDeps, batch: Batch) -> set[int] | None:
    """A retry's records: the lines that failed in the batch it retries."""
    if batch.retry_of is None:
        return None
    async with db.read(deps.engine) as conn:
        return await BatchStore(conn).failed_lines(batch.retry_of)


def _records(deps: BatchDeps, batch: Batch, path: Path, fmt: Format, only: set[int] | None) -> Generator[Record]:
    found = read_records(path, fmt, template=batch.text_template, id_field=batch.id_field, limits=deps.limits)
    return found if only is None else (record for record in found if record.line in only)


def _skip(records: Iterator[Record], count: int) -> None:
    for _ in range(count):
        if next(records, None) is None:
            return


# A chunk holds at most this much input besides its record count: parsed JSON takes up to ~25 times its
# text (a line of `[{},{},...]`), so a chunk of large records is cut short rather than held whole.
CHUNK_MAX_BYTES = 4 * 2**20


def _take(records: Iterator[Record], count: int) -> list[Record]:
    taken: list[Record] = []
    size = 0
    for record in records:
        taken.append(record)
        size += record.size
        if len(taken) == count or size >= CHUNK_MAX_BYTES:
            break
    return taken


async def _update(deps: BatchDeps, batch_id: str, values: dict[str, Any]) -> None:
    async with db.write(deps.engine) as conn:
        await BatchStore(conn).update(batch_id, values | {"updated_at": utcnow()})


# -- one chunk ----------------------------------------------------------------------------------------------


async def _chunk(
    deps: BatchDeps, ctx: JobContext, batch: Batch, collection: Collection, chunk: list[Record]
) -> list[dict[str, Any]]:
    """Each record's outcome (`line`, `custom_id`, `document_id`, `error`), once its ingest has ended."""
    outcomes: list[dict[str, Any]] = []
    waiting: dict[str, dict[str, Any]] = {}
    for record in chunk:
        outcome: dict[str, Any] = {
            "line": record.line,
            "custom_id": _shown_id(record.custom_id),
            "document_id": None,
            "error": None,
        }
        outcomes.append(outcome)
        try:
            try:
                text, metadata, external_id = _checked(deps, batch, collection, record)
            except (ValueError, TypeError, RecursionError) as exc:  # a record no check foresaw: its own failure
                raise InvalidInput(f"the record cannot be used: {str(exc)[:200] or type(exc).__name__}") from exc
            document = await _upsert(deps, collection, text, metadata, external_id)
        except NonRetryable:  # not this record's fault: the collection is gone
            raise
        except InferlineError as exc:
            outcome["error"] = str(exc)[:MAX_ERROR_CHARS]
            continue
        outcome["document_id"] = document
        waiting[document] = outcome
    await _wait(deps, ctx, waiting)
    return outcomes


def _shown_id(custom_id: object) -> str | None:
    """The id as an output row can hold it (the column's 500 characters, no NUL, no lone surrogate)."""
    if isinstance(custom_id, int) and not isinstance(custom_id, bool):
        return str(custom_id)
    if not isinstance(custom_id, str):
        return None
    return custom_id.replace("\x00", "")[:500].encode("utf-8", "replace").decode("utf-8")


def _checked(deps: BatchDeps, batch: Batch, collection: Collection, record: Record) -> tuple[str, dict[str, Any], str]:
    """The record's text, metadata and id, or InvalidInput with the reason it cannot be used."""
    if record.error is not None:
        raise InvalidInput(record.error)
    custom_id = record.custom_id
    if isinstance(custom_id, int) and not isinstance(custom_id, bool):
        custom_id = str(custom_id)
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise InvalidInput(f"{batch.id_field}: missing or not a string")
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
    checked, external_id = documents.check_document_input(metadata, custom_id)
    assert external_id is not None
    return text, checked, external_id


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


async def _upsert(
    deps: BatchDeps, collection: Collection, text: str, metadata: dict[str, Any], external_id: str
) -> str:
    """The record as the collection's document `external_id` (the search workload's own upsert: the same
    text and metadata cost nothing); returns the document's id."""
    received = await receive_file(
        deps.blobs,
        tenant=collection.tenant,
        source=io.BytesIO(text.encode("utf-8")),
        filename=None,
        max_bytes=deps.limits.max_record_bytes,
        quota=deps.quota,
    )
    file = replace(received, content_type=sniff.TEXT)  # a record is plain text, whatever it starts with
    refused = True
    try:
        _, document, _ = await documents.add_document(
            deps.submitter,
            deps.blobs,
            tenant=collection.tenant,
            name=collection.name,
            file=file,
            metadata=metadata,
            external_id=external_id,
        )
        refused = False
    except NotFound as exc:  # the collection: every record would fail the same way
        raise NonRetryable(str(exc)) from exc
    finally:
        await finish_upload(deps.engine, file, refused=refused)
    return document.id


async def _wait(deps: BatchDeps, ctx: JobContext, waiting: dict[str, dict[str, Any]]) -> None:
    """Until every document of the chunk is ready or failed (a failed ingest is that record's error)."""
    pending = list(waiting)
    while pending:
        async with db.read(deps.engine) as conn:
            states = await BatchStore(conn).document_states(pending)
        still: list[str] = []
        for document_id in pending:
            status, error = states.get(document_id, (None, "the document was deleted during the batch"))
            if status == DocumentStatus.READY:
                continue
            if status == DocumentStatus.FAILED or status is None:
                waiting[document_id]["error"] = (error or "ingest failed")[:MAX_ERROR_CHARS]
                continue
            still.append(document_id)
        pending = still
        if pending:
            ctx.raise_if_canceled()
            await asyncio.sleep(deps.poll_s)


# -- the end ------------------------------------------------------------------------------------------------


async def _finalize(
    deps: BatchDeps, ctx: JobContext, batch: Batch, collection: Collection, state: dict[str, Any]
) -> dict[str, Any]:
    result = {"batch_id": batch.id, "completed": state["completed"], "failed": state["failed"]}
    async with db.read(deps.engine) as conn:
        current = await BatchStore(conn).batch(batch.tenant, batch.id)
    if current is not None and current.status == COMPLETED:  # an attempt that died after completing it
        return result
    await ctx.stage(FINALIZING)
    await _update(deps, batch.id, {"status": FINALIZING})
    output = await _results_file(deps, batch, failed=False) if state["completed"] else None
    errors = await _results_file(deps, batch, failed=True) if state["failed"] else None
    every_one_failed = state["completed"] == 0
    now = utcnow()
    values: dict[str, Any] = {
        "status": FAILED if every_one_failed else COMPLETED,
        "output_file_id": output.id if output else None,
        "error_file_id": errors.id if errors else None,
        "completed_at": now,
        "updated_at": now,
    }
    if every_one_failed:
        values["error"] = f"every record failed ({state['failed']}): see the error file"
    refused = True
    version: int | None = None
    try:
        async with db.write(deps.engine) as conn:
            for file in (output, errors):
                if file is not None:
                    await insert_file(conn, file)
            await BatchStore(conn).update(batch.id, values)
            done = _done(batch, values, state)
            await outbox.record(
                conn,
                f"batch.{done.status}",
                subject=batch.id,
                tenant=batch.tenant,
                data=done.public_view(None),
                now=now,
            )
            if not every_one_failed:
                version = await SearchStore(conn).advance_version(collection.id)
                await _webhook(conn, done, ctx.id, now)
        refused = False
    finally:
        for file in (output, errors):
            if file is not None:
                await finish_upload(deps.engine, file, refused=refused)
    if version is not None:
        deps.search.collection_cache.advanced(collection.id, version)
    if every_one_failed:
        raise NonRetryable(values["error"])
    return result


async def _results_file(deps: BatchDeps, batch: Batch, *, failed: bool) -> FileInfo:
    """The batch's done (or failed) records as a JSONL file of its tenant, staged (not yet written)."""
    with tempfile.TemporaryFile() as spool:
        after = 0
        while True:
            async with db.read(deps.engine) as conn:
                rows = await BatchStore(conn).records(batch.id, failed=failed, after_line=after)
            if not rows:
                break
            await asyncio.to_thread(_write_lines, spool, rows, failed)
            after = rows[-1]["line"]
        await asyncio.to_thread(spool.seek, 0)
        which = "errors" if failed else "output"
        received = await receive_file(
            deps.blobs,
            tenant=batch.tenant,
            source=spool,
            filename=f"batch_{batch.id}_{which}.jsonl",
            max_bytes=2**40,
        )
    return replace(received, content_type="application/jsonl")


def _write_lines(spool: BinaryIO, rows: list[dict[str, Any]], failed: bool) -> None:
    for row in rows:
        entry = {"custom_id": row["custom_id"], "line": row["line"]}
        entry |= {"error": row["error"]} if failed else {"document_id": row["document_id"]}
        spool.write(json.dumps(entry, ensure_ascii=False).encode() + b"\n")


def _done(batch: Batch, values: dict[str, Any], state: dict[str, Any]) -> Batch:
    done = replace(batch, **{k: v for k, v in values.items() if k in Batch.__dataclass_fields__})
    # `batch` is as read when the job started, before its records were counted: the counts come from `state`.
    return replace(done, total=state["total"], completed=state["completed"], failed=state["failed"])


async def _webhook(conn: Any, done: Batch, job_id: str, now: datetime) -> None:
    """`batch.completed` to the batch's webhook, in the transaction that completes it."""
    job = await JobStore(conn).get(job_id)
    if job is None or job.webhook is None:
        return
    await webhooks.enqueue_event(conn, job, "batch.completed", done.public_view(None), now)
