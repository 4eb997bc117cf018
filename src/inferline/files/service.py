"""Use cases for files: store an upload for a tenant, read its metadata."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import InvalidInput, NotFound
from inferline.files.blobs import BlobStore
from inferline.files.sniff import HEAD_BYTES, sniff
from inferline.ids import new_id
from inferline.schema import files

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


def _store(blobs: BlobStore, source: BinaryIO, max_bytes: int) -> tuple[str, int, str]:
    sha256, size = blobs.put(source, max_bytes=max_bytes)
    if size == 0:
        raise InvalidInput("the file is empty", field="file")
    path = blobs.path(sha256)
    with path.open("rb") as stored:
        head = stored.read(HEAD_BYTES)
    return sha256, size, sniff(head, path)


async def receive_file(
    blobs: BlobStore, *, tenant: str, source: BinaryIO, filename: str | None, max_bytes: int
) -> FileInfo:
    """The bytes stored as a blob, and the file's row, not yet written: `insert_file` writes it in the
    caller's transaction, so a document and its file are written together or not at all."""
    sha256, size, content_type = await asyncio.to_thread(_store, blobs, source, max_bytes)
    return FileInfo(
        id=new_id(),
        tenant=tenant,
        sha256=sha256,
        size=size,
        content_type=content_type,
        filename=clean_filename(filename),
        created_at=utcnow(),
    )


async def insert_file(conn: AsyncConnection, info: FileInfo) -> None:
    await conn.execute(files.insert(), info.__dict__)


async def record_file(engine: AsyncEngine, info: FileInfo) -> None:
    """`insert_file` in a transaction of its own."""
    async with db.write(engine) as conn:
        await insert_file(conn, info)


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


def blob_path(blobs: BlobStore, info: FileInfo) -> Path:
    path = blobs.path(info.sha256)
    if not path.exists():
        log.warning("blob_missing", file_id=info.id, path=str(path))  # where: for the operator, not the caller
        raise NotFound(f"the bytes of file {info.id} are missing from the blob store")
    return path
