"""The tenant files a media stage reads and writes, and the checks an output passes before it is stored.

A stage reads its inputs by file id (another tenant's id is not found, like a missing one) and stores its
output as a new file of the job's tenant, counted against the tenant's quota. The output's file ids are
checkpointed before their rows are written and again in the result: an attempt after a crash that finds
the result returns it instead of making it again, and one that finds only the ids deletes those files.
A stage stopped after its output was stored removes it, so a canceled job leaves no file behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from PIL import Image

from inferline import db
from inferline.errors import Canceled, InferlineError, JobError, NonRetryable, NotFound
from inferline.files import sniff
from inferline.files.service import (
    FileInfo,
    blob_path,
    finish_upload,
    get_file,
    receive_file,
    record_file,
    remove_blobs,
)
from inferline.files.store import delete_file_rows
from inferline.jobs.context import JobContext
from inferline.jobs.model import JobStatus
from inferline.jobs.store import JobStore
from inferline.media import images
from inferline.media.deps import MediaDeps
from inferline.media.probe import MediaInfo, PictureCheck, picture_problems, probe
from inferline.schema import files
from inferline.shielding import despite_cancel

MP4 = sniff.MP4
M4A = sniff.M4A  # a song laid under a video (`clips.lay_song`)
JPEG = sniff.JPEG
# A clip's first or last frame as its canvas stored it. Never sniffed: no upload is of this type, so a
# transition reading one reads a frame a stage wrote, never a tenant's bytes posing as one.
FRAME = "image/x-portable-pixmap"
DURATION_TOLERANCE_S = 0.1
PHOTO_TYPES = frozenset(images.DECODERS)  # what an upload to a project accepts as a photo


@contextmanager
def as_job_errors() -> Iterator[None]:
    """A domain error inside a stage (a file not found, unreadable media, a quota) fails the job with its
    message: no later attempt would find it otherwise."""
    try:
        yield
    except JobError:
        raise
    except InferlineError as exc:
        raise NonRetryable(str(exc)) from exc


@dataclass(frozen=True)
class InputFile:
    info: FileInfo
    path: Path


async def input_file(deps: MediaDeps, ctx: JobContext, file_id: str, *, field: str, types: frozenset[str]) -> InputFile:
    """The tenant's file `file_id`, of one of `types` (as sniffed when it was stored)."""
    try:
        info = await get_file(deps.engine, tenant=ctx.tenant, file_id=file_id)
    except NotFound as exc:
        raise NonRetryable(f"{field}: {exc}") from exc
    if info.content_type not in types:
        wanted = ", ".join(sorted(types))
        raise NonRetryable(f"{field}: file {file_id} is {info.content_type}, not {wanted}")
    return InputFile(info, blob_path(deps.blobs, info))


def files_named(checkpoint: Any) -> list[str]:
    """The ids of the files a stage's checkpoint names: those it was storing, or those its result holds
    (each `..._file_id`: a clip, its frames, a poster)."""
    if not isinstance(checkpoint, dict):
        return []
    storing, result = checkpoint.get("storing"), checkpoint.get("result")
    named = [value for value in storing if isinstance(value, str)] if isinstance(storing, list) else []
    if isinstance(result, dict):
        named += [value for key, value in result.items() if key.endswith("file_id") and isinstance(value, str)]
    return named


async def finished_result(deps: MediaDeps, ctx: JobContext) -> dict[str, Any] | None:
    """The result an earlier attempt stored and checkpointed, if its files are all still there. Otherwise
    the files an earlier attempt named are deleted, as this one makes its output again: one killed between
    writing their rows and checkpointing its result (`store_outputs`) left them, in no one's result."""
    checkpoint = ctx.last_checkpoint if isinstance(ctx.last_checkpoint, dict) else {}
    named = files_named(checkpoint)
    result = checkpoint.get("result")
    if isinstance(result, dict):
        async with db.read(deps.engine) as conn:
            query = sa.select(sa.func.count()).where(files.c.tenant == ctx.tenant, files.c.id.in_(named))
            found = int((await conn.execute(query)).scalar_one())
        if found == len(named):
            return result
    await delete_files(deps, ctx.tenant, named)
    return None


async def store_outputs(
    deps: MediaDeps, ctx: JobContext, outputs: list[tuple[Path, str]], result: Callable[[list[str]], dict[str, Any]]
) -> dict[str, Any]:
    """Store each (path, content type) as a file of the job's tenant and checkpoint `result(file ids)`.
    Whatever stops the job before it returns (a cancel, a quota) removes the files stored. The files' ids are
    checkpointed before their rows are written (`storing`), so that what a kill of the process leaves
    between the rows and the result is deleted by the next attempt (`finished_result`) or by the canceled
    run that no attempt follows (`pipeline.discard_children`)."""
    staged: list[FileInfo] = []
    stored: list[str] = []
    try:
        for path, content_type in outputs:
            staged.append(await _received(deps, ctx, path, content_type))
        await ctx.checkpoint({"storing": [info.id for info in staged]})
        for info in staged:
            stored.append(info.id)  # before the commit: a cancel during it removes the row if it was written
            await record_file(deps.engine, info)
        done = result(stored)
        await ctx.checkpoint({"result": done})
    except BaseException:

        async def discard() -> None:
            for info in staged[len(stored) :]:  # staged, never handed to record_file (which finishes its own)
                await finish_upload(deps.engine, info, refused=True)
            await delete_files(deps, ctx.tenant, stored)

        await despite_cancel(discard())  # one cleanup: a cancel raised after a part of it would skip the rest
        raise
    if ctx.cancel_reason is not None:  # canceled while storing: the attempt ends canceled, without its files
        await despite_cancel(delete_files(deps, ctx.tenant, stored))
        raise Canceled(ctx.cancel_reason)
    try:
        cancel_recorded = await _cancel_recorded(deps, ctx)
    except BaseException:  # canceled (at once, by a cancel in this process) or failed while reading its row
        await despite_cancel(delete_files(deps, ctx.tenant, stored))
        raise
    if cancel_recorded:
        # Asked to stop since the last heartbeat (a pipeline's cancel marks its children): a canceled
        # pipeline deletes only the files of the children it saw succeed, so one that succeeded after it
        # stopped waiting would leave its files. Failing now, the job is recorded canceled (a cancel
        # requested wins over a failure), without them.
        await despite_cancel(delete_files(deps, ctx.tenant, stored))
        raise NonRetryable("canceled while its output was stored")
    return done


async def _cancel_recorded(deps: MediaDeps, ctx: JobContext) -> bool:
    """Whether the job's row asks it to stop (a job run outside the queue has no row)."""
    async with db.read(deps.engine) as conn:
        job = await JobStore(conn).get(ctx.id, tenant=ctx.tenant)
    return job is not None and (job.cancel_requested or job.status is JobStatus.CANCELED)


async def _received(deps: MediaDeps, ctx: JobContext, path: Path, content_type: str) -> FileInfo:
    """`path`'s bytes staged in the blob store as a file of the job's tenant, its row not yet written."""
    with path.open("rb") as source:
        staged = await receive_file(
            deps.blobs,
            tenant=ctx.tenant,
            source=source,
            filename=path.name,
            max_bytes=deps.limits.max_output_bytes,
            quota=deps.quota,
        )
    return replace(staged, content_type=content_type)  # what was made, not what sniffing guesses


async def delete_files(deps: MediaDeps, tenant: str, file_ids: list[str]) -> None:
    """The tenant's files of these ids, and their bytes where no other file has them; gone ones are skipped."""
    if not file_ids:
        return
    async with db.write(deps.engine) as conn:
        released = await delete_file_rows(conn, tenant, file_ids)
    await remove_blobs(deps.engine, deps.blobs, released)


# -- checks -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What a made video must be. `picture`: the span (start, end) in seconds where its picture must be
    neither black nor frozen (None: not checked); `frozen_min_s` None: only black is checked there."""

    frame: tuple[int, int]
    duration_s: float
    audio: bool = False
    picture: tuple[float, float] | None = None
    frozen_min_s: float | None = 2.0

    def picture_check(self) -> PictureCheck | None:
        """The check of the picture to run as the video is made (`check_video(..., checked=)`)."""
        if self.picture is None:
            return None
        frozen_min_s = self.frozen_min_s if self.frozen_min_s is not None else self.duration_s + 1
        return PictureCheck(frozen_min_s=frozen_min_s)


async def check_video(path: Path, expected: Expected, what: str, *, checked: PictureCheck | None = None) -> MediaInfo:
    """`NonRetryable` naming what is wrong with the video at `path` (`what` names it): its length (within
    DURATION_TOLERANCE_S), size, codecs (H.264 yuv420p, AAC when it has sound), a black or frozen picture
    (found by `checked`, the `expected.picture_check()` that ran as the video was made; else decoded here).
    Returns what was probed, which the clip's result passes on (the render joins it without probing it)."""
    info = await probe(path)
    problems = []
    duration_s = info.video_duration_s or info.duration_s
    if abs(duration_s - expected.duration_s) > DURATION_TOLERANCE_S:
        problems.append(f"lasts {duration_s:.2f} s, not {expected.duration_s:.2f} s")
    if (info.width, info.height) != expected.frame:
        problems.append(f"is {info.width}x{info.height}, not {expected.frame[0]}x{expected.frame[1]}")
    if (info.video_codec, info.pixel_format) != ("h264", "yuv420p"):
        problems.append(f"is {info.video_codec} {info.pixel_format}, not h264 yuv420p")
    if expected.audio and info.audio_codec != "aac":
        problems.append(f"has {info.audio_codec or 'no'} sound, not AAC")
    if expected.picture is not None and not problems:
        start_s, end_s = expected.picture
        if checked is not None:
            problems += checked.problems(start_s=start_s, end_s=min(end_s, duration_s))
        else:
            frozen_s = expected.frozen_min_s if expected.frozen_min_s is not None else duration_s + 1
            problems += await picture_problems(path, start_s=start_s, end_s=end_s, frozen_min_s=frozen_s)
    if problems:
        raise NonRetryable(f"the {what} made is wrong: it {'; it '.join(problems)}")
    return info


def check_frames(paths: Sequence[Path], frame: tuple[int, int], what: str) -> None:
    """`NonRetryable` unless each of `paths` is a PPM of `frame` (read from its header only)."""
    for path in paths:
        try:
            with Image.open(path, formats=["PPM"]) as still:
                size = still.size
        except OSError as exc:
            raise NonRetryable(f"the {what} made is wrong: its {path.stem} frame is unreadable ({exc})") from exc
        if size != frame:
            wanted = f"{frame[0]}x{frame[1]}"
            raise NonRetryable(f"the {what} made is wrong: its {path.stem} frame is {size[0]}x{size[1]}, not {wanted}")


Progress = Callable[[float], Awaitable[None]]


def progress_between(ctx: JobContext, start: float, end: float) -> Progress:
    """A step's percent (0-100) reported as the job's progress between `start` and `end`."""

    async def report(percent: float) -> None:
        await ctx.progress(start + (end - start) * percent / 100)

    return report


T = TypeVar("T")


async def to_thread_whole(ctx: JobContext, func: Callable[..., T], /, *args: Any) -> T:
    """`ctx.to_thread`, waited for to its end even when the job is stopped meanwhile (then re-raised): a
    thread cannot be stopped, and one still writing into the work directory after the stage removed it
    would leave a file, and the directory, behind. Only for short, bounded calls (a photo's decode)."""
    running = asyncio.ensure_future(ctx.to_thread(func, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.gather(running, return_exceptions=True)
        raise
