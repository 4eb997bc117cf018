"""Use cases of batches: create (the batch row and its job in one transaction), get, list, cancel, retry."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from inferline import db
from inferline.batches import kind
from inferline.batches.deps import BatchDeps
from inferline.batches.model import DEFAULT_ID_FIELD, Batch
from inferline.batches.records import template_fields
from inferline.batches.store import BatchStore
from inferline.errors import Conflict, InvalidInput, NotFound, UnsupportedMediaType
from inferline.files import sniff
from inferline.ids import new_id
from inferline.jobs import service as jobs_service
from inferline.jobs.model import Job
from inferline.jobs.submission import JobRequest, JobTransaction, check_webhook
from inferline.search.store import SearchStore

MAX_CHUNK_RECORDS = 10_000
BATCH_INPUT_TYPES = (sniff.TEXT, sniff.HTML, sniff.PARQUET)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=36)
    collection: str = Field(min_length=1, max_length=100)
    text_template: str | None = Field(default=None, min_length=1, max_length=2000)
    id_field: str = Field(default=DEFAULT_ID_FIELD, min_length=1, max_length=200)
    chunk_records: int | None = Field(default=None, ge=1, le=MAX_CHUNK_RECORDS)
    webhook: str | None = Field(default=None, min_length=1, max_length=2000)


async def create_batch(deps: BatchDeps, *, tenant: str, data: BatchIn) -> tuple[Batch, Job]:
    """Queue a batch of the records of file `input_file_id` into `collection`: 404 for another tenant's or
    a missing file or collection, 415 for a file that is not text or Parquet, 422 for a malformed template."""
    await check_batch(deps, tenant=tenant, data=data)
    async with deps.submitter.transaction() as tx:
        return await add_batch(tx, deps, tenant=tenant, data=data)


async def check_batch(deps: BatchDeps, *, tenant: str, data: BatchIn) -> None:
    """What `create_batch` checks before its transaction: the template and the webhook (422s)."""
    if data.text_template is not None:
        try:
            template_fields(data.text_template)
        except ValueError as exc:
            raise InvalidInput(f"text_template: {exc}", field="text_template") from exc
    # Here, not only at each send: the one who asked gets the 422 naming `webhook`.
    await check_webhook(deps.submitter.outbound, JobRequest(kind.KIND, {}, webhook=data.webhook), tenant=tenant)


async def add_batch(
    tx: JobTransaction, deps: BatchDeps, *, tenant: str, data: BatchIn, idempotency_key: str | None = None
) -> tuple[Batch, Job]:
    """The batch and its job in `tx` (after `check_batch`): a scheduled batch's way, with its file. A
    server's `idempotency_key` on the batch's job makes a second one with the key an IntegrityError."""
    return await _add(
        tx,
        tenant=tenant,
        collection=data.collection,
        input_file_id=data.input_file_id,
        text_template=data.text_template,
        id_field=data.id_field,
        chunk_records=data.chunk_records or deps.default_chunk_records,
        retry_of=None,
        webhook=data.webhook,
        idempotency_key=idempotency_key,
    )


async def _add(
    tx: JobTransaction,
    *,
    tenant: str,
    collection: str,
    input_file_id: str,
    text_template: str | None,
    id_field: str,
    chunk_records: int,
    retry_of: str | None,
    webhook: str | None,
    idempotency_key: str | None = None,
) -> tuple[Batch, Job]:
    if await SearchStore(tx.conn).collection_named(tenant, collection) is None:
        raise NotFound(f"collection {collection!r} not found")
    file = await SearchStore(tx.conn).file(tenant, input_file_id)
    if file is None:
        raise NotFound(f"file {input_file_id} not found")
    if file.content_type not in BATCH_INPUT_TYPES:
        raise UnsupportedMediaType(f"input file {input_file_id} is {file.content_type}: send JSONL, CSV or Parquet")
    batch_id = new_id()
    request = JobRequest(kind=kind.KIND, input={"batch_id": batch_id, "input_file_id": input_file_id}, webhook=webhook)
    job = await tx.add(request, tenant=tenant, idempotency_key=idempotency_key)
    batch = Batch.new(
        id=batch_id,
        tenant=tenant,
        collection=collection,
        input_file_id=input_file_id,
        job_id=job.id,
        chunk_records=chunk_records,
        text_template=text_template,
        id_field=id_field,
        retry_of=retry_of,
    )
    await BatchStore(tx.conn).add(batch)
    return batch, job


async def get_batch(deps: BatchDeps, *, tenant: str, batch_id: str) -> tuple[Batch, Job | None]:
    """The tenant's batch and its job (another tenant's is not found, exactly like a missing one)."""
    async with db.read(deps.engine) as conn:
        store = BatchStore(conn)
        batch = await store.batch(tenant, batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} not found")
        found = await store.jobs([batch.job_id])
    return batch, found.get(batch.job_id)


async def list_batches(
    deps: BatchDeps, *, tenant: str, limit: int, cursor: str | None
) -> tuple[list[tuple[Batch, Job | None]], str | None]:
    """One page of the tenant's batches, newest first, each with its job."""
    async with db.read(deps.engine) as conn:
        store = BatchStore(conn)
        found, next_cursor = await store.page(tenant, limit=limit, cursor=cursor)
        batch_jobs = await store.jobs(batch.job_id for batch in found)
    return [(batch, batch_jobs.get(batch.job_id)) for batch in found], next_cursor


async def cancel_batch(deps: BatchDeps, *, tenant: str, batch_id: str) -> tuple[Batch, Job | None]:
    """Stop the batch after the record it is on; the records done stay done. 409 once it has ended."""
    batch, job = await get_batch(deps, tenant=tenant, batch_id=batch_id)
    if job is None or batch.is_finished(job):
        raise Conflict(f"batch {batch_id} is {batch.shown_status(job)}: nothing to cancel")
    job = await jobs_service.cancel_job(deps.engine, tenant=tenant, job_id=job.id)
    return batch, job


async def retry_batch(deps: BatchDeps, *, tenant: str, batch_id: str) -> tuple[Batch, Job]:
    """A new batch of the records that failed in this one (same file, collection and options). 409 while
    it runs or when none failed."""
    batch, job = await get_batch(deps, tenant=tenant, batch_id=batch_id)
    if not batch.is_finished(job):
        raise Conflict(f"batch {batch_id} is {batch.shown_status(job)}: retry it once it has ended")
    if batch.failed == 0:
        raise Conflict(f"batch {batch_id} has no failed records to retry")
    async with deps.submitter.transaction() as tx:
        return await _add(
            tx,
            tenant=tenant,
            collection=batch.collection,
            input_file_id=batch.input_file_id,
            text_template=batch.text_template,
            id_field=batch.id_field,
            chunk_records=batch.chunk_records,
            retry_of=batch.id,
            webhook=job.webhook if job is not None else None,
        )
