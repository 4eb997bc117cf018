"""What the media workload needs, built once by `bootstrap.py` and kept on `Services.media`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.files.blobs import BlobStore
from inferline.jobs.submission import Submitter


@dataclass(frozen=True)
class MediaLimits:
    """What one upload or project may hold (settings `media_*`)."""

    max_image_pixels: int = 50_000_000
    max_audio_s: float = 1800.0
    max_assets: int = 300


@dataclass(frozen=True)
class MediaDeps:
    engine: AsyncEngine
    blobs: BlobStore
    submitter: Submitter
    # Per-job work directories live under it (`<data_dir>/media/work`); nothing from input names a path.
    work_root: Path
    limits: MediaLimits = field(default_factory=MediaLimits)
