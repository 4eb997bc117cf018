"""The sweep of blobs no file row refers to: what a process that died mid-request left (a staged upload,
or bytes placed by a transaction that never committed), and anything older than the rules of
files/store.py. Run by every worker every `files_gc_interval_s`, and by `inferline files gc`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.files.blobs import BlobStore
from inferline.files.service import remove_blobs
from inferline.threads import to_thread

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Swept:
    blobs: int
    staged: int


async def sweep_orphans(engine: AsyncEngine, blobs: BlobStore, *, min_age_s: float) -> Swept:
    """Remove blobs no file row refers to and staged uploads, both last written over `min_age_s` ago.
    The age spares uploads in flight; the blob locks make the check exact against concurrent writes."""
    cutoff = time.time() - min_age_s
    staged = await to_thread(blobs.remove_stale_tmp, cutoff)
    removed = 0
    for prefix in await to_thread(blobs.prefixes):
        candidates = await to_thread(blobs.older_than, prefix, cutoff)
        removed += await remove_blobs(engine, blobs, candidates)
    if removed or staged:
        log.info("files_swept", blobs=removed, staged=staged)
    return Swept(blobs=removed, staged=staged)


async def run_sweeper(
    engine: AsyncEngine, blobs: BlobStore, *, every_s: float, min_age_s: float, stop: asyncio.Event
) -> None:
    """`sweep_orphans` every `every_s` until `stop` is set."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), every_s)
            return
        except TimeoutError:
            pass
        try:
            await sweep_orphans(engine, blobs, min_age_s=min_age_s)
        except Exception as exc:  # the next round tries again; a sweep only reclaims space
            log.warning("files_sweep_failed", error=str(exc))
