"""What the batch workload needs, built once by `bootstrap.py` (`BatchDeps.from_settings`) and kept on
`Services.batches`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.batches.drops import DropFolders
from inferline.batches.records import Limits
from inferline.config import Settings
from inferline.files.blobs import BlobStore
from inferline.files.store import Quota
from inferline.jobs.submission import Submitter
from inferline.search.deps import SearchDeps
from inferline.search.indexing import EMBED_IN_FLIGHT
from inferline.turns import TenantSlots


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
    # The embeddings of every batch, record stream and ingest in this process: at most EMBED_IN_FLIGHT chunks
    # in the model runtime's queue at once (`from_settings` hands over the search deps' one budget). A batch
    # embeds two chunks ahead of the one it writes: each with its own EMBED_IN_FLIGHT, one batch would fill
    # the queue (`model_queue_limit`, 256), and the ingests of every tenant, and another batch's chunk,
    # would be refused (Overloaded).
    embed_slots: TenantSlots = field(default_factory=lambda: TenantSlots(EMBED_IN_FLIGHT))

    @classmethod
    def from_settings(cls, settings: Settings, *, search: SearchDeps, submitter: Submitter) -> BatchDeps:
        return cls(
            engine=search.engine,
            blobs=search.blobs,
            submitter=submitter,
            search=search,
            embed_slots=search.embed_slots,
            limits=Limits(
                max_records=settings.batch_max_records,
                max_line_bytes=settings.batch_max_line_bytes,
                max_record_bytes=settings.batch_max_record_bytes,
            ),
            max_file_bytes=settings.batch_max_file_bytes,
            default_chunk_records=settings.batch_chunk_records,
            drops=DropFolders(
                folders=settings.batch_drop_folders,
                max_files=settings.batch_drop_max_files,
                settle_s=settings.batch_drop_settle_s,
                quota=Quota.from_settings(settings),
            ),
        )
