"""SQL for batches: the batches and batch_records tables. Never commits; every read of a batch is scoped
by tenant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.batches.model import Batch
from inferline.jobs.model import Job
from inferline.jobs.store import job_from_row
from inferline.paging import newest_first
from inferline.schema import batch_records, batches, documents, jobs

RECORDS_PAGE = 1000


def batch_from_row(row: Mapping[Any, Any]) -> Batch:
    return Batch(**{name: row[name] for name in Batch.__dataclass_fields__})


class BatchStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, batch: Batch) -> None:
        await self.conn.execute(batches.insert(), asdict(batch))

    async def batch(self, tenant: str, batch_id: str) -> Batch | None:
        query = sa.select(batches).where(batches.c.tenant == tenant, batches.c.id == batch_id)
        row = (await self.conn.execute(query)).mappings().first()
        return batch_from_row(row) if row is not None else None

    async def page(self, tenant: str, *, limit: int, cursor: str | None) -> tuple[list[Batch], str | None]:
        return await newest_first(
            self.conn,
            sa.select(batches).where(batches.c.tenant == tenant),
            batches.c.id,
            limit=limit,
            cursor=cursor,
            to_item=batch_from_row,
            id_of=lambda batch: batch.id,
        )

    async def update(self, batch_id: str, values: dict[str, Any]) -> None:
        await self.conn.execute(batches.update().where(batches.c.id == batch_id).values(**values))

    async def jobs(self, job_ids: Iterable[str]) -> dict[str, Job]:
        wanted = sorted(set(job_ids))
        if not wanted:
            return {}
        rows = (await self.conn.execute(sa.select(jobs).where(jobs.c.id.in_(wanted)))).mappings()
        return {row["id"]: job_from_row(row) for row in rows}

    async def replace_records(self, batch_id: str, first_line: int, rows: Sequence[dict[str, Any]]) -> None:
        """The records of one chunk (lines from `first_line`): a chunk redone after a crash replaces what
        its first try wrote."""
        await self.conn.execute(
            batch_records.delete().where(batch_records.c.batch_id == batch_id, batch_records.c.line >= first_line)
        )
        if rows:
            await self.conn.execute(batch_records.insert(), [{"batch_id": batch_id, **row} for row in rows])

    async def records(self, batch_id: str, *, failed: bool, after_line: int) -> list[dict[str, Any]]:
        """One page of the batch's done (or failed) records, by line, after `after_line`."""
        query = (
            sa.select(
                batch_records.c.line, batch_records.c.custom_id, batch_records.c.document_id, batch_records.c.error
            )
            .where(
                batch_records.c.batch_id == batch_id,
                batch_records.c.line > after_line,
                batch_records.c.error.is_not(None) if failed else batch_records.c.error.is_(None),
            )
            .order_by(batch_records.c.line)
            .limit(RECORDS_PAGE)
        )
        return [dict(row) for row in (await self.conn.execute(query)).mappings()]

    async def failed_lines(self, batch_id: str) -> set[int]:
        query = sa.select(batch_records.c.line).where(
            batch_records.c.batch_id == batch_id, batch_records.c.error.is_not(None)
        )
        return set((await self.conn.execute(query)).scalars())

    async def document_states(self, document_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """(status, error) of these documents, by id (a batch waits for its records' ingest)."""
        found: dict[str, tuple[str, str | None]] = {}
        for start in range(0, len(document_ids), RECORDS_PAGE):
            wanted = document_ids[start : start + RECORDS_PAGE]
            query = sa.select(documents.c.id, documents.c.status, documents.c.error).where(documents.c.id.in_(wanted))
            for row in (await self.conn.execute(query)).mappings():
                found[row["id"]] = (row["status"], row["error"])
        return found
