"""`upload`: a stream of records upserted into their collections, acknowledged in order once committed.

- Back-pressure: a record is read from the transport only while fewer than `window_records` are read and
  not yet acknowledged; the transport's own flow control then holds the sender.
- Groups: the records read so far (up to `group_records`) are committed together through the batches'
  bulk upsert (`batches/upsert.py`: the batch's record checks, unchanged records cost nothing, changed
  ones replace their chunks; chunk -> embed -> index through `search/indexing.py`). While a group
  commits the next one fills, so a fast sender gets full groups and a slow one gets low latency.
- "Committed" means the documents are `ready` in the database and their chunks in the index, and the
  collection's version advanced (cached searches retired): acknowledged records are searchable.
- Resume: records are keyed by `custom_id`; a client that reconnects resends from the record after its
  last ack, and a record sent twice is upserted twice, the second time at no cost. A commit a lost
  connection interrupts is finished anyway (shielded), so its records need no redo.
- A record that cannot be used gets its reason in its ack; the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from inferline import db
from inferline.batches.records import Record
from inferline.batches.upsert import upsert_chunk
from inferline.clock import utcnow
from inferline.errors import InferlineError
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.context import ContextBase
from inferline.jobs.model import Job
from inferline.records.deps import RecordDeps
from inferline.search.collections import collection_named
from inferline.search.model import Collection
from inferline.search.store import SearchStore

log = structlog.get_logger(__name__)

ID_FIELD = "custom_id"


@dataclass(frozen=True)
class StreamRecord:
    custom_id: str
    text: str
    metadata: dict[str, Any] | None
    collection: str
    error: str | None = None  # the record could not be read (its metadata): it fails alone


@dataclass(frozen=True)
class Acked:
    seq: int  # the record's place in its stream, from 0
    custom_id: str
    document_id: str | None
    error: str | None


class StreamIdle(InferlineError):
    """The client sent nothing, or read no acknowledgment, for `idle_s`: the stream ends (what it sent is
    acknowledged). Its text is the client's to see."""


@dataclass(frozen=True)
class _Received:
    seq: int
    record: StreamRecord


_END = None  # the reader's last item: the stream ended (or failed: the reader task holds why)


async def upload(
    deps: RecordDeps, tenant: str, records: AsyncIterator[StreamRecord]
) -> AsyncGenerator[list[Acked], None]:
    """The acks of `records`, a group at a time, in order. Raises Overloaded when the tenant has all its
    streams open, NotFound for a collection the tenant does not have (the records before it are
    acknowledged), StreamIdle after `idle_s` without a record.

    The stream holds one of its tenant's slots (`deps.slots`) until it ends, or, when the client left in
    the middle of a commit, until that commit (which goes on, shielded) has ended: a tenant that drops and
    reopens streams cannot have more commits running than its slots."""
    deps.slots.take(tenant)
    last: list[asyncio.Future[list[Acked]]] = []  # the latest commit only: it may still run when the client left

    def started(commit: asyncio.Future[list[Acked]]) -> None:
        last[:] = [commit]

    try:
        async with contextlib.aclosing(_upload(deps, tenant, records, started)) as groups:
            async for acks in groups:
                yield acks
    finally:
        if last and not last[0].done():
            last[0].add_done_callback(lambda commit: _orphan_ended(commit, deps, tenant))
        else:
            deps.slots.give_back(tenant)


def _orphan_ended(commit: asyncio.Future[list[Acked]], deps: RecordDeps, tenant: str) -> None:
    deps.slots.give_back(tenant)
    if not commit.cancelled() and commit.exception() is not None:  # retrieved: nobody else awaits it
        log.warning("record_stream_orphaned_commit_failed", tenant=tenant, error=repr(commit.exception())[:1000])


async def _upload(
    deps: RecordDeps,
    tenant: str,
    records: AsyncIterator[StreamRecord],
    started: Callable[[asyncio.Future[list[Acked]]], object],
) -> AsyncGenerator[list[Acked], None]:
    limits = deps.limits
    window = asyncio.Semaphore(limits.window_records)
    received: asyncio.Queue[_Received | None] = asyncio.Queue()  # bounded by `window`
    unacked = 0

    def on_read() -> None:
        nonlocal unacked
        unacked += 1
        deps.peak_unacked = max(deps.peak_unacked, unacked)

    reader = asyncio.create_task(_read(records, window, received, limits.idle_s, on_read))
    context = StreamContext(tenant, deps.batches.search.models)
    collections: dict[str, Collection] = {}
    try:
        while True:
            group, ended = await _next_group(received, limits.group_records)
            if group:
                commit = asyncio.ensure_future(_commit(deps, context, collections, group))
                started(commit)
                acks = await asyncio.shield(commit)
                yield acks
                unacked -= len(group)
                for _ in group:
                    window.release()
            if ended:
                break
        await reader  # why it ended: the sender's end, or the transport's error, or StreamIdle
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _read(
    records: AsyncIterator[StreamRecord],
    window: asyncio.Semaphore,
    received: asyncio.Queue[_Received | None],
    idle_s: float,
    on_read: Callable[[], None],
) -> None:
    seq = 0
    try:
        while True:
            await window.acquire()
            try:
                record = await asyncio.wait_for(anext(records), idle_s)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise StreamIdle(f"no record for {idle_s:g} s (setting grpc_idle_s)") from exc
            on_read()
            received.put_nowait(_Received(seq, record))
            seq += 1
    finally:
        received.put_nowait(_END)


async def _next_group(received: asyncio.Queue[_Received | None], most: int) -> tuple[list[_Received], bool]:
    """(the records read by now, up to `most`, waiting for the first; whether the stream ended)."""
    group: list[_Received] = []
    item = await received.get()
    while item is not _END:
        group.append(item)
        if len(group) == most or received.empty():
            return group, False
        item = received.get_nowait()
    return group, True


async def _commit(
    deps: RecordDeps, context: StreamContext, collections: dict[str, Collection], group: list[_Received]
) -> list[Acked]:
    # Every collection of the group is looked up before any is written: a NotFound leaves no part of the
    # group done and unacknowledged.
    for item in group:
        name = item.record.collection
        if name not in collections:
            async with db.read(deps.batches.engine) as conn:
                collections[name] = await collection_named(SearchStore(conn), context.tenant, name)
    acks: list[Acked] = []
    start = 0
    for end in range(1, len(group) + 1):  # runs of records of one collection
        if end == len(group) or group[end].record.collection != group[start].record.collection:
            acks += await _store(deps, context, collections[group[start].record.collection], group[start:end])
            start = end
    return acks


async def _store(deps: RecordDeps, context: StreamContext, collection: Collection, run: list[_Received]) -> list[Acked]:
    chunk = [
        Record(
            line=item.seq + 1,
            custom_id=item.record.custom_id,
            text=item.record.text,
            metadata=item.record.metadata,
            error=item.record.error,
        )
        for item in run
    ]
    upserted = await upsert_chunk(deps.batches, context, collection, chunk, id_field=ID_FIELD, job_id=None)
    version: int | None = None
    async with db.write(deps.batches.engine) as conn:
        store = SearchStore(conn)
        gone = await store.mark_indexed(
            collection.id, job_id=None, ready=upserted.ready, failed=upserted.failed, now=utcnow()
        )
        if upserted.ready:  # only unchanged records: nothing a cached search could miss
            version = await store.advance_version(collection.id)
    if gone:  # deleted through the API while they were indexed: their chunks go too
        await deps.batches.search.index.delete_documents(collection.id, gone)
    if version is not None:
        deps.batches.search.collection_cache.advanced(collection.id, version)
    return [
        Acked(item.seq, item.record.custom_id, outcome["document_id"], outcome["error"])
        for item, outcome in zip(run, upserted.outcomes, strict=True)
    ]


def integral(value: Any) -> Any:
    """`value` with integral floats as ints, nested: a protobuf Struct holds every number as a double,
    and a collection's int field takes 3, not 3.0 (as the same record in JSON would give)."""
    if isinstance(value, float) and value.is_integer() and math.fabs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral(item) for item in value]
    return value


class StreamContext(ContextBase):
    """The batches' upsert runs in a job context; a stream has no job: this one runs its models and keeps
    no reports (a stream reports through its acks)."""

    def __init__(self, tenant: str, models: ModelRuntime) -> None:
        super().__init__(Job.running_now(kind="record_stream", tenant=tenant, max_attempts=1))
        self.models = models

    async def predict(self, model: str, item: Any) -> Any:
        return await self.models.predict(model, item, self.tenant)

    async def _report(self, values: dict[str, Any], *, durable: bool) -> None:
        return None
