"""Use cases for files: store an upload for a tenant, read, list and delete them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import InvalidInput, NotFound
from inferline.files.blobs import BlobStore, StagedBlob
from inferline.files.sniff import HEAD_BYTES, sniff
from inferline.files.store import Quota, check_quota, delete_row, lock_blobs, remove_unreferenced
from inferline.ids import new_id
from inferline.paging import newest_first
from inferline.schema import files
from inferline.threads import to_thread

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FileInfo:
    id: str
    tenant: str
    sha256: str
    size: int
    content_type: str
    filename: str | None
    created_at: datetime
    # Set by `receive_file` until `insert_file` has written the row; never a column.
    pending: PendingUpload | None = field(default=None, compare=False, repr=False)

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "size": self.size,
            "content_type": self.content_type,
            "filename": self.filename,
            "created_at": self.created_at.isoformat(),
        }


def clean_filename(name: str | None) -> str | None:
    """Only the last path component, printable, at most 200 characters: a name is metadata, never a path."""
    if not name:
        return None
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in {"", ".", ".."}:
        return None
    return base[:200]


NO_QUOTA = Quota()


@dataclass(frozen=True)
class PendingUpload:
    """Received bytes not yet at their address, and what writing their row must check."""

    blobs: BlobStore
    staged: StagedBlob
    quota: Quota


def _stage(blobs: BlobStore, source: BinaryIO, max_bytes: int) -> tuple[StagedBlob, str]:
    staged = blobs.stage(source, max_bytes=max_bytes)
    try:
        if staged.size == 0:
            raise InvalidInput("the file is empty", field="file")
        with staged.tmp.open("rb") as stored:
            head = stored.read(HEAD_BYTES)
        return staged, sniff(head, staged.tmp)
    except BaseException:
        blobs.discard(staged)
        raise


async def receive_file(
    blobs: BlobStore,
    *,
    tenant: str,
    source: BinaryIO,
    filename: str | None,
    max_bytes: int,
    quota: Quota = NO_QUOTA,
) -> FileInfo:
    """The bytes staged and the file's row, neither written yet: `insert_file` writes both in the
    caller's transaction (a document and its file are written together or not at all), and
    `finish_upload` removes what a refused upload left."""
    staged, content_type = await to_thread(_stage, blobs, source, max_bytes)
    return FileInfo(
        id=new_id(),
        tenant=tenant,
        sha256=staged.sha256,
        size=staged.size,
        content_type=content_type,
        filename=clean_filename(filename),
        created_at=utcnow(),
        pending=PendingUpload(blobs, staged, quota),
    )


async def insert_file(conn: AsyncConnection, info: FileInfo) -> None:
    """The file's row, checked against its tenant's quota, and its bytes moved to their address under
    the blob's lock: a concurrent delete of the last other row of the same bytes either comes first
    (and the bytes are placed again here) or sees this row."""
    pending = info.pending
    if pending is not None:
        await check_quota(conn, info.tenant, info.size, pending.quota)
        await lock_blobs(conn, [info.sha256])
    await conn.execute(files.insert(), _row(info))
    if pending is not None:
        await to_thread(pending.blobs.place, pending.staged)


async def record_file(engine: AsyncEngine, info: FileInfo) -> None:
    """`insert_file` in a transaction of its own; a refusal leaves nothing behind."""
    refused = True
    try:
        async with db.write(engine) as conn:
            await insert_file(conn, info)
        refused = False
    finally:
        await finish_upload(engine, info, refused=refused)


async def finish_upload(engine: AsyncEngine, info: FileInfo, *, refused: bool) -> None:
    """Call once the request that received `info` is answered. Staged bytes never placed are removed;
    so are placed ones when the request was `refused` (their transaction rolled back) and no row refers
    to them."""
    pending = info.pending
    if pending is None:
        return
    if not pending.staged.placed:
        await to_thread(pending.blobs.discard, pending.staged)
    elif refused:
        await remove_blobs(engine, pending.blobs, [info.sha256])


async def get_file(engine: AsyncEngine, *, tenant: str, file_id: str) -> FileInfo:
    """Another tenant's file is not found, exactly like a missing one."""
    async with db.read(engine) as conn:
        row = (
            (await conn.execute(sa.select(files).where(files.c.id == file_id, files.c.tenant == tenant)))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"file {file_id} not found")
    return FileInfo(**row)


def _row(info: FileInfo) -> dict[str, Any]:
    return {column.name: getattr(info, column.name) for column in files.columns}


async def list_files(
    engine: AsyncEngine, *, tenant: str, limit: int, cursor: str | None
) -> tuple[list[FileInfo], str | None]:
    """One page of the tenant's files (documents' included: they count toward its quota), newest first."""
    async with db.read(engine) as conn:
        return await newest_first(
            conn,
            sa.select(files).where(files.c.tenant == tenant),
            files.c.id,
            limit=limit,
            cursor=cursor,
            to_item=lambda row: FileInfo(**row),
            id_of=lambda info: info.id,
        )


async def delete_file(engine: AsyncEngine, blobs: BlobStore, *, tenant: str, file_id: str) -> None:
    """Delete the tenant's file, and its bytes unless another file (of any tenant) has the same. 409
    while a queued or running job or a document uses it; another tenant's file is not found."""
    async with db.write(engine) as conn:
        sha256 = await delete_row(conn, tenant=tenant, file_id=file_id)
    await remove_blobs(engine, blobs, [sha256])


# Blobs checked (and, on PostgreSQL, locked) per transaction: short write transactions, and few
# advisory locks at once (their shared table holds 64 per connection by default).
BLOB_BATCH = 50


async def remove_blobs(engine: AsyncEngine, blobs: BlobStore, sha256s: list[str]) -> int:
    """Remove those of these blobs that no file row refers to, after the transaction that deleted their
    rows has committed (files/store.py); returns how many were removed."""
    removed = 0
    for start in range(0, len(sha256s), BLOB_BATCH):
        batch = sha256s[start : start + BLOB_BATCH]
        try:
            async with db.write(engine) as conn:
                removed += await remove_unreferenced(conn, blobs, batch)
        except Exception:  # what it changed is committed already; the sweep removes these bytes later
            log.warning("blobs_not_removed", count=len(batch), exc_info=True)
    return removed


def blob_path(blobs: BlobStore, info: FileInfo) -> Path:
    path = blobs.path(info.sha256)
    if not path.exists():
        log.warning("blob_missing", file_id=info.id, path=str(path))  # where: for the operator, not the caller
        raise NotFound(f"the bytes of file {info.id} are missing from the blob store")
    return path


def open_blob(blobs: BlobStore, info: FileInfo) -> BinaryIO:
    """The file's bytes, opened (blocking): once open, a delete that unlinks the blob does not take them."""
    try:
        return blobs.path(info.sha256).open("rb")
    except FileNotFoundError:
        log.warning("blob_missing", file_id=info.id, path=str(blobs.path(info.sha256)))  # for the operator
        raise NotFound(f"the bytes of file {info.id} are missing from the blob store") from None
