"""SQL for files: quotas, what refers to a file, and which blobs no row refers to. Never commits.

Blob lifetime. A blob is placed in the transaction that writes a row for it, and removed in the
transaction that finds no row for it; both hold the blob's lock (a PostgreSQL advisory lock per sha256;
on SQLite every write transaction already holds the one write lock). So a removal either comes before
an upload's transaction (which then places the bytes again) or sees its row: no row is ever left
without its bytes. Removal happens before the commit, still under the lock: after it, an upload of the
same bytes could place them again, and a late removal would take them from under its row.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.errors import QuotaExceeded
from inferline.files.blobs import BlobStore
from inferline.jobs.model import TERMINAL_STATUSES, JobStatus
from inferline.schema import collections, documents, files, jobs, media_assets, media_projects

# Namespaces of the two-key advisory locks (any values: they only keep these locks apart).
_BLOB_LOCKS = 0x1F4E_0101
_QUOTA_LOCKS = 0x1F4E_0102
_ACTIVE = sorted(status.value for status in JobStatus if status not in TERMINAL_STATUSES)


@dataclass(frozen=True)
class Quota:
    """What one tenant may store; 0 is no limit."""

    max_bytes: int = 0
    max_files: int = 0


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
    (`file_id`), a document of a collection made from it, or a media project's asset, video or poster."""
    job_query = (
        sa.select(jobs.c.id)
        .where(jobs.c.status.in_(_ACTIVE), jobs.c.tenant == tenant, jobs.c.input["file_id"].as_string() == file_id)
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
    """Remove those of these blobs that no file row refers to; returns how many were removed."""
    wanted = sorted(set(sha256s))
    if not wanted:
        return 0
    await lock_blobs(conn, wanted)
    query = sa.select(files.c.sha256).where(files.c.sha256.in_(wanted)).distinct()
    referenced = set((await conn.execute(query)).scalars())
    return await asyncio.to_thread(blobs.remove, [sha256 for sha256 in wanted if sha256 not in referenced])


async def delete_file_rows(conn: AsyncConnection, blobs: BlobStore, tenant: str, file_ids: Iterable[str]) -> int:
    """The tenant's files of these ids deleted, and the bytes no row refers to any more (a workload's
    delete of what it owns, in its own transaction); returns how many rows were deleted."""
    wanted = sorted(set(file_ids))
    if not wanted:
        return 0
    query = sa.select(files.c.sha256).where(files.c.tenant == tenant, files.c.id.in_(wanted))
    sha256s = list((await conn.execute(query)).scalars())
    await conn.execute(files.delete().where(files.c.tenant == tenant, files.c.id.in_(wanted)))
    await remove_unreferenced(conn, blobs, sha256s)
    return len(sha256s)
