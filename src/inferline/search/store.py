"""SQL for search: the collections and documents tables. Stores never commit; use cases own the
transaction.

Statements run for every upload, ingest or search are built once, with bind parameters (building one
and its cache key cost ~100 us per execution; see jobs/store.py). An UPDATE binds its columns' new
values under the columns' own names, so its WHERE clause takes `_document_id` and `_collection_id`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.files.service import FileInfo
from inferline.paging import newest_first
from inferline.schema import collections, documents, files
from inferline.search.filters import FieldType
from inferline.search.model import Collection, Document, DocumentStatus


def collection_from_row(row: Mapping[Any, Any]) -> Collection:
    values = dict(row)
    values["fields"] = {name: FieldType(kind) for name, kind in values["fields"].items()}
    return Collection(**values)


# A document made by a batch has no file of its own (`file_id` None): the column, NOT NULL since its
# table was made, holds "" for it, which names no file (ids are UUIDs), so no join or release finds one.
NO_FILE = ""


def document_from_row(row: Mapping[Any, Any]) -> Document:
    values = dict(row)
    if values["file_id"] == NO_FILE:
        values["file_id"] = None
    return Document(**values)


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    return values | {"file_id": NO_FILE} if "file_id" in values and values["file_id"] is None else values


class SearchStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    # -- collections

    async def add_collection(self, collection: Collection) -> None:
        values = collection.__dict__ | {"fields": {name: kind.value for name, kind in collection.fields.items()}}
        await self.conn.execute(collections.insert().values(**values))

    async def collection_named(self, tenant: str, name: str) -> Collection | None:
        row = (await self.conn.execute(_collection_named(), {"tenant": tenant, "name": name})).mappings().first()
        return collection_from_row(row) if row is not None else None

    async def collection(self, tenant: str, collection_id: str) -> Collection | None:
        params = {"collection_id": collection_id, "tenant": tenant}
        row = (await self.conn.execute(_collection_by_id(), params)).mappings().first()
        return collection_from_row(row) if row is not None else None

    async def collection_exists(self, collection_id: str) -> bool:
        found = await self.conn.execute(sa.select(collections.c.id).where(collections.c.id == collection_id))
        return found.first() is not None

    async def collections_with_counts(self, tenant: str) -> list[tuple[Collection, int]]:
        """The tenant's collections by name, each with its number of documents."""
        counts = (
            sa.select(documents.c.collection_id, sa.func.count().label("n"))
            .where(documents.c.tenant == tenant)
            .group_by(documents.c.collection_id)
            .subquery()
        )
        query = (
            sa.select(collections, sa.func.coalesce(counts.c.n, 0).label("document_count"))
            .outerjoin(counts, counts.c.collection_id == collections.c.id)
            .where(collections.c.tenant == tenant)
            .order_by(collections.c.name)
        )
        rows = (await self.conn.execute(query)).mappings().all()
        found = []
        for row in rows:
            values = {key: value for key, value in row.items() if key != "document_count"}
            found.append((collection_from_row(values), int(row["document_count"])))
        return found

    async def embedding_models(self) -> list[str]:
        """The embedding models of every collection, each once, sorted."""
        query = sa.select(collections.c.embedding_model).distinct()
        return sorted(set((await self.conn.execute(query)).scalars()))

    async def delete_collection(self, collection_id: str) -> list[str]:
        """The collection and all of its documents; returns the ids of the files they were made from."""
        deleted = await self.conn.execute(
            documents.delete().where(documents.c.collection_id == collection_id).returning(documents.c.file_id)
        )
        file_ids = [file_id for file_id in deleted.scalars() if file_id != NO_FILE]
        await self.conn.execute(collections.delete().where(collections.c.id == collection_id))
        return file_ids

    async def advance_version(self, collection_id: str) -> int:
        """The collection's version goes up, which retires every cached search of it: run it in the
        transaction of the change it covers. Returns the new version."""
        return int((await self.conn.execute(_advance_version(), {"collection_id": collection_id})).scalar_one())

    # -- documents

    async def same_document(self, collection_id: str, *, external_id: str | None, sha256: str) -> Document | None:
        """The collection's document with this `external_id`, or (without one) with this content."""
        params = {"collection_id": collection_id, "external_id": external_id, "sha256": sha256}
        found = await self.conn.execute(_same_document(by_external_id=external_id is not None), params)
        row = found.mappings().first()
        return document_from_row(row) if row is not None else None

    async def add_document(self, values: dict[str, Any]) -> None:
        await self.conn.execute(documents.insert(), _stored(values))

    async def update_document(self, document_id: str, values: dict[str, Any]) -> None:
        await self.conn.execute(documents.update().where(documents.c.id == document_id).values(**_stored(values)))

    async def documents_by_external_id(self, collection_id: str, external_ids: Sequence[str]) -> dict[str, Document]:
        """The collection's documents with these external ids, by external id (a batch's chunk of records)."""
        found: dict[str, Document] = {}
        wanted = sorted(set(external_ids))
        for start in range(0, len(wanted), IDS_PER_STATEMENT):
            params = {"collection_id": collection_id, "external_ids": wanted[start : start + IDS_PER_STATEMENT]}
            for row in (await self.conn.execute(_by_external_ids(), params)).mappings():
                document = document_from_row(row)
                found[str(document.external_id)] = document
        return found

    async def add_documents(self, rows: list[dict[str, Any]]) -> None:
        """Many new documents in one statement (every row with every column)."""
        if rows:
            await self.conn.execute(documents.insert(), [_stored(row) for row in rows])

    async def update_documents(self, rows: list[dict[str, Any]]) -> None:
        """Many documents updated in one statement: each row holds `_document_id` and the columns of
        REPLACED (other keys are left out)."""
        if rows:
            wanted = ("_document_id", *REPLACED)
            await self.conn.execute(_replace_document(), [_stored({k: row[k] for k in wanted}) for row in rows])

    async def lock_current(self, collection_id: str, document_ids: Sequence[str], *, job_id: str | None) -> set[str]:
        """Those of the collection's documents that are still the writer `job_id`'s (a batch's job; None: a
        record stream's), their rows locked until the transaction ends: `lock_if_current` for many."""
        current: set[str] = set()
        wanted = sorted(set(document_ids))
        for start in range(0, len(wanted), IDS_PER_STATEMENT):
            params = {
                "_collection_id": collection_id,
                "_job_id": job_id,
                "_ids": wanted[start : start + IDS_PER_STATEMENT],
            }
            current |= set((await self.conn.execute(_lock_current(), params)).scalars())
        return current

    async def mark_indexed(
        self, collection_id: str, *, job_id: str | None, ready: dict[str, int], failed: dict[str, str], now: datetime
    ) -> list[str]:
        """Documents `ready` (by id, with their chunk counts) and `failed` (by id, with the reason), each only
        while it is still the writer `job_id`'s (a batch's job; None: a record stream's): one replaced since
        is left as its newer writer makes it. Returns the ready ones whose rows are gone (deleted while they
        were indexed): the caller removes their chunks from the index, or they would be found with no
        document behind them."""
        gone: list[str] = []
        if ready:
            params = [
                {
                    "_collection_id": collection_id,
                    "_document_id": document_id,
                    "_job_id": job_id,
                    "chunks": chunks,
                    "updated_at": now,
                }
                for document_id, chunks in ready.items()
            ]
            await self.conn.execute(_mark_ready_of_job(), params)
            query = sa.select(documents.c.id).where(
                documents.c.collection_id == collection_id, documents.c.id.in_(list(ready))
            )
            present = set((await self.conn.execute(query)).scalars())
            gone = [document_id for document_id in ready if document_id not in present]
        if failed:
            params = [
                {
                    "_collection_id": collection_id,
                    "_document_id": document_id,
                    "_job_id": job_id,
                    "status": DocumentStatus.FAILED,
                    "error": error,
                    "updated_at": now,
                }
                for document_id, error in failed.items()
            ]
            await self.conn.execute(_set_ingest_status(), params)
        return gone

    async def document(self, collection_id: str, document_id: str) -> Document | None:
        query = sa.select(documents).where(documents.c.collection_id == collection_id, documents.c.id == document_id)
        row = (await self.conn.execute(query)).mappings().first()
        return document_from_row(row) if row is not None else None

    async def documents(self, collection_id: str, document_ids: list[str]) -> list[Document]:
        """The collection's documents among `document_ids` (those that exist), in no order."""
        query = sa.select(documents).where(documents.c.collection_id == collection_id, documents.c.id.in_(document_ids))
        return [document_from_row(row) for row in (await self.conn.execute(query)).mappings()]

    async def page_documents(
        self, collection_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Document], str | None]:
        """One page of the collection's documents (of one status, if given), newest first."""
        query = sa.select(documents).where(documents.c.collection_id == collection_id)
        if status is not None:
            query = query.where(documents.c.status == status)
        return await newest_first(
            self.conn,
            query,
            documents.c.id,
            limit=limit,
            cursor=cursor,
            to_item=document_from_row,
            id_of=lambda document: document.id,
        )

    async def count_documents(self, collection_id: str) -> dict[str, int]:
        """The collection's documents by status; a status without documents is absent."""
        query = (
            sa.select(documents.c.status, sa.func.count())
            .where(documents.c.collection_id == collection_id)
            .group_by(documents.c.status)
        )
        return {status: int(count) for status, count in (await self.conn.execute(query)).all()}

    async def delete_document(self, collection_id: str, document_id: str) -> Document | None:
        """The document deleted, as it was when deleted (so its file is the one it had then); None if there
        was none."""
        query = (
            documents.delete()
            .where(documents.c.collection_id == collection_id, documents.c.id == document_id)
            .returning(*documents.columns)
        )
        row = (await self.conn.execute(query)).mappings().first()
        return document_from_row(row) if row is not None else None

    async def mark_processing(
        self, collection_id: str, document_id: str, *, job_id: str, now: datetime
    ) -> Document | None:
        """The document of this collection, now `processing`; None if either is gone, or if the document is
        no longer job `job_id`'s (see `lock_if_current`)."""
        params = {"_collection_id": collection_id, "_document_id": document_id, "_job_id": job_id, "updated_at": now}
        row = (await self.conn.execute(_mark_processing(), params)).mappings().first()
        return document_from_row(row) if row is not None else None

    async def lock_if_current(self, collection_id: str, document_id: str, *, job_id: str) -> bool:
        """Whether the document is still job `job_id`'s: every (re)submission of a document (an upload, a
        batch's record) gives it the id of the job that indexes it, so another id means it was replaced
        since. If so, the row stays locked until the transaction ends (on SQLite the transaction holds the
        write lock anyway): a replacement or a delete waits, and the job's writes are not overtaken."""
        params = {"_collection_id": collection_id, "_document_id": document_id, "_job_id": job_id}
        return (await self.conn.execute(_lock_if_current(), params)).first() is not None

    async def mark_ready(
        self, collection_id: str, document_id: str, *, job_id: str, chunks: int, now: datetime
    ) -> bool:
        """The document `ready` with its chunk count; False if it is gone or no longer job `job_id`'s."""
        params = {
            "_collection_id": collection_id,
            "_document_id": document_id,
            "_job_id": job_id,
            "chunks": chunks,
            "updated_at": now,
        }
        return bool((await self.conn.execute(_mark_ready_of_job(), params)).rowcount)

    async def set_ingest_status(
        self, collection_id: str, document_id: str, *, job_id: str, status: str, error: str, now: datetime
    ) -> bool:
        """The document's status as job `job_id` ends an attempt; False (nothing written) if the document is
        gone or no longer that job's."""
        params = {
            "_collection_id": collection_id,
            "_document_id": document_id,
            "_job_id": job_id,
            "status": status,
            "error": error,
            "updated_at": now,
        }
        return bool((await self.conn.execute(_set_ingest_status(), params)).rowcount)

    async def file(self, tenant: str, file_id: str) -> FileInfo | None:
        """A document's stored file (the files table), read here to share the transaction of an ingest's
        start."""
        row = (await self.conn.execute(_file(), {"file_id": file_id, "tenant": tenant})).mappings().first()
        return FileInfo(**row) if row is not None else None


@functools.cache
def _collection_named() -> sa.Select[Any]:
    return sa.select(collections).where(
        collections.c.tenant == sa.bindparam("tenant"), collections.c.name == sa.bindparam("name")
    )


@functools.cache
def _collection_by_id() -> sa.Select[Any]:
    return sa.select(collections).where(
        collections.c.id == sa.bindparam("collection_id"), collections.c.tenant == sa.bindparam("tenant")
    )


@functools.cache
def _advance_version() -> sa.Update:
    return (
        collections.update()
        .where(collections.c.id == sa.bindparam("collection_id"))
        .values(version=collections.c.version + 1)
        .returning(collections.c.version)
    )


@functools.cache
def _same_document(*, by_external_id: bool) -> sa.Select[Any]:
    match = (
        documents.c.external_id == sa.bindparam("external_id")
        if by_external_id
        else sa.and_(documents.c.sha256 == sa.bindparam("sha256"), documents.c.external_id.is_(None))
    )
    # Locked: a delete that took the row first is waited for, and then the row is not found (an upload that
    # read it unlocked would update no row after the delete, keeping its new file with no document).
    return (
        sa.select(documents).where(documents.c.collection_id == sa.bindparam("collection_id"), match).with_for_update()
    )


# The columns a replaced document gets anew (its id, collection, tenant, external id and creation stay).
REPLACED = ("sha256", "file_id", "filename", "content_type", "metadata", "status", "job_id", "error", "updated_at")
IDS_PER_STATEMENT = 500  # well under SQLite's 32,766 bound parameters


@functools.cache
def _by_external_ids() -> sa.Select[Any]:
    return sa.select(documents).where(
        documents.c.collection_id == sa.bindparam("collection_id"),
        documents.c.external_id.in_(sa.bindparam("external_ids", expanding=True)),
    )


@functools.cache
def _replace_document() -> sa.Update:
    values: dict[str, Any] = {name: sa.bindparam(name) for name in REPLACED}
    return documents.update().where(documents.c.id == sa.bindparam("_document_id")).values(values)


@functools.cache
def _file() -> sa.Select[Any]:
    return sa.select(files).where(files.c.id == sa.bindparam("file_id"), files.c.tenant == sa.bindparam("tenant"))


def _this_document() -> sa.ColumnElement[bool]:
    return sa.and_(
        documents.c.id == sa.bindparam("_document_id"), documents.c.collection_id == sa.bindparam("_collection_id")
    )


def _this_jobs_document() -> sa.ColumnElement[bool]:
    """The document, while writer `_job_id` is the one that indexes it: an ingest's or a batch's job, or None
    for a record stream's (which names no job)."""
    return sa.and_(_this_document(), documents.c.job_id.is_not_distinct_from(sa.bindparam("_job_id")))


@functools.cache
def _mark_processing() -> sa.Update:
    values: dict[str, Any] = {
        "status": DocumentStatus.PROCESSING,
        "error": None,
        "updated_at": sa.bindparam("updated_at"),
    }
    return documents.update().where(_this_jobs_document()).values(values).returning(*documents.columns)


@functools.cache
def _lock_if_current() -> sa.Select[Any]:
    return sa.select(documents.c.id).where(_this_jobs_document()).with_for_update()


def _ready_values() -> dict[str, Any]:
    return {
        "status": DocumentStatus.READY,
        "chunks": sa.bindparam("chunks"),
        "error": None,
        "updated_at": sa.bindparam("updated_at"),
    }


@functools.cache
def _lock_current() -> sa.Select[Any]:
    return (
        sa.select(documents.c.id)
        .where(
            documents.c.collection_id == sa.bindparam("_collection_id"),
            documents.c.id.in_(sa.bindparam("_ids", expanding=True)),
            documents.c.job_id.is_not_distinct_from(sa.bindparam("_job_id")),
        )
        .order_by(documents.c.id)  # locked in one order by every writer: two over the same rows never deadlock
        .with_for_update()
    )


@functools.cache
def _mark_ready_of_job() -> sa.Update:
    return documents.update().where(_this_jobs_document()).values(_ready_values())


def _status_values() -> dict[str, Any]:
    return {"status": sa.bindparam("status"), "error": sa.bindparam("error"), "updated_at": sa.bindparam("updated_at")}


@functools.cache
def _set_ingest_status() -> sa.Update:
    return documents.update().where(_this_jobs_document()).values(_status_values())
