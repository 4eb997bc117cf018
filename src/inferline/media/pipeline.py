"""The `pipeline` kind: a project's photos to its video, through the stage kinds run as its child jobs.

    pipeline_prepare      the plan: the project's photos in order, captions, durations, the song, the card
    pipeline_canvas       a `canvas` job per photo, in parallel
    pipeline_transition   a `transition` job between each two neighbouring clips
    pipeline_last_clip    the `last_clip` job: the title and subtitle over the first photo
    pipeline_render       the `render` job: the clips in order with the music, and the poster
    pipeline_done         the project shows the video and poster; the intermediate clips are deleted

Its progress is its children's, weighted by the seconds of video each makes. The plan and each finished
phase's results are checkpointed, and its children are found again by their roles (`ChildJobs`), so an
attempt after a crash keeps every finished clip and runs the interrupted stage again.

A run that ends for good without a video (canceled, past its deadline, failed) cancels its children, waits
for them to stop, and deletes the files they made: nothing of it is left. A run stopped by a shutdown or a
lost lease leaves them for its next attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from inferline import db
from inferline.clock import utcnow
from inferline.errors import NonRetryable
from inferline.files.service import remove_blobs
from inferline.files.store import delete_file_rows, stored_files
from inferline.jobs import heartbeats
from inferline.jobs.children import Child, ChildJobs, cancel_children, key_prefix
from inferline.jobs.context import LEASE_LOST, SHUTDOWN, JobContext
from inferline.jobs.model import Job, JobStatus
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest
from inferline.media.clips import TRACK_TOLERANCE_S, frame_count
from inferline.media.deps import MediaDeps
from inferline.media.encoders import LIBX264
from inferline.media.model import AssetKind
from inferline.media.options import (
    MAX_LAID_SONG_S,
    CanvasInput,
    ClipFacts,
    LastClipInput,
    PipelineInput,
    RenderInput,
    TransitionInput,
)
from inferline.media.stagefiles import delete_files, files_named
from inferline.media.stages import CANVAS, LAST_CLIP, RENDER, TRANSITION
from inferline.media.store import MediaStore
from inferline.shielding import despite_cancel

log = structlog.get_logger(__name__)

LAST_CLIP_S = 6.0
FIRST_FRAME, LAST_FRAME = "first_frame_file_id", "last_frame_file_id"  # in a canvas job's result
RENDER_WORK = 0.2  # the render copies the clips: its work per second of video, against making a clip's
CHILDREN_STOP_S = 30.0  # how long a run that ends waits for its canceled children to stop


@dataclass(frozen=True)
class Photo:
    file_id: str
    caption: str | None
    duration_s: float


@dataclass(frozen=True)
class Plan:
    """What the run makes, read from the project once (its first attempt) and checkpointed."""

    photos: list[Photo]
    title: str
    subtitle: str | None
    music_file_id: str | None

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Plan:
        return cls(**(value | {"photos": [Photo(**photo) for photo in value["photos"]]}))


PHASES = ("canvas", "transition", "last_clip", "render")


def phase_spans(photos_s: Sequence[float], transition_s: float) -> dict[str, tuple[float, float]]:
    """The share of the run's progress (1-99%) each phase fills: its part of the work, counted in seconds
    of video made (the render only copies the clips: RENDER_WORK)."""
    clips_s = sum(photos_s)
    transitions_s = transition_s * (len(photos_s) - 1)
    work = [clips_s, transitions_s, LAST_CLIP_S, RENDER_WORK * (clips_s + transitions_s + LAST_CLIP_S)]
    total = sum(work)
    spans, start = {}, 1.0
    for phase, seconds in zip(PHASES, work, strict=True):
        spans[phase] = (start, start + 98.0 * seconds / total)
        start = spans[phase][1]
    return spans


async def run_pipeline(deps: MediaDeps, ctx: JobContext, data: PipelineInput) -> dict[str, Any]:
    state = ctx.last_checkpoint or {}
    await ctx.stage("pipeline_prepare")
    if "plan" in state:
        plan = Plan.from_json(state["plan"])
    else:
        plan = await prepare(deps, ctx.tenant, data)
        await ctx.checkpoint({"plan": asdict(plan), "done": {}}, progress=1)
    run = _Run(deps, ctx, data, plan, dict(state.get("done") or {}))
    try:
        return await run.all_phases()
    except BaseException as exc:
        if _ends_the_run(ctx, exc):
            await despite_cancel(discard_children(deps, ctx))
        raise


async def prepare(deps: MediaDeps, tenant: str, data: PipelineInput) -> Plan:
    """The run's plan from the project's rows: its photos in order, the song asked for, the card's text."""
    async with db.read(deps.engine) as conn:
        store = MediaStore(conn)
        project = await store.project(tenant, data.project_id)
        if project is None:
            raise NonRetryable(f"project {data.project_id} not found")
        photos = await store.assets(project.id, AssetKind.IMAGE)
        song = await store.asset(project.id, data.music) if data.music else None
    if not photos:
        raise NonRetryable(f"project {project.id} has no photos")
    if data.music and (song is None or song.kind is not AssetKind.AUDIO):
        raise NonRetryable(f"music: {data.music} is not a song of project {project.id}")
    return Plan(
        photos=[Photo(asset.file_id, asset.caption, asset.duration_s or data.photo_s) for asset in photos],
        title=(project.title or project.name)[:100],
        subtitle=project.subtitle,
        music_file_id=song.file_id if song else None,
    )


class _Run:
    """One attempt's walk through the phases; `done` holds the results of the finished children by role."""

    def __init__(self, deps: MediaDeps, ctx: JobContext, data: PipelineInput, plan: Plan, done: dict[str, Any]):
        self.deps, self.ctx, self.data, self.plan, self.done = deps, ctx, data, plan, done
        self.children = ChildJobs(ctx, deps.submitter)
        self.spans = phase_spans([photo.duration_s for photo in plan.photos], data.transition_s)

    def _frame(self) -> dict[str, Any]:
        return {"resolution": self.data.resolution, "fps": self.data.fps}

    def _request(self, kind: str, data: CanvasInput | TransitionInput | LastClipInput | RenderInput) -> JobRequest:
        return JobRequest(kind, data.model_dump(mode="json"))

    async def all_phases(self) -> dict[str, Any]:
        photos = self.plan.photos
        canvases = [
            Child(f"canvas:{i}", self._request(CANVAS, self._canvas(i, photo)), weight=photo.duration_s)
            for i, photo in enumerate(photos)
        ]
        await self.phase("canvas", canvases)
        present = await self._stored_frames()
        transitions = [
            Child(f"transition:{i}", self._request(TRANSITION, self._transition(i, present)))
            for i in range(len(photos) - 1)
        ]
        await self.phase("transition", transitions)
        await self.drop_frames()
        music = self.plan.music_file_id
        song: dict[str, Any] = {}
        video_s = self._video_s() if music is not None else None
        if video_s is not None and video_s <= MAX_LAID_SONG_S:
            # The song laid by the last clip's job, beside its card: the render then only copies it.
            song = {"music_file_id": music, "music_video_s": video_s, "music_checked": True}
        closing = LastClipInput(
            title=self.plan.title,
            subtitle=self.plan.subtitle,
            background_file_id=photos[0].file_id,
            duration_s=LAST_CLIP_S,
            **song,
            **self._frame(),
        )
        await self.phase("last_clip", [Child("last_clip", self._request(LAST_CLIP, closing))])
        in_order = self._clips_in_order()
        track = await self._music_track(in_order) if music is not None else None
        render = RenderInput(
            clip_file_ids=[result["file_id"] for result in in_order],
            clips=[clip_facts(result) for result in in_order],
            music_file_id=music,
            music_checked=music is not None,
            **({"music_track_file_id": track} if track is not None else {}),
            **self._frame(),
        )
        await self.phase("render", [Child("render", self._request(RENDER, render))])
        return await self.finish()

    def _canvas(self, i: int, photo: Photo) -> CanvasInput:
        return CanvasInput(
            photo_file_id=photo.file_id,
            duration_s=photo.duration_s,
            caption=photo.caption,
            motion=i,
            end_frames=True,
            **self._frame(),
        )

    def _transition(self, i: int, present: set[str]) -> TransitionInput:
        before, after = self.done[f"canvas:{i}"], self.done[f"canvas:{i + 1}"]
        last, first = before.get(LAST_FRAME), after.get(FIRST_FRAME)
        return TransitionInput(
            from_file_id=before["file_id"],
            to_file_id=after["file_id"],
            # A clip made by an earlier version has none, and the tenant may have deleted one (a transition
            # naming a file that is gone could not be submitted): the transition decodes the clip instead.
            from_frame_file_id=last if last in present else None,
            to_frame_file_id=first if first in present else None,
            duration_s=self.data.transition_s,
            transition=self.data.transition,
            index=i,
            **self._frame(),
        )

    def _video_s(self) -> float | None:
        """The video's length as the render will join it: the clips made, as their stages measured them, and
        the closing card as planned (a whole number of frames). None where a result does not say (one of an
        earlier version): the render lays the song then."""
        made = _measured_s([result for role, result in self.done.items() if role != "last_clip"])
        return None if made is None else made + frame_count(LAST_CLIP_S, self.data.fps) / self.data.fps

    async def _music_track(self, in_order: list[dict[str, Any]]) -> str | None:
        """The song the last clip laid, where it lasts as the clips do (as their stages measured them) and is
        still stored (the tenant may have deleted it, as any file); else None, and the render lays the song
        itself."""
        last = self.done["last_clip"]
        track, track_s = last.get("music_track_file_id"), last.get("music_track_s")
        if not isinstance(track, str) or not isinstance(track_s, int | float):
            return None
        video_s = _measured_s(in_order)
        if video_s is None:
            return None
        if abs(track_s - video_s) > TRACK_TOLERANCE_S:
            log.warning("media_song_track_not_used", job_id=self.ctx.id, track_s=track_s, video_s=video_s)
            return None
        async with db.read(self.deps.engine) as conn:
            return track if await stored_files(conn, self.ctx.tenant, [track]) else None

    def _clips_in_order(self) -> list[dict[str, Any]]:
        """The results of the stages whose clips the video plays, in order."""
        count = len(self.plan.photos)
        order = []
        for i in range(count):
            order.append(self.done[f"canvas:{i}"])
            if i + 1 < count:
                order.append(self.done[f"transition:{i}"])
        return [*order, self.done["last_clip"]]

    async def phase(self, name: str, children: Sequence[Child]) -> None:
        """Run the phase's children (those an earlier attempt finished are skipped), then checkpoint."""
        await self.ctx.stage(f"pipeline_{name}")
        start, end = self.spans[name]
        waiting = [child for child in children if child.role not in self.done]
        if waiting:
            finished = await self.children.run(waiting, progress_from=start, progress_to=end)
            self.done |= {role: job.result for role, job in finished.items()}
            await self.ctx.checkpoint({"plan": asdict(self.plan), "done": self.done}, progress=end)

    def _frames(self) -> list[str]:
        """The clips' first and last frames, as their canvas jobs stored them."""
        return [
            result[key]
            for role, result in self.done.items()
            if role.startswith("canvas:")
            for key in (FIRST_FRAME, LAST_FRAME)
            if isinstance(result.get(key), str)
        ]

    async def _stored_frames(self) -> set[str]:
        frames = self._frames()
        if not frames:
            return set()
        async with db.read(self.deps.engine) as conn:
            return await stored_files(conn, self.ctx.tenant, frames)

    async def drop_frames(self) -> None:
        """The clips' first and last frames, once the transitions that read them are made: a run of many
        photos would hold two uncompressed frames per photo until its end otherwise."""
        await delete_files(self.deps, self.ctx.tenant, self._frames())  # gone ones (a resumed run) are skipped

    async def finish(self) -> dict[str, Any]:
        """The project shows its new video and poster (its earlier ones and the clips are deleted)."""
        render = self.done["render"]
        clips = files_made([result for role, result in self.done.items() if role != "render"])
        tenant = self.ctx.tenant
        async with db.write(self.deps.engine) as conn:
            store = MediaStore(conn)
            project = await store.project(tenant, self.data.project_id, lock=True)
            if project is None:
                raise NonRetryable(f"project {self.data.project_id} was deleted while it ran")
            earlier = [file_id for file_id in (project.video_file_id, project.poster_file_id) if file_id]
            await store.set_output(
                project.id, video_file_id=render["file_id"], poster_file_id=render["poster_file_id"], now=utcnow()
            )
            released = await delete_file_rows(conn, tenant, earlier + clips)  # one transaction with the new video
        await remove_blobs(self.deps.engine, self.deps.blobs, released)
        await self.ctx.stage("pipeline_done")
        return {
            "project_id": self.data.project_id,
            "video_file_id": render["file_id"],
            "poster_file_id": render["poster_file_id"],
            "duration_s": render["duration_s"],
            "photos": len(self.plan.photos),
            "transitions": [
                {
                    "generator": result["generator"],
                    "fallback_reason": result["fallback_reason"],
                    "stills_decoded": result.get("stills_decoded"),  # none in a result of an earlier version
                }
                for role, result in sorted(self.done.items(), key=lambda item: _role_order(item[0]))
                if role.startswith("transition:")
            ],
        }


def _measured_s(results: Sequence[dict[str, Any]]) -> float | None:
    """The clips' lengths added up, as their stages measured them; None if a result does not say (one of
    an earlier version)."""
    seconds = [each for result in results if isinstance(each := result.get("duration_s"), int | float)]
    return float(sum(seconds)) if len(seconds) == len(results) else None


def clip_facts(result: dict[str, Any]) -> ClipFacts | None:
    """The clip as its stage's `result` says it checked it; None for a result without all of it (one of an
    earlier version had no `fps`, and its length was the plan's): the render probes that clip."""
    try:
        facts = {key: result[key] for key in ("duration_s", "width", "height", "fps")}
        # A result without `encoder` is of an earlier version, all of whose clips were x264's.
        made_by = {"encoder": result.get("encoder", LIBX264.name), "parameter_sets": result.get("parameter_sets")}
        return ClipFacts.model_validate(facts | made_by)
    except (KeyError, ValueError):
        return None


def _role_order(role: str) -> tuple[str, int]:
    name, _, number = role.partition(":")
    return name, int(number or 0)


def _ends_the_run(ctx: JobContext, exc: BaseException) -> bool:
    """Whether this attempt is the run's last: no later attempt will use what its children made."""
    if ctx.cancel_reason in (SHUTDOWN, LEASE_LOST):
        return False
    if ctx.cancel_reason is not None:  # canceled, or past its deadline
        return True
    if not isinstance(exc, Exception):  # torn down from outside (its worker's loop ending)
        return False
    return isinstance(exc, NonRetryable) or ctx.attempt >= ctx.job.max_attempts


async def discard_children(deps: MediaDeps, ctx: JobContext) -> None:
    """Cancel the run's unfinished children, wait until they all have stopped (a stopped stage removes its
    own work directory and any file it was storing), then delete the files the finished ones made."""
    async with db.write(deps.engine) as conn:
        canceled = await cancel_children(conn, tenant=ctx.tenant, parent_id=ctx.id)
    heartbeats.stop_here(deps.engine, (job.id for job in canceled if job.status is JobStatus.RUNNING))
    children = await _children_stopped(deps, ctx)
    made = files_made([job.result for job in children if job.status is JobStatus.SUCCEEDED and job.result])
    # A child whose worker was killed while it stored its files named them in its checkpoint first; canceled
    # now, no later attempt of it deletes them (`stagefiles.store_outputs`).
    made += [file_id for job in children for file_id in files_named(job.checkpoint) if file_id not in made]
    await delete_files(deps, ctx.tenant, made)
    log.info("media_pipeline_discarded", job_id=ctx.id, children=len(children), files=len(made))


def files_made(results: Sequence[dict[str, Any]]) -> list[str]:
    """The ids of the files the stages' `results` name (each `..._file_id`: a clip, its frames, a poster)."""
    return [
        value
        for result in results
        for key, value in result.items()
        if key.endswith("file_id") and isinstance(value, str)
    ]


async def _children_stopped(deps: MediaDeps, ctx: JobContext) -> list[Job]:
    deadline = time.monotonic() + CHILDREN_STOP_S
    while True:
        async with db.read(deps.engine) as conn:
            children = await JobStore(conn).by_key_prefix(ctx.tenant, key_prefix(ctx.id))
        if all(job.status.is_terminal for job in children) or time.monotonic() > deadline:
            return children
        await asyncio.sleep(0.1)
