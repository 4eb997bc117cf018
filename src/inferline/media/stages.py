"""The four stages of a memorial video, each a job kind on its own (kind.py registers them): a photo's clip
(`canvas`), the clip between two clips (`transition`), the closing card (`last_clip`) and the final video
(`render`). Each reads tenant files by id, works in its job's work directory (outputs as `.part`, checked,
then renamed) and stores what it made as new tenant files; its result names them.

Stages reported, in order (the seed's names): `<stage>_start`, `_generate` (`_concat` for render), then
`_validate` (`_finalize` for last_clip and render), then `_done`. Progress: the ffmpeg run fills 5-85%.
"""

from __future__ import annotations

import asyncio
import functools
import math
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog

from inferline.errors import Canceled, InferlineError, NonRetryable
from inferline.files import sniff
from inferline.jobs.children import is_child
from inferline.jobs.context import JobContext
from inferline.media import clips, images
from inferline.media.deps import MediaDeps
from inferline.media.encoders import LIBX264, VideoEncoder
from inferline.media.interpolation import MODEL_NAME, OnnxTransitions, generate_transition
from inferline.media.options import CanvasInput, LastClipInput, RenderInput, TransitionInput
from inferline.media.probe import MediaInfo, check_audio
from inferline.media.stagefiles import (
    FRAME,
    JPEG,
    M4A,
    MP4,
    PHOTO_TYPES,
    Expected,
    InputFile,
    as_job_errors,
    check_frames,
    check_video,
    finished_result,
    input_file,
    progress_between,
    store_outputs,
    to_thread_whole,
)
from inferline.media.transitions import TransitionGenerator
from inferline.media.workspace import Workspace

log = structlog.get_logger(__name__)

T = TypeVar("T")
U = TypeVar("U")

CANVAS, TRANSITION, LAST_CLIP, RENDER = "canvas", "transition", "last_clip", "render"  # their kinds
GENERATE = (5.0, 85.0)  # the share of a stage's progress its ffmpeg run fills


def clip_result(kind: str, checked: MediaInfo, encoder: VideoEncoder) -> Callable[[list[str]], dict[str, Any]]:
    """A clip stage's result, given the id its clip was stored under: the clip as `check_video` measured it
    (H.264 yuv420p, its length and size within the plan) and the encoder that made it, which the render
    joins without probing it again."""

    def result(file_ids: list[str]) -> dict[str, Any]:
        return {
            "file_id": file_ids[0],
            "kind": kind,
            "duration_s": round(checked.video_duration_s or checked.duration_s, 6),
            "width": checked.width,
            "height": checked.height,
            "fps": round(checked.fps, 6),
            "encoder": encoder.name,
            "parameter_sets": checked.parameter_sets,
        }

    return result


# -- canvas ---------------------------------------------------------------------------------------------------


async def run_canvas(deps: MediaDeps, ctx: JobContext, data: CanvasInput) -> dict[str, Any]:
    """The photo as a clip: fitted over a blurred fill of itself, a slow Ken Burns zoom, its caption."""
    if (done := await finished_result(deps, ctx)) is not None:
        return done
    await ctx.stage("canvas_start")
    with as_job_errors():
        photo = await input_file(deps, ctx, data.photo_file_id, field="photo_file_id", types=PHOTO_TYPES)
        await deps.encoders.get()  # a required encoder that does not work here fails the job before any work
        async with deps.workspaces.open(ctx.id) as work:
            still = await normalized_photo(deps, ctx, photo, work, data.size)
            await ctx.stage("canvas_generate")
            part = work.part("clip.mp4")
            expected = Expected(data.size, _planned_s(data.duration_s, data.fps), picture=(0.0, data.duration_s))
            checked = expected.picture_check()
            # The stills of the transitions beside this clip: the first written by the encode's own run, the
            # last read back once. No transition decodes the clip for them.
            ends = (work.path("first.ppm"), work.path("last.ppm")) if data.end_frames else None
            _, encoder = await deps.encoders.run(
                lambda encoder: clips.render_photo_clip(
                    still,
                    part,
                    frame=data.size,
                    fps=data.fps,
                    duration_s=data.duration_s,
                    motion=data.motion,
                    caption=data.caption,
                    progress=progress_between(ctx, *GENERATE),
                    threads=deps.ffmpeg_threads,
                    encoder=encoder,
                    check=checked,
                    first_frame=ends[0] if ends is not None else None,
                )
            )
            await ctx.stage("canvas_validate")
            # The probe beside the frame's read: two short processes at once on 2 cores, ~0.1 s less per clip.
            probing = asyncio.ensure_future(check_video(part, expected, "photo's clip", checked=checked))
            try:
                if ends is not None:
                    await clips.extract_frame(part, ends[1], "last", fps=data.fps)
                made = await probing
            finally:
                probing.cancel()  # done already, unless the read failed or the job was stopped
                await asyncio.gather(probing, return_exceptions=True)
            if ends is not None:
                check_frames(ends, data.size, "photo's clip")
            clip = work.finish(part)

            def result(file_ids: list[str]) -> dict[str, Any]:
                frames = {"first_frame_file_id": file_ids[1], "last_frame_file_id": file_ids[2]} if ends else {}
                return clip_result(CANVAS, made, encoder)(file_ids) | frames

            outputs = [(clip, MP4), *((end, FRAME) for end in ends or ())]
            stored = await store_outputs(deps, ctx, outputs, result)
    await ctx.stage("canvas_done")
    return stored


def _planned_s(duration_s: float, fps: int) -> float:
    """The length a clip of `duration_s` really has: a whole number of frames."""
    return clips.frame_count(duration_s, fps) / fps


async def normalized_photo(
    deps: MediaDeps, ctx: JobContext, photo: InputFile, work: Workspace, frame: tuple[int, int]
) -> Path:
    """The photo decoded by Pillow into a PPM in the work directory (upright by its EXIF orientation, RGB,
    no larger than the clip's supersampled still): ffmpeg reads only this, never the upload."""
    out = work.path("photo.ppm")
    max_size = (frame[0] * clips.SUPERSAMPLE, frame[1] * clips.SUPERSAMPLE)
    # At its largest the photo fills the frame zoomed by ZOOM: no more of its pixels ever reach the video.
    shown_within = (math.ceil(frame[0] * (1 + clips.ZOOM)), math.ceil(frame[1] * (1 + clips.ZOOM)))
    normalize = functools.partial(
        images.normalize_photo,
        photo.path,
        out,
        photo.info.content_type,
        max_pixels=deps.limits.max_image_pixels,
        max_size=max_size,
        shown_within=shown_within,
    )
    await to_thread_whole(ctx, normalize)
    return out


# -- transition -----------------------------------------------------------------------------------------------


async def run_transition(deps: MediaDeps, ctx: JobContext, data: TransitionInput) -> dict[str, Any]:
    """The clip between two clips, from the last frame of the one before to the first of the one after: by
    the frame-interpolation model when there is one that works, else by ffmpeg's xfade. The result says
    which made it (`generator`) and why the model did not (`fallback_reason`)."""
    if (done := await finished_result(deps, ctx)) is not None:
        return done
    await ctx.stage("transition_start")
    with as_job_errors():
        before = await input_file(deps, ctx, data.from_file_id, field="from_file_id", types=frozenset({MP4}))
        after = await input_file(deps, ctx, data.to_file_id, field="to_file_id", types=frozenset({MP4}))
        await deps.encoders.get()  # a required encoder that does not work here fails the job before any work
        async with deps.workspaces.open(ctx.id) as work:
            first, last = work.path("first.ppm"), work.path("last.ppm")  # uncompressed: no zlib either way
            decoded = [
                await _transition_still(deps, ctx, data.from_frame_file_id, before, "last", first, data.fps),
                await _transition_still(deps, ctx, data.to_frame_file_id, after, "first", last, data.fps),
            ]
            await ctx.stage("transition_generate")
            part = work.part("transition.mp4")
            duration_s = _planned_s(data.duration_s, data.fps)
            # Two stills of one photo make a still transition: only black is checked.
            expected = Expected(data.size, duration_s, picture=(0.0, duration_s), frozen_min_s=None)
            checked = expected.picture_check()
            made, encoder = await deps.encoders.run(
                lambda encoder: generate_transition(
                    _model_transitions(deps, ctx),
                    deps.fallback,
                    first,
                    last,
                    part,
                    frame=data.size,
                    fps=data.fps,
                    duration_s=data.duration_s,
                    style=data.transition,
                    index=data.index,
                    progress=progress_between(ctx, *GENERATE),
                    check=checked,
                    encoder=encoder,
                )
            )
            await ctx.stage("transition_validate")
            probed = await check_video(part, expected, "transition", checked=checked)
            clip = work.finish(part)

            def result(file_ids: list[str]) -> dict[str, Any]:
                made_by = {
                    "generator": made.generator,
                    "fallback_reason": made.fallback_reason,
                    "stills_decoded": sum(decoded),
                }
                return clip_result(TRANSITION, probed, encoder)(file_ids) | made_by

            stored = await store_outputs(deps, ctx, [(clip, MP4)], result)
    await ctx.stage("transition_done")
    return stored


async def _transition_still(
    deps: MediaDeps,
    ctx: JobContext,
    frame_file_id: str | None,
    clip: InputFile,
    which: Literal["first", "last"],
    out: Path,
    fps: int,
) -> bool:
    """The clip's `which` frame at `out`: a copy of the frame its canvas stored, else (none named, or gone:
    a clip of an earlier version, a file deleted since) decoded from the clip, looked for as in a clip of
    ours at the video's `fps` first. Whether it was decoded."""
    if frame_file_id is not None:
        try:
            stored = await input_file(deps, ctx, frame_file_id, field=f"{which} frame", types=frozenset({FRAME}))
            await to_thread_whole(ctx, shutil.copyfile, stored.path, out)
            return False
        except (NonRetryable, FileNotFoundError) as exc:
            log.info("transition_still_decoded", job_id=ctx.id, frame_file_id=frame_file_id, reason=str(exc))
    await clips.extract_frame(clip.path, out, which, fps=fps)
    return True


def _model_transitions(deps: MediaDeps, ctx: JobContext) -> TransitionGenerator | None:
    if deps.interpolation is None:
        return None

    async def predict(pair: Any) -> Any:
        return await ctx.predict(MODEL_NAME, pair)

    settings = deps.interpolation
    return OnnxTransitions(predict, depth=settings.depth, timeout_s=settings.timeout_s, threads=deps.ffmpeg_threads)


# -- the closing card -----------------------------------------------------------------------------------------


async def run_last_clip(deps: MediaDeps, ctx: JobContext, data: LastClipInput) -> dict[str, Any]:
    """The closing card: the title and subtitle over the background photo blurred (or a plain dark card),
    fading to black."""
    if (done := await finished_result(deps, ctx)) is not None:
        return done
    await ctx.stage("last_clip_start")
    with as_job_errors():
        background = None
        if data.background_file_id is not None:
            background = await input_file(
                deps, ctx, data.background_file_id, field="background_file_id", types=PHOTO_TYPES
            )
        song = None
        if data.music_file_id is not None:
            song = await input_file(deps, ctx, data.music_file_id, field="music_file_id", types=sniff.AUDIO)
            if not (data.music_checked and is_child(ctx.job)):  # as the render's check of its song
                await check_audio(song.path, deps.limits.max_audio_s, decodes=deps.song_decodes, tenant=ctx.tenant)
        await deps.encoders.get()  # a required encoder that does not work here fails the job before any work
        async with deps.workspaces.open(ctx.id) as work:
            still = await normalized_photo(deps, ctx, background, work, data.size) if background else None
            await ctx.stage("last_clip_generate")
            part = work.part("last.mp4")
            duration_s = _planned_s(data.duration_s, data.fps)
            fade_s = min(clips.CLOSING_FADE_S, duration_s / 3)
            # The fade to black is wanted; a card without a photo stands still: only black before the fade. A
            # card without a photo is dark by design (blackdetect reads its text on it as black): not checked.
            picture = (0.0, duration_s - fade_s - 0.1) if still is not None else None
            expected = Expected(data.size, duration_s, picture=picture, frozen_min_s=None)
            checked = expected.picture_check()
            card = deps.encoders.run(
                lambda encoder: clips.render_last_clip(
                    data.title,
                    data.subtitle,
                    still,
                    part,
                    frame=data.size,
                    fps=data.fps,
                    duration_s=data.duration_s,
                    progress=progress_between(ctx, *GENERATE),
                    threads=deps.ffmpeg_threads,
                    encoder=encoder,
                    check=checked,
                )
            )
            track = work.part("song.m4a")
            not_laid: list[str] = []

            async def lay(song: Path, video_s: float) -> float | None:
                """The song on the core the card's encode leaves idle, not on the render's own time. A song
                that cannot be laid here fails no card: the render lays it (and fails with the reason)."""
                try:
                    return await clips.lay_song(song, track, total_s=video_s)
                except Canceled:
                    raise
                except InferlineError as exc:  # ffmpeg's failure or time limit, a track that came out wrong
                    log.warning("media_song_not_laid", job_id=ctx.id, reason=str(exc))
                    not_laid.append(str(exc))
                    return None

            video_s = data.music_video_s
            laying = lay(song.path, video_s) if song is not None and video_s is not None else None
            (_, encoder), track_s = await _beside(card, laying)
            await ctx.stage("last_clip_finalize")
            made = await check_video(part, expected, "closing clip", checked=checked)
            outputs = [(work.finish(part), MP4)] + ([(work.finish(track), M4A)] if track_s is not None else [])
            as_clip = clip_result(LAST_CLIP, made, encoder)

            def result(file_ids: list[str]) -> dict[str, Any]:
                if track_s is None:
                    return as_clip(file_ids) | ({"music_track_error": not_laid[0]} if not_laid else {})
                return as_clip(file_ids) | {"music_track_file_id": file_ids[1], "music_track_s": round(track_s, 6)}

            stored = await store_outputs(deps, ctx, outputs, result)
    await ctx.stage("last_clip_done")
    return stored


async def _beside(main: Awaitable[T], other: Awaitable[U] | None) -> tuple[T, U | None]:
    """`main` and `other` at once (`other` None: `main` alone). The first to fail stops the other, which is
    awaited (its ffmpeg gone) before that error is raised as it is; so does a cancel of the caller."""
    if other is None:
        return await main, None
    first, second = asyncio.ensure_future(main), asyncio.ensure_future(other)
    try:
        await asyncio.wait((first, second), return_when=asyncio.FIRST_EXCEPTION)
        for task in (first, second):
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return first.result(), second.result()
    finally:
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)


# -- render ---------------------------------------------------------------------------------------------------


def _known_clips(ctx: JobContext, data: RenderInput) -> list[MediaInfo | None]:
    """Each clip as the stage that made it checked it, where the render's input says so and the input is the
    pipeline's (a caller's render could claim anything of its clips); None: the render probes the clip."""
    if data.clips is None or not is_child(ctx.job):
        return [None] * len(data.clip_file_ids)
    return [
        None
        if facts is None
        else MediaInfo(
            duration_s=facts.duration_s,
            width=facts.width,
            height=facts.height,
            fps=facts.fps,
            video_codec="h264",
            audio_codec=None,
            pixel_format="yuv420p",
            video_duration_s=facts.duration_s,
            encoder=facts.encoder or LIBX264.name,  # none: a pipeline's of an earlier version, all x264's
            parameter_sets=facts.parameter_sets,
        )
        for facts in data.clips
    ]


async def run_render(deps: MediaDeps, ctx: JobContext, data: RenderInput) -> dict[str, Any]:
    """The clips joined in order with the music under them, and a poster frame: the video a family gets.
    The picture was checked in each clip, which the render copies without encoding it again; the video is
    checked for its length, size and codecs."""
    if (done := await finished_result(deps, ctx)) is not None:
        return done
    await ctx.stage("render_start")
    with as_job_errors():
        parts = [
            await input_file(deps, ctx, file_id, field=f"clip_file_ids.{i}", types=frozenset({MP4}))
            for i, file_id in enumerate(data.clip_file_ids)
        ]
        music = None
        if data.music_file_id is not None:
            music = await input_file(deps, ctx, data.music_file_id, field="music_file_id", types=sniff.AUDIO)
            # A pipeline's song is a project's audio asset, checked when it was uploaded: one process start less.
            if not (data.music_checked and is_child(ctx.job)):
                await check_audio(music.path, deps.limits.max_audio_s, decodes=deps.song_decodes, tenant=ctx.tenant)
        music_track = None
        # The pipeline's, made by its last clip and matched to the clips' length there; a caller's is not
        # decoded here, so not taken.
        if data.music_track_file_id is not None and is_child(ctx.job):
            track = await input_file(
                deps, ctx, data.music_track_file_id, field="music_track_file_id", types=frozenset({M4A})
            )
            music_track = track.path
        await deps.encoders.get()  # a required encoder that does not work here fails the job before any work
        async with deps.workspaces.open(ctx.id) as work:
            await ctx.stage("render_concat")
            part = work.part("video.mp4")
            rendered, _ = await deps.encoders.run(
                lambda encoder: clips.render_final(
                    [clip.path for clip in parts],
                    music.path if music else None,
                    part,
                    frame=data.size,
                    fps=data.fps,
                    progress=progress_between(ctx, *GENERATE),
                    threads=deps.ffmpeg_threads,
                    encoder=encoder,
                    known=_known_clips(ctx, data),
                    music_track=music_track,
                )
            )
            total_s = rendered.duration_s
            await ctx.stage("render_finalize")
            await check_video(part, Expected(data.size, total_s, audio=True), "video")
            poster_part = work.part("poster.jpg")
            # At the time extract_poster would pick, from the length just checked: no probe of the video again.
            await clips.extract_poster(part, poster_part, at_s=min(clips.POSTER_AT_S, total_s / 2))
            video, poster = work.finish(part), work.finish(poster_part)

            def result(file_ids: list[str]) -> dict[str, Any]:
                width, height = data.size
                return {
                    "file_id": file_ids[0],
                    "poster_file_id": file_ids[1],
                    "kind": RENDER,
                    "duration_s": round(total_s, 3),
                    "width": width,
                    "height": height,
                    "clips_encoded_again": rendered.clips_encoded,
                    "music_track_copied": rendered.music_track_copied,
                }

            stored = await store_outputs(deps, ctx, [(video, MP4), (poster, JPEG)], result)
    await ctx.stage("render_done")
    return stored
