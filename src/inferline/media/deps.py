"""What the media workload needs, built once by `bootstrap.py` (`MediaDeps.from_settings`) and kept on
`Services.media`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.config import Settings
from inferline.files.blobs import BlobStore
from inferline.files.store import Quota
from inferline.jobs.submission import Submitter
from inferline.media.encoders import EncoderChoice
from inferline.media.transitions import TransitionGenerator, XfadeTransitions
from inferline.media.workspace import Workspaces
from inferline.turns import TenantSlots

SONG_DECODES = 2  # songs decoded whole at once in a process: the reference machine's cores


@dataclass(frozen=True)
class MediaLimits:
    """What one upload or project may hold (settings `media_*`)."""

    max_image_pixels: int = 50_000_000
    max_audio_s: float = 1800.0
    max_assets: int = 300
    max_output_bytes: int = 8 * 2**30  # a stage's output file


@dataclass(frozen=True)
class Interpolation:
    """The frame-interpolation model's use for transitions (setting `media_interpolation_model`)."""

    depth: int = 4
    timeout_s: float = 120.0


@dataclass(frozen=True)
class MediaDeps:
    engine: AsyncEngine
    blobs: BlobStore
    submitter: Submitter
    # Per-job work directories live under it (`<data_dir>/media/work`); nothing from input names a path.
    work_root: Path
    limits: MediaLimits = field(default_factory=MediaLimits)
    quota: Quota = field(default_factory=Quota)  # the tenant's, which a stage's output counts against
    interpolation: Interpolation | None = None  # None: no model configured, transitions are xfade's
    fallback: TransitionGenerator = field(default_factory=XfadeTransitions)
    ffmpeg_threads: int = 2
    # x264 or NVENC, tried on the first media job (setting `media_video_encoder`).
    encoders: EncoderChoice = field(default_factory=EncoderChoice)
    # Songs decoded whole at once (their check at upload): a burst of uploads does not take every core,
    # and tenants take turns: one tenant's burst does not queue another's song behind all of it.
    song_decodes: TenantSlots = field(default_factory=lambda: TenantSlots(SONG_DECODES))
    workspaces: Workspaces = field(init=False)

    def __post_init__(self) -> None:
        # One per process: it sweeps the directories of dead processes on its first use.
        object.__setattr__(self, "workspaces", Workspaces(self.work_root))

    @classmethod
    def from_settings(
        cls, settings: Settings, *, engine: AsyncEngine, blobs: BlobStore, submitter: Submitter
    ) -> MediaDeps:
        limits = MediaLimits(
            max_image_pixels=settings.media_max_image_pixels,
            max_audio_s=settings.media_max_audio_s,
            max_assets=settings.media_max_assets,
            max_output_bytes=settings.media_max_output_bytes,
        )
        interpolation = None
        if settings.media_interpolation_model:
            interpolation = Interpolation(
                depth=settings.media_interpolation_depth, timeout_s=settings.media_transition_timeout_s
            )
        return cls(
            engine=engine,
            blobs=blobs,
            submitter=submitter,
            work_root=settings.data_dir.resolve() / "media" / "work",
            limits=limits,
            quota=Quota.from_settings(settings),
            interpolation=interpolation,
            fallback=XfadeTransitions(threads=settings.media_ffmpeg_threads),
            ffmpeg_threads=settings.media_ffmpeg_threads,
            encoders=EncoderChoice(settings.media_video_encoder),
        )
