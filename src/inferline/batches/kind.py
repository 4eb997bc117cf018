"""The `batch` job kind: validate the input file, then upsert its records chunk by chunk as documents of
the collection, in bulk and inside this job (`upsert.py`: no ingest job or file per record), then write
the output and error files.

- validating: the file is read once to count its records (and to fail early on input that is not what
  its type says); `total` is known from then on.
- in_progress: per chunk of `chunk_records` records: each record checked (its failure goes aside with
  the reason), the unchanged ones skipped, the others' chunks embedded together and indexed (a model error
  on one record alone is that record's failure); the chunk's documents marked ready, its outcomes and the
  counts written in one transaction, then the job checkpoints. A worker killed mid-chunk leaves the
  checkpoint of the chunk before: the next attempt redoes at most that one chunk, replacing the chunks of
  its documents by document id, so nothing is indexed twice. While a chunk is written (its rows, its
  index writes, its outcomes, its checkpoint), the next two are read, checked and embedded (`_ahead`):
  the model is kept busy, and nothing of a chunk is written before the checkpoint of the one before.
- finalizing: the output file (`custom_id`, `line`, `document_id`) and the error file (`custom_id`,
  `line`, `error`), JSONL, stored as the tenant's files; the collection's version advanced once (its
  cached searches retired) with the batch marked completed, in one transaction. A canceled batch advances
  it too, for the chunks it did.

Every record failing, or input that is not what its type says, fails the batch with the reason.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from inferline import db
from inferline.batches.deps import BatchDeps
from inferline.batches.model import COMPLETED, FAILED, FINALIZING, IN_PROGRESS, VALIDATING, Batch
from inferline.batches.records import BadInput, Format, Record, input_format, read_records
from inferline.batches.store import BatchStore
from inferline.batches.upsert import Checked, Upserted, check_chunk, embed_ahead, upsert_checked
from inferline.clock import utcnow
from inferline.errors import NonRetryable
from inferline.events import outbox
from inferline.files import sniff
from inferline.files.refs import FileId
from inferline.files.service import FileInfo, blob_path, finish_upload, get_file, insert_file, receive_file
from inferline.jobs import webhooks
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.store import JobStore
from inferline.search.model import Collection
from inferline.search.store import SearchStore
from inferline.shielding import despite_cancel
from inferline.threads import to_thread

KIND = "batch"
MAX_ERROR_CHARS = 1000


class BatchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: str = Field(min_length=1, max_length=36)
    input_file_id: FileId = Field(min_length=1, max_length=36)


def register(registry: KindRegistry, deps: BatchDeps) -> None:
    async def batch(ctx: JobContext, data: BatchInput) -> dict[str, Any]:
        return await run_batch(deps, ctx, data)

    registry.kind(KIND, input_model=BatchInput)(batch)


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
    lock = asyncio.Lock()  # chunks are taken from the file in order, one at a time

    def read_ahead() -> asyncio.Future[_Ahead | None]:
        return asyncio.ensure_future(_ahead(deps, ctx, batch, collection, records, lock))

    aheads: list[asyncio.Future[_Ahead | None]] = []
    try:
        await ctx.to_thread(_skip, records, state["done"])
        aheads = [read_ahead() for _ in range(AHEAD_CHUNKS)]
        while taken := await aheads[0]:
            ctx.raise_if_canceled()
            # Embedded while this chunk is written; a failure of theirs (a model down, a cancel) is raised by
            # the `await` above, once this chunk is checkpointed.
            aheads = [*aheads[1:], read_ahead()]
            chunk = taken.chunk
            upserted = await upsert_checked(deps, ctx, collection, taken.checked, ctx.id)
            state = await _settle(deps, ctx.id, batch, collection, chunk, upserted, state)
            await ctx.checkpoint(state, progress=95.0 * state["done"] / max(state["total"], 1))
            await ctx.stage(IN_PROGRESS, f"{state['done']}/{state['total']} records")
    except BaseException:  # canceled, or its task cancelled (the worker stops, the lease is lost), or failed
        if state["completed"]:  # what was done stays: searches cached before it must not hide it
            await despite_cancel(_advance_version(deps, collection))
        raise
    finally:
        for ahead in aheads:  # chunks read and embedded ahead: nothing of them was written
            ahead.cancel()
        await asyncio.gather(*aheads, return_exceptions=True)
        await to_thread(records.close)  # the file it holds open
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
    if file.content_type not in (sniff.TEXT, sniff.HTML, sniff.PARQUET):
        raise BadInput(f"the input file is {file.content_type}, not JSONL, CSV or Parquet")
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


# Chunks read and embedded ahead of the one being written. One leaves the model half idle at the end of
# each chunk's embedding (its last, small micro-batch on one process while the other waits for the next
# chunk): the model runtime was busy 88% of a batch's time with one, 97% with two (docs/benchmarks.md,
# session 16). Each holds its records in memory; their predictions share the process's budget in the model's
# queue (`BatchDeps.embed_slots`).
AHEAD_CHUNKS = 2


@dataclass(frozen=True)
class _Ahead:
    chunk: list[Record]
    checked: Checked


async def _ahead(
    deps: BatchDeps,
    ctx: JobContext,
    batch: Batch,
    collection: Collection,
    records: Iterator[Record],
    lock: asyncio.Lock,
) -> _Ahead | None:
    """The next chunk taken, checked and embedded (None: no record left). Reads only: it runs while the
    chunks before are written."""
    taken: list[Record] = []

    async def take() -> None:  # to its end even if cancelled: the file is closed after it
        async with lock:
            taken.extend(await to_thread(_take, records, batch.chunk_records))

    await despite_cancel(take())
    if not taken:
        return None
    checked = await ctx.to_thread(lambda: check_chunk(deps, collection, taken, id_field=batch.id_field))
    await embed_ahead(deps, ctx, collection, checked)
    return _Ahead(taken, checked)


def _take(records: Iterator[Record], count: int) -> list[Record]:
    taken: list[Record] = []
    size = 0
    for record in records:
        taken.append(record)
        size += record.size
        if len(taken) == count or size >= CHUNK_MAX_BYTES:
            break
    return taken


async def _settle(
    deps: BatchDeps,
    job_id: str,
    batch: Batch,
    collection: Collection,
    chunk: list[Record],
    upserted: Upserted,
    state: dict[str, Any],
) -> dict[str, Any]:
    """The chunk's documents ready (or failed), its records' outcomes and the batch's counts, in one
    transaction: a document is ready exactly when its record is counted. A document that another writer
    took since the chunk's claim (an upload, a newer batch: its row names not `job_id`) is left as that
    writer makes it. Returns the state to checkpoint."""
    failed = sum(1 for outcome in upserted.outcomes if outcome["error"] is not None)
    state = state | {
        "done": state["done"] + len(chunk),
        "completed": state["completed"] + len(chunk) - failed,
        "failed": state["failed"] + failed,
    }
    now = utcnow()
    async with db.write(deps.engine, slow=True) as conn:  # a chunk's rows, off the event loop
        gone = await SearchStore(conn).mark_indexed(
            collection.id, job_id=job_id, ready=upserted.ready, failed=upserted.failed, now=now
        )
        store = BatchStore(conn)
        await store.replace_records(batch.id, chunk[0].line, upserted.outcomes)
        await store.update(batch.id, {"completed": state["completed"], "failed": state["failed"], "updated_at": now})
    if gone:  # deleted through the API while they were indexed: their chunks go too
        await deps.search.index.delete_documents(collection.id, gone)
    return state


async def _advance_version(deps: BatchDeps, collection: Collection) -> None:
    async with db.write(deps.engine) as conn:
        version = await SearchStore(conn).advance_version(collection.id)
    deps.search.collection_cache.advanced(collection.id, version)


async def _update(deps: BatchDeps, batch_id: str, values: dict[str, Any]) -> None:
    async with db.write(deps.engine) as conn:
        await BatchStore(conn).update(batch_id, values | {"updated_at": utcnow()})


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
            await to_thread(_write_lines, spool, rows, failed)
            after = rows[-1]["line"]
        await to_thread(spool.seek, 0)
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
