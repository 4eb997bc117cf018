"""What the batch workload needs, built once by `bootstrap.py` and kept on `Services.batches`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.batches.drops import DropFolders
from inferline.batches.records import Limits
from inferline.files.blobs import BlobStore
from inferline.jobs.submission import Submitter
from inferline.search.deps import SearchDeps


@dataclass(frozen=True)
class BatchDeps:
    engine: AsyncEngine
    blobs: BlobStore
    submitter: Submitter
    search: SearchDeps
    limits: Limits = field(default_factory=Limits)
    max_file_bytes: int = 2 * 2**30
    default_chunk_records: int = 100
    drops: DropFolders = field(default_factory=DropFolders)
