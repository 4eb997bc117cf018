"""The `scheduled_batch` kind: what a schedule's tick (or `POST /schedules/{id}/run`) queues to make batches
from a source. Its job creates the batches (each its own `batch` job, through the checks of
`POST /batches`) and ends; it indexes nothing itself.

- `input_file_id`: one batch of that file at every run (one per job, whatever its attempts).
- `drop_folder`: one batch per file of the tenant's drop folder of that name (`drops.py`) not taken by a
  run before, oldest first, at most `batch_drop_max_files` a run. A file is taken once: its row in
  `batch_drop_files` (name, size, modification time), its copy among the tenant's files, its batch and
  the batch's job are written in one transaction, so a run that dies, or two runs at once, never batch
  a file twice nor lose one. A file of a type no batch reads is taken with its reason and no batch.

The source and the collection are checked when a job of the kind is queued (a tick, a manual run,
`POST /jobs`): a tick refused is logged and skipped, a manual run answers 404 or 422.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline import db
from inferline.batches.deps import BatchDeps
from inferline.batches.drops import DropFile, FolderUnreadable, Refused, list_drop_files, open_drop_file
from inferline.batches.model import DEFAULT_ID_FIELD
from inferline.batches.records import template_fields
from inferline.batches.service import MAX_CHUNK_RECORDS, BatchIn, add_batch, check_batch
from inferline.clock import utcnow
from inferline.config import DROP_FOLDER_NAME
from inferline.errors import InvalidInput, NonRetryable, NotFound, QuotaExceeded, TooLarge, UnsupportedMediaType
from inferline.files.refs import FileId
from inferline.files.service import finish_upload, insert_file, receive_file
from inferline.ids import new_id
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job
from inferline.jobs.store import JobStore
from inferline.jobs.submission import SERVER_KEY_PREFIX
from inferline.schema import batch_drop_files
from inferline.search.store import SearchStore
from inferline.threads import to_thread

KIND = "scheduled_batch"
_NAMES_PER_QUERY = 500


class ScheduledBatchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = Field(min_length=1, max_length=100)
    input_file_id: FileId | None = Field(default=None, min_length=1, max_length=36)
    drop_folder: str | None = Field(default=None, pattern=DROP_FOLDER_NAME.pattern)
    text_template: str | None = Field(default=None, min_length=1, max_length=2000)
    id_field: str = Field(default=DEFAULT_ID_FIELD, min_length=1, max_length=200)
    chunk_records: int | None = Field(default=None, ge=1, le=MAX_CHUNK_RECORDS)

    @field_validator("text_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)  # its ValueError is the 422 naming the field
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ScheduledBatchInput:
        if (self.input_file_id is None) == (self.drop_folder is None):
            raise ValueError("give one source: input_file_id or drop_folder")
        return self

    def batch_in(self, input_file_id: str, webhook: str | None) -> BatchIn:
        return BatchIn(
            input_file_id=input_file_id,
            collection=self.collection,
            text_template=self.text_template,
            id_field=self.id_field,
            chunk_records=self.chunk_records,
            webhook=webhook,
        )


def register(registry: KindRegistry, deps: BatchDeps) -> None:
    async def check(conn: AsyncConnection, job: Job) -> None:
        data = ScheduledBatchInput.model_validate(job.input)
        if data.drop_folder is not None:
            deps.drops.folder(job.tenant, data.drop_folder)
        if await SearchStore(conn).collection_named(job.tenant, data.collection) is None:
            raise NotFound(f"collection {data.collection!r} not found")

    async def scheduled_batch(ctx: JobContext, data: ScheduledBatchInput) -> dict[str, Any]:
        try:
            return await run_scheduled_batch(deps, ctx, data)
        except (NotFound, InvalidInput, UnsupportedMediaType, QuotaExceeded, TooLarge) as exc:
            raise NonRetryable(str(exc)) from exc  # a collection deleted, a quota reached: no retry helps

    registry.kind(KIND, input_model=ScheduledBatchInput, on_queue=check)(scheduled_batch)


async def run_scheduled_batch(deps: BatchDeps, ctx: JobContext, data: ScheduledBatchInput) -> dict[str, Any]:
    webhook = ctx.job.webhook  # the schedule's: it hears each batch's `batch.completed` too
    if data.input_file_id is not None:
        batch_id = await _batch_of_file(deps, ctx, data.batch_in(data.input_file_id, webhook))
        return {"batch_ids": [batch_id], "taken": [], "refused": []}
    assert data.drop_folder is not None
    root = deps.drops.folder(ctx.tenant, data.drop_folder)
    options = data.batch_in("-", webhook)
    await check_batch(deps, tenant=ctx.tenant, data=options)
    try:
        listed, refused = await ctx.to_thread(
            lambda: list_drop_files(root, max_bytes=deps.max_file_bytes, settle_s=deps.drops.settle_s)
        )
    except FolderUnreadable as exc:
        raise NonRetryable(str(exc)) from exc
    new = await _not_taken(deps, ctx.tenant, data.drop_folder, listed)
    batch_ids: list[str] = []
    taken: list[dict[str, Any]] = []
    for item in new[: deps.drops.max_files]:
        ctx.raise_if_canceled()
        outcome = await _take(deps, ctx.tenant, data.drop_folder, options, root, item)
        if isinstance(outcome, Refused):
            refused.append(outcome)
            continue
        batch_ids.append(outcome)
        taken.append({"name": item.name, "batch_id": outcome})
    shown = [{"name": item.name, "reason": item.reason} for item in refused[:100]]
    return {"batch_ids": batch_ids, "taken": taken, "refused": shown}


async def _batch_of_file(deps: BatchDeps, ctx: JobContext, options: BatchIn) -> str:
    """The id of this job's batch of its file, made once whatever the job's attempts: the batch's job
    carries a key naming this job, so an attempt cut off after the batch was made finds it."""
    key = f"{SERVER_KEY_PREFIX}scheduled_batch:{ctx.id}"
    async with db.read(deps.engine) as conn:  # found before any check: one that fails now fails no batch made
        made = await JobStore(conn).get_by_idempotency_key(ctx.tenant, key)
    if made is not None:
        return str(made.input["batch_id"])
    await check_batch(deps, tenant=ctx.tenant, data=options)
    async with deps.submitter.transaction() as tx:  # two attempts at once (a lost lease): one key wins
        batch, _ = await add_batch(tx, deps, tenant=ctx.tenant, data=options, idempotency_key=key)
    return batch.id


async def _not_taken(deps: BatchDeps, tenant: str, folder: str, listed: list[DropFile]) -> list[DropFile]:
    taken: set[tuple[str, int, int]] = set()
    table = batch_drop_files.c
    async with db.read(deps.engine) as conn:
        for start in range(0, len(listed), _NAMES_PER_QUERY):
            names = [item.name for item in listed[start : start + _NAMES_PER_QUERY]]
            query = sa.select(table.name, table.size, table.mtime_ns).where(
                table.tenant == tenant, table.folder == folder, table.name.in_(names)
            )
            taken.update((row.name, row.size, row.mtime_ns) for row in await conn.execute(query))
    return [item for item in listed if (item.name, item.size, item.mtime_ns) not in taken]


async def _take(
    deps: BatchDeps, tenant: str, folder: str, options: BatchIn, root: Path, item: DropFile
) -> str | Refused:
    """The batch of one drop file (its id), or why the file was not taken (a later run tries a file that
    changed or went away again; one of the wrong type is remembered as taken)."""
    try:
        source = await to_thread(open_drop_file, root, item)
    except (OSError, ValueError) as exc:
        return Refused(item.name, f"not read: {getattr(exc, 'strerror', None) or exc}")
    try:
        with source:
            received = await receive_file(
                deps.blobs,
                tenant=tenant,
                source=source,
                filename=item.name,
                max_bytes=deps.max_file_bytes,
                quota=deps.drops.quota,
            )
    except (TooLarge, InvalidInput) as exc:  # grown past the limit, or emptied, since it was listed
        return Refused(item.name, f"not read: {exc}")
    refused = True
    claim: dict[str, Any] = {"id": new_id(), "tenant": tenant, "folder": folder, "taken_at": utcnow()}
    claim |= {"name": item.name, "size": item.size, "mtime_ns": item.mtime_ns}
    try:
        async with deps.submitter.transaction() as tx:
            await tx.conn.execute(batch_drop_files.insert().values(**claim, file_id=received.id))
            await insert_file(tx.conn, received)
            data = options.model_copy(update={"input_file_id": received.id})
            batch, _ = await add_batch(tx, deps, tenant=tenant, data=data)
            await tx.conn.execute(
                batch_drop_files.update().where(batch_drop_files.c.id == claim["id"]).values(batch_id=batch.id)
            )
        refused = False
    except sa.exc.IntegrityError:
        return Refused(item.name, "taken by another run at the same time")
    except UnsupportedMediaType as exc:
        async with db.write(deps.engine) as conn:
            await conn.execute(batch_drop_files.insert().values(**claim, error=str(exc)))
        return Refused(item.name, str(exc))
    finally:
        await finish_upload(deps.engine, received, refused=refused)
    return batch.id
