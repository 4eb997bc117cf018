"""SQL for files: quotas, what refers to a file, and which blobs no row refers to. Never commits.

Blob lifetime. A blob is placed in the transaction that writes a row for it, and removed by a
transaction that writes nothing else and finds no row for it; both hold the blob's lock (a PostgreSQL
advisory lock per sha256; on SQLite every write transaction already holds the one write lock). So a
removal either comes before an upload's transaction (which then places the bytes again) or sees its
row: no row is ever left without its bytes. A transaction that deletes file rows removes no blob: until
it commits, a rollback could bring the rows back, so their bytes are removed after (`remove_blobs` in
files/service.py), and a process that dies in between leaves only an orphan for the sweep.

A file row and what names it. A job naming a file (`input.file_id`) is inserted in a transaction that
holds the file's row (`hold_files`: FOR SHARE on PostgreSQL), and a delete locks the row (FOR UPDATE)
before it looks for users: either the delete waits and then sees the job, or the insert waits and then
finds no file (404), never a job naming a file that is gone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.errors import Conflict, NotFound, QuotaExceeded
from inferline.files.blobs import BlobStore
from inferline.jobs.model import TERMINAL_STATUSES, JobStatus

if TYPE_CHECKING:
    from inferline.config import Settings

from inferline.schema import collections, documents, files, job_files, jobs, media_assets, media_projects
from inferline.threads import to_thread

# Namespaces of the two-key advisory locks (any values: they only keep these locks apart).
_BLOB_LOCKS = 0x1F4E_0101
_QUOTA_LOCKS = 0x1F4E_0102
_ACTIVE = sorted(status.value for status in JobStatus if status not in TERMINAL_STATUSES)


@dataclass(frozen=True)
class Quota:
    """What one tenant may store; 0 is no limit."""

    max_bytes: int = 0
    max_files: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Quota:
        """The per-tenant quota every upload path applies (API uploads, batches' drop files, media)."""
        return cls(max_bytes=settings.files_max_bytes_per_tenant, max_files=settings.files_max_per_tenant)


def _lock_key(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:7], 16)  # 28 bits: an int4


async def _lock(conn: AsyncConnection, namespace: int, keys: Iterable[int]) -> None:
    if conn.dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):  # one order for every holder of several: no deadlock between them
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(namespace, key)))


async def lock_blobs(conn: AsyncConnection, sha256s: Iterable[str]) -> None:
    """Until the transaction ends, nobody else places or removes these blobs."""
    await _lock(conn, _BLOB_LOCKS, (int(sha256[:7], 16) for sha256 in sha256s))


async def check_quota(conn: AsyncConnection, tenant: str, size: int, quota: Quota) -> None:
    """Raise QuotaExceeded (409) if one more file of `size` bytes would pass the tenant's quota. The
    tenant's lock, held to the commit, makes concurrent uploads pass one at a time."""
    if not quota.max_bytes and not quota.max_files:
        return
    await _lock(conn, _QUOTA_LOCKS, [_lock_key(tenant)])
    query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(files.c.size), 0)).where(files.c.tenant == tenant)
    count, used = (await conn.execute(query)).one()
    if quota.max_files and count + 1 > quota.max_files:
        raise QuotaExceeded(
            f"file quota exceeded: {count} files stored, the limit is {quota.max_files} (files_max_per_tenant); "
            "delete files with DELETE /api/v1/files/{id}"
        )
    if quota.max_bytes and used + size > quota.max_bytes:
        raise QuotaExceeded(
            f"storage quota exceeded: {used} bytes stored and {size} more asked, the limit is {quota.max_bytes} "
            "(files_max_bytes_per_tenant); delete files with DELETE /api/v1/files/{id}"
        )


async def user_of(conn: AsyncConnection, *, tenant: str, file_id: str, sha256: str) -> str | None:
    """What still needs the file, in words, or None: a queued or running job whose input names it
    (`job_files`), a document of a collection made from it, or a media project's asset, video or poster."""
    job_query = (
        sa.select(jobs.c.id)
        .join(job_files, job_files.c.job_id == jobs.c.id)
        .where(job_files.c.tenant == tenant, job_files.c.file_id == file_id, jobs.c.status.in_(_ACTIVE))
        .limit(1)
    )
    job_id = (await conn.execute(job_query)).scalar()
    if job_id is not None:
        return f"job {job_id} (queued or running) uses it"
    # Through (collection_id, sha256), which is indexed; file_id alone is not.
    document_query = (
        sa.select(documents.c.id, collections.c.name)
        .join(collections, collections.c.id == documents.c.collection_id)
        .where(collections.c.tenant == tenant, documents.c.sha256 == sha256, documents.c.file_id == file_id)
        .limit(1)
    )
    document = (await conn.execute(document_query)).first()
    if document is not None:
        return f"document {document.id} of collection {document.name!r} is made from it; delete the document first"
    return await _media_user_of(conn, tenant=tenant, file_id=file_id)


async def _media_user_of(conn: AsyncConnection, *, tenant: str, file_id: str) -> str | None:
    asset_query = sa.select(media_assets.c.id, media_assets.c.project_id).where(
        media_assets.c.file_id == file_id, media_assets.c.tenant == tenant
    )
    asset = (await conn.execute(asset_query.limit(1))).first()
    if asset is not None:
        return f"asset {asset.id} of media project {asset.project_id} is this file; delete the asset instead"
    project_query = sa.select(media_projects.c.id).where(
        media_projects.c.tenant == tenant,
        sa.or_(media_projects.c.video_file_id == file_id, media_projects.c.poster_file_id == file_id),
    )
    project_id = (await conn.execute(project_query.limit(1))).scalar()
    if project_id is not None:
        return f"media project {project_id} shows it as its video or poster; delete the project instead"
    return None


async def remove_unreferenced(conn: AsyncConnection, blobs: BlobStore, sha256s: Iterable[str]) -> int:
    """Remove those of these blobs that no file row refers to; returns how many were removed. Only in a
    transaction that writes nothing else: the removal cannot be taken back by a rollback."""
    wanted = sorted(set(sha256s))
    if not wanted:
        return 0
    await lock_blobs(conn, wanted)
    query = sa.select(files.c.sha256).where(files.c.sha256.in_(wanted)).distinct()
    referenced = set((await conn.execute(query)).scalars())
    return await to_thread(blobs.remove, [sha256 for sha256 in wanted if sha256 not in referenced])


def _in_use() -> sa.ColumnElement[bool]:
    """A row of `files` that a queued or running job of its tenant names, a document is made from, or a
    media project holds (what `user_of` tells in words)."""
    # Through `job_files` (its (tenant, file_id) index, then each job by primary key): the jobs that name
    # this file, not every queued or running job of the table; it also knows every field that names a file.
    by_job = sa.exists().where(
        job_files.c.tenant == files.c.tenant,
        job_files.c.file_id == files.c.id,
        jobs.c.id == job_files.c.job_id,
        jobs.c.status.in_(_ACTIVE),
    )
    by_document = sa.exists().where(
        collections.c.tenant == files.c.tenant,
        documents.c.collection_id == collections.c.id,
        documents.c.sha256 == files.c.sha256,
        documents.c.file_id == files.c.id,
    )
    by_asset = sa.exists().where(media_assets.c.tenant == files.c.tenant, media_assets.c.file_id == files.c.id)
    by_project = sa.exists().where(
        media_projects.c.tenant == files.c.tenant,
        sa.or_(media_projects.c.video_file_id == files.c.id, media_projects.c.poster_file_id == files.c.id),
    )
    return sa.or_(by_job, by_document, by_asset, by_project)


async def stored_files(conn: AsyncConnection, tenant: str, file_ids: Iterable[str]) -> set[str]:
    """Those of `file_ids` that are the tenant's files now."""
    query = sa.select(files.c.id).where(files.c.tenant == tenant, files.c.id.in_(list(file_ids)))
    return {row[0] for row in await conn.execute(query)}


async def hold_files(conn: AsyncConnection, tenant: str, file_ids: Iterable[str]) -> None:
    """NotFound unless the tenant has all of these files; they cannot be deleted until the transaction
    ends (see the module docstring)."""
    wanted = sorted(set(file_ids))
    if not wanted:  # most jobs name no file: no round trip for them
        return
    query = sa.select(files.c.id).where(files.c.tenant == tenant, files.c.id.in_(wanted)).with_for_update(read=True)
    found = set((await conn.execute(query)).scalars())
    for file_id in wanted:
        if file_id not in found:
            raise NotFound(f"file {file_id} not found")


async def delete_row(conn: AsyncConnection, *, tenant: str, file_id: str) -> str:
    """Delete the tenant's file row; returns its sha256, whose blob is for `remove_blobs` once committed.
    NotFound for another tenant's file; Conflict while something uses it."""
    query = sa.select(files.c.sha256).where(files.c.id == file_id, files.c.tenant == tenant).with_for_update()
    sha256 = (await conn.execute(query)).scalar()
    if sha256 is None:
        raise NotFound(f"file {file_id} not found")
    user = await user_of(conn, tenant=tenant, file_id=file_id, sha256=sha256)
    if user is not None:
        raise Conflict(f"file {file_id} is in use: {user}")
    await conn.execute(files.delete().where(files.c.id == file_id))
    return str(sha256)


RELEASE_BATCH = 500  # ids per statement: well under SQLite's 32,766 bound parameters


async def release_files(conn: AsyncConnection, tenant: str, file_ids: Iterable[str]) -> list[str]:
    """Delete those of the tenant's files `file_ids` that nothing uses any more (the documents made from
    them were replaced or deleted in this transaction); returns the sha256s of the rows deleted, whose
    blobs are for `remove_blobs` once committed. The rows are locked first, so the check below (a new
    statement) sees a job that was being inserted naming one of them."""
    wanted = sorted(set(file_ids))
    released: set[str] = set()
    for start in range(0, len(wanted), RELEASE_BATCH):
        batch = wanted[start : start + RELEASE_BATCH]
        ours = sa.and_(files.c.tenant == tenant, files.c.id.in_(batch))
        await conn.execute(sa.select(files.c.id).where(ours).with_for_update())
        deleted = await conn.execute(files.delete().where(ours, ~_in_use()).returning(files.c.sha256))
        released.update(deleted.scalars())
    return sorted(released)


async def delete_file_rows(conn: AsyncConnection, tenant: str, file_ids: Iterable[str]) -> list[str]:
    """The tenant's files of these ids deleted (a workload's delete of what it owns, in its own
    transaction); returns the sha256s of the rows deleted, whose blobs are for `remove_blobs` once
    committed. A file a queued or running job names is kept (as a plain file of the tenant's): the
    job would otherwise run on bytes that are gone."""
    wanted = sorted(set(file_ids))
    if not wanted:
        return []
    locked = sa.select(files.c.id).where(files.c.tenant == tenant, files.c.id.in_(wanted)).with_for_update()
    await conn.execute(locked)
    in_use = (
        sa.select(job_files.c.file_id)
        .join(jobs, jobs.c.id == job_files.c.job_id)
        .where(job_files.c.tenant == tenant, job_files.c.file_id.in_(wanted), jobs.c.status.in_(_ACTIVE))
    )
    wanted = sorted(set(wanted) - set((await conn.execute(in_use)).scalars()))
    if not wanted:
        return []
    deleted = await conn.execute(
        files.delete().where(files.c.tenant == tenant, files.c.id.in_(wanted)).returning(files.c.sha256)
    )
    return sorted(set(deleted.scalars()))
