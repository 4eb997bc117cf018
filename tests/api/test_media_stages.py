"""The media stage kinds (`canvas`, `transition`, `last_clip`, `render`) on their own: tenant files in, a
tenant file out, with real ffmpeg at 320x180. The stages run in a `MemoryContext` over the app's real
services (to see every stage they report) or as jobs through `POST /api/v1/jobs`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image
from pydantic import ValidationError
from tests.api.conftest import Api, MakeApi
from tests.helpers import eventually
from tests.media_helpers import (
    decoded_frame,
    difference,
    logged_ffprobe,
    make_model,
    mp3_parts_of_other_formats,
    photo_bytes,
    processes_mentioning,
    song_bytes,
    started,
)

from inferline import db
from inferline.errors import NonRetryable
from inferline.jobs.children import child_key
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus
from inferline.jobs.store import JobStore
from inferline.jobs.testing import MemoryContext
from inferline.media import encoders, images
from inferline.media import workspace as workspace_module
from inferline.media.encoders import NVENC, trial
from inferline.media.options import CanvasInput, ClipFacts, LastClipInput, RenderInput, TransitionInput
from inferline.media.pipeline import clip_facts, discard_children
from inferline.media.probe import probe
from inferline.media.stages import _beside, run_canvas, run_last_clip, run_render, run_transition
from inferline.schema import files

TENANT = "default"  # the admin key's tenant: `api.client`


async def upload(api: Api, data: bytes, name: str) -> str:
    response = await api.client.post("/api/v1/files", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    file_id: str = response.json()["id"]
    return file_id


async def file_of(api: Api, file_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/files/{file_id}")
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    return info


async def content(api: Api, file_id: str, out: Path) -> Path:
    response = await api.client.get(f"/api/v1/files/{file_id}/content")
    assert response.status_code == 200
    out.write_bytes(response.content)  # noqa: ASYNC240 (a test's own small file)
    return out


async def file_count(api: Api) -> int:
    async with db.read(api.services.engine) as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(files))).scalar_one())


def leftovers(api: Api) -> list[str]:
    """What media jobs left: work directories, part files, ffmpeg processes working in them."""
    root = api.services.media.work_root
    found = [str(path) for path in root.rglob("*")] if root.exists() else []
    return found + processes_mentioning(str(root))


@pytest.fixture
async def media_api(make_api: MakeApi) -> AsyncIterator[Api]:
    async with make_api(workers=2, media_ffmpeg_threads=1) as api:
        yield api


def seed_stages(stage: str, middle: str, last: str) -> list[str]:
    return [f"{stage}_start", f"{stage}_{middle}", f"{stage}_{last}", f"{stage}_done"]


async def test_the_stages_make_clips_a_transition_a_closing_card_and_the_video_reporting_the_seeds_stages(
    media_api: Api, tmp_path: Path
) -> None:
    api, deps = media_api, media_api.services.media
    photos = [
        await upload(api, photo_bytes(tmp_path, 0), "a.jpg"),
        await upload(api, photo_bytes(tmp_path, 1, (640, 360), "PNG"), "b.png"),
    ]
    clips, contexts = [], []
    for number, photo in enumerate(photos):
        ctx = MemoryContext(tenant=TENANT)
        data = CanvasInput(
            photo_file_id=photo,
            resolution="180p",
            fps=10,
            duration_s=2,
            caption="할머니와 함께",
            motion=number,
            end_frames=True,
        )
        clips.append(await run_canvas(deps, ctx, data))
        contexts.append(ctx)
    assert contexts[0].stages == seed_stages("canvas", "generate", "validate")
    assert contexts[0].percents == sorted(contexts[0].percents) and contexts[0].percents[-1] >= 85
    ids = {"file_id": None, "first_frame_file_id": None, "last_frame_file_id": None, "parameter_sets": None}
    encoder = (await deps.encoders.get()).name  # libx264 here; NVENC where ffmpeg can use it
    measured = {"kind": "canvas", "duration_s": 2.0, "width": 320, "height": 180, "fps": 10.0, "encoder": encoder}
    assert clips[0] | ids == ids | measured
    assert clips[0]["parameter_sets"] == clips[1]["parameter_sets"] != None  # noqa: E711 (its probe's hash)
    assert (await file_of(api, clips[0]["file_id"]))["content_type"] == "video/mp4"
    for key in ["first_frame_file_id", "last_frame_file_id"]:
        assert (await file_of(api, clips[0][key]))["content_type"] == "image/x-portable-pixmap"

    ctx = MemoryContext(tenant=TENANT)
    data = TransitionInput(
        from_file_id=clips[0]["file_id"],
        to_file_id=clips[1]["file_id"],
        from_frame_file_id=clips[0]["last_frame_file_id"],
        to_frame_file_id=clips[1]["first_frame_file_id"],
        resolution="180p",
        fps=5,
    )
    transition = await run_transition(deps, ctx, data)
    assert ctx.stages == seed_stages("transition", "generate", "validate")
    made = [transition[key] for key in ("generator", "fallback_reason", "duration_s", "stills_decoded")]
    assert made == ["xfade", "no frame interpolation model is configured", 6.0, 0]

    ctx = MemoryContext(tenant=TENANT)
    data = LastClipInput(
        title="김순자",
        subtitle="1941 \u2013 2026",
        background_file_id=photos[0],
        resolution="180p",
        fps=10,
        duration_s=3,
    )
    closing = await run_last_clip(deps, ctx, data)
    assert ctx.stages == seed_stages("last_clip", "generate", "finalize")
    # Without a photo: the plain dark card, which its picture check would read as black.
    plain = await run_last_clip(
        deps, MemoryContext(tenant=TENANT), data.model_copy(update={"background_file_id": None})
    )
    assert plain["duration_s"] == 3.0

    song = await upload(api, song_bytes(4.0), "song.wav")
    order = [clips[0]["file_id"], transition["file_id"], clips[1]["file_id"], closing["file_id"]]
    ctx = MemoryContext(tenant=TENANT)
    # The transition was made at 5 fps: the render encodes it again to match the others.
    video = await run_render(deps, ctx, RenderInput(clip_file_ids=order, music_file_id=song, resolution="180p", fps=10))
    assert ctx.stages == seed_stages("render", "concat", "finalize")
    assert video["duration_s"] == pytest.approx(2 + 6 + 2 + 3, abs=0.1)
    assert video["clips_encoded_again"] == 1
    info = await probe(await content(api, video["file_id"], tmp_path / "video.mp4"))
    assert (info.width, info.height, info.video_codec, info.audio_codec) == (320, 180, "h264", "aac")
    assert abs(info.duration_s - 13) <= 0.1
    assert (await file_of(api, video["poster_file_id"]))["content_type"] == "image/jpeg"
    with Image.open(await content(api, video["poster_file_id"], tmp_path / "poster.jpg")) as poster:
        assert poster.size == (320, 180)
    assert not video["music_track_copied"]

    # A last clip asked to lay the song (as a pipeline's is) stores it beside its card, for a render to copy.
    laying = await run_last_clip(
        deps, MemoryContext(tenant=TENANT), data.model_copy(update={"music_file_id": song, "music_video_s": 13.0})
    )
    assert (await file_of(api, laying["music_track_file_id"]))["content_type"] == "audio/mp4"
    assert laying["music_track_s"] == pytest.approx(13.0, abs=0.03)
    # A caller's render does not take a track it names (a render copies only the pipeline's, never decoded).
    given = RenderInput(
        clip_file_ids=order, music_file_id=song, music_track_file_id=laying["music_track_file_id"], resolution="180p"
    )
    assert not (await run_render(deps, MemoryContext(tenant=TENANT), given.model_copy(update={"fps": 10})))[
        "music_track_copied"
    ]
    assert leftovers(api) == []


def test_an_input_without_a_song_is_stored_without_the_song_fields_an_older_worker_would_refuse() -> None:
    """A worker of an earlier version (a rolling upgrade) refuses a field it does not know, even null: the
    input as the job table stores it (`validate_input`'s dump) holds the song's fields only when used."""
    registry = KindRegistry()
    for kind, model in (("last_clip", LastClipInput), ("render", RenderInput)):
        registry.kind(kind, input_model=model)(lambda ctx, data: None)
    card = registry.validate_input("last_clip", {"title": "t", "resolution": "180p"})
    assert card == {"resolution": "180p", "fps": 30, "title": "t", "subtitle": None,
                    "background_file_id": None, "duration_s": 6.0}  # fmt: skip
    sung = registry.validate_input("last_clip", {"title": "t", "music_file_id": "f1", "music_video_s": 9.5})
    assert (sung["music_file_id"], sung["music_video_s"]) == ("f1", 9.5) and "music_checked" not in sung
    render = registry.validate_input("render", {"clip_file_ids": ["c1"], "music_file_id": "f1"})
    assert "music_track_file_id" not in render and render["music_file_id"] == "f1"
    assert registry.validate_input("render", render | {"music_track_file_id": "t1"})["music_track_file_id"] == "t1"


def test_a_last_clip_lays_a_song_only_knowing_the_videos_length() -> None:
    with pytest.raises(ValidationError, match="music_file_id and music_video_s: give both or neither"):
        LastClipInput(title="t", music_file_id="f1")


async def test_a_stage_runs_as_a_job_of_its_own_and_another_tenants_photo_is_not_found(
    media_api: Api, tmp_path: Path
) -> None:
    api = media_api
    photo = await upload(api, photo_bytes(tmp_path, 2), "c.jpg")
    body = {"photo_file_id": photo, "resolution": "180p", "fps": 10, "duration_s": 1}
    done = await api.wait((await api.submit(kind="canvas", input=body))["id"])
    assert done["status"] == "succeeded", done
    assert done["stage"] == "canvas_done" and done["progress"] == 100
    assert (await file_of(api, done["result"]["file_id"]))["size"] > 0
    # A clip made on its own stores no end frames (only a pipeline asks, and deletes them): nothing left over.
    assert "first_frame_file_id" not in done["result"] and "last_frame_file_id" not in done["result"]
    stored = {file["id"] for file in (await api.client.get("/api/v1/files")).json()["items"]}
    assert stored == {done["result"]["file_id"], photo}

    # The photo is a `FileId` of the kind's input: another tenant naming it is refused at submission.
    refused = await api.other.post("/api/v1/jobs", json={"kind": "canvas", "input": body})
    assert refused.status_code == 404 and refused.json()["detail"] == f"file {photo} not found"
    assert (await api.other.get("/api/v1/jobs")).json()["items"] == []
    assert leftovers(api) == []


async def test_a_stage_where_the_required_encoder_does_not_work_fails_saying_why(
    make_api: MakeApi, tmp_path: Path
) -> None:
    if await trial(NVENC) is None:
        pytest.skip("NVENC works on this machine")
    async with make_api(workers=1, media_video_encoder="h264_nvenc") as api:
        photo = await upload(api, photo_bytes(tmp_path, 2), "c.jpg")
        body = {"photo_file_id": photo, "resolution": "180p", "fps": 10, "duration_s": 1}
        done = await api.wait((await api.submit(kind="canvas", input=body))["id"])
        assert done["status"] == "failed" and done["attempts"] == 1  # not retried: the machine stays as it is
        assert done["error"]["message"].startswith(
            "media_video_encoder is h264_nvenc, which ffmpeg cannot use here: ffmpeg"
        )
        assert await file_count(api) == 1 and leftovers(api) == []


async def test_a_clip_whose_nvenc_encode_fails_after_the_trial_is_made_by_x264_and_says_so(
    media_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if await trial(NVENC) is None:
        pytest.skip("NVENC works on this machine")

    async def passed(encoder: object, **_: float) -> str | None:
        return None  # the trial passed; the encode then fails (here: no driver at all)

    monkeypatch.setattr(encoders, "trial", passed)
    photo = await upload(media_api, photo_bytes(tmp_path, 4), "d.jpg")
    data = CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1)
    made = await run_canvas(media_api.services.media, MemoryContext(tenant=TENANT), data)
    assert (await media_api.services.media.encoders.get()).name == "h264_nvenc"  # still the process's choice
    assert made["encoder"] == "libx264" and made["duration_s"] == 1.0


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (
            "notes.jpg",
            b"not a photo at all\n" * 10,
            "photo_file_id: file {id} is text/plain, not image/heic, image/jpeg, image/png, image/webp",
        ),
        ("cut.jpg", None, "the image is truncated or corrupt"),
    ],
)
async def test_a_photo_that_is_not_one_fails_its_canvas_clearly_and_leaves_nothing(
    media_api: Api, tmp_path: Path, name: str, data: bytes | None, reason: str
) -> None:
    api = media_api
    payload = data if data is not None else photo_bytes(tmp_path, 3)[:2000]
    photo = await upload(api, payload, name)
    before = await file_count(api)
    with pytest.raises(NonRetryable) as failed:
        await run_canvas(
            api.services.media, MemoryContext(tenant=TENANT), CanvasInput(photo_file_id=photo, resolution="180p")
        )
    assert str(failed.value).startswith(reason.format(id=photo))
    assert await file_count(api) == before and leftovers(api) == []


async def test_a_canceled_stage_stops_ffmpeg_and_leaves_no_file_no_work_directory_and_no_part(
    media_api: Api, tmp_path: Path
) -> None:
    api = media_api
    photo = await upload(api, photo_bytes(tmp_path, 4), "d.jpg")
    before = await file_count(api)
    ctx = MemoryContext(tenant=TENANT)
    data = CanvasInput(photo_file_id=photo, resolution="180p", fps=30, duration_s=60)
    task = asyncio.create_task(run_canvas(api.services.media, ctx, data))
    await eventually(
        lambda: (
            task.done() or ("canvas_generate" in ctx.stages and processes_mentioning(str(api.services.media.work_root)))
        ),
        timeout_s=60.0,
        interval_s=0.02,
    )
    assert not task.done(), task
    ctx.cancel()
    task.cancel()
    started = asyncio.get_running_loop().time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.get_running_loop().time() - started < 1.0
    assert await file_count(api) == before and leftovers(api) == []


async def test_a_stage_asked_to_stop_since_its_last_heartbeat_ends_without_its_files(
    media_api: Api, tmp_path: Path
) -> None:
    # A pipeline's child whose cancel its worker has not yet seen (the pipeline marked it and stopped waiting).
    api = media_api
    photo = await upload(api, photo_bytes(tmp_path, 4), "d.jpg")
    before = await file_count(api)
    job = replace(Job.running_now(kind="canvas", tenant=TENANT), cancel_requested=True)
    async with db.write(api.services.engine) as conn:
        await JobStore(conn).add([job])
    data = CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1, end_frames=True)
    with pytest.raises(NonRetryable, match="canceled"):
        await run_canvas(api.services.media, MemoryContext(job), data)
    assert await file_count(api) == before and leftovers(api) == []
    # Not asked to stop: the same stage stores its clip and frames.
    other = Job.running_now(kind="canvas", tenant=TENANT)
    async with db.write(api.services.engine) as conn:
        await JobStore(conn).add([other])
    await run_canvas(api.services.media, MemoryContext(other), data)
    assert await file_count(api) == before + 3


async def test_a_stage_stopped_while_its_photo_decodes_removes_its_directory_only_after_the_decode_ends(
    media_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread cannot be stopped: a photo's decode still writing into the work directory while the stopped
    stage removed it left the file and the directory behind (seen once in the suite). The stage now waits
    for the decode to end before its directory goes."""
    api = media_api
    photo = await upload(api, photo_bytes(tmp_path, 9), "h.jpg")
    started, events = threading.Event(), []
    real_normalize, real_remove = images.normalize_photo, workspace_module._remove

    def slow_normalize(*args: Any, **kwargs: Any) -> Any:
        started.set()
        time.sleep(0.3)  # still decoding when the stage is stopped
        result = real_normalize(*args, **kwargs)
        events.append("decoded")
        return result

    def recorded_remove(path: Path) -> None:
        if path.parent == api.services.media.work_root:
            events.append("removed")
        real_remove(path)

    monkeypatch.setattr(images, "normalize_photo", slow_normalize)
    monkeypatch.setattr(workspace_module, "_remove", recorded_remove)
    data = CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1, end_frames=True)
    stage = asyncio.create_task(run_canvas(api.services.media, MemoryContext(tenant=TENANT), data))
    await eventually(started.is_set)
    stage.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stage
    assert events == ["decoded", "removed"] and leftovers(api) == []


async def test_an_output_past_the_tenants_quota_fails_the_stage_and_leaves_nothing(
    make_api: MakeApi, tmp_path: Path
) -> None:
    async with make_api(workers=1, files_max_per_tenant=1) as api:
        photo = await upload(api, photo_bytes(tmp_path, 5), "e.jpg")
        with pytest.raises(NonRetryable, match=r"file quota exceeded: 1 files stored, the limit is 1"):
            data = CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1)
            await run_canvas(api.services.media, MemoryContext(tenant=TENANT), data)
        assert await file_count(api) == 1 and leftovers(api) == []
        assert list((api.services.settings.data_dir / "blobs" / "tmp").iterdir()) == []


async def test_an_attempt_after_the_output_was_stored_returns_it_without_making_it_again(
    media_api: Api, tmp_path: Path
) -> None:
    api = media_api
    photo = await upload(api, photo_bytes(tmp_path, 6), "f.jpg")
    data = CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1)
    first = MemoryContext(tenant=TENANT)
    made = await run_canvas(api.services.media, first, data)
    again = MemoryContext(tenant=TENANT, attempt=2, last_checkpoint=first.checkpoints[-1])
    assert await run_canvas(api.services.media, again, data) == made
    assert again.stages == []

    await api.client.delete(f"/api/v1/files/{made['file_id']}")  # gone since: made again
    assert (await run_canvas(api.services.media, again, data))["file_id"] != made["file_id"]


class KilledBeforeItsResult(MemoryContext):
    """Stops for good where a kill of its process between storing its files and checkpointing its result
    would: the files' rows are written, the result is not."""

    def __init__(self) -> None:
        super().__init__(tenant=TENANT)
        self.reached = asyncio.Event()

    async def checkpoint(self, state: Any, *, progress: float | None = None) -> None:
        if "result" in state:
            self.reached.set()
            await asyncio.Event().wait()
        await super().checkpoint(state, progress=progress)


async def test_the_files_a_killed_attempt_stored_are_deleted_by_the_next_or_by_its_canceled_run(
    media_api: Api, tmp_path: Path
) -> None:
    api, deps = media_api, media_api.services.media
    photo = await upload(api, photo_bytes(tmp_path, 8), "h.jpg")
    data = CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1, end_frames=True)
    killed = KilledBeforeItsResult()
    attempt = asyncio.create_task(run_canvas(deps, killed, data))
    await asyncio.wait_for(killed.reached.wait(), 60)
    left = killed.checkpoints[-1]
    assert sorted(left) == ["storing"] and len(left["storing"]) == 3  # the clip and its two frames
    assert await file_count(api) == 1 + 3

    again = MemoryContext(tenant=TENANT, attempt=2, last_checkpoint=left)
    made = await run_canvas(deps, again, data)
    stored = {file["id"] for file in (await api.client.get("/api/v1/files")).json()["items"]}
    assert stored == {photo, made["file_id"], made["first_frame_file_id"], made["last_frame_file_id"]}
    assert stored.isdisjoint(left["storing"])

    # No attempt follows a child of a canceled run: the run deletes what the child's checkpoint names.
    attempt.cancel()  # (its own cleanup would have: a killed process runs none)
    with pytest.raises(asyncio.CancelledError):
        await attempt
    other = await upload(api, photo_bytes(tmp_path, 9), "i.jpg")
    parent = Job.running_now(kind="pipeline", tenant=TENANT)
    child = replace(
        Job.running_now(kind="canvas", tenant=TENANT),
        status=JobStatus.CANCELED,
        idempotency_key=child_key(parent.id, "canvas:0"),
        checkpoint={"storing": [other]},
    )
    async with db.write(api.services.engine) as conn:
        await JobStore(conn).add([child])
    await discard_children(deps, MemoryContext(parent))
    assert await file_count(api) == 4 and leftovers(api) == []


async def test_a_pipelines_render_joins_its_clips_as_their_stages_checked_them_and_probes_only_the_rest(
    media_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, deps = media_api, media_api.services.media
    photo = await upload(api, photo_bytes(tmp_path, 7), "g.jpg")
    made = [
        await run_canvas(
            deps,
            MemoryContext(tenant=TENANT),
            CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1, motion=number),
        )
        for number in range(3)
    ]
    facts = [
        ClipFacts.model_validate({key: clip[key] for key in ("duration_s", "width", "height", "fps")}) for clip in made
    ]
    # A result of a version before encoders were recorded: its clip was x264's.
    made_by = {"encoder": made[0]["encoder"], "parameter_sets": made[0]["parameter_sets"]}
    assert clip_facts(made[0]) == facts[0].model_copy(update=made_by)
    older = {key: value for key, value in made[0].items() if key not in made_by}
    assert clip_facts(older) == facts[0].model_copy(update={"encoder": "libx264"})
    # A newer version's pipeline may know more of a clip (a rolling upgrade): what this one does not know is
    # left out, not a failed render.
    assert ClipFacts.model_validate(facts[0].model_dump() | {"loudness_lufs": -16.0}) == facts[0]
    path, log = logged_ffprobe(tmp_path / "bin")
    monkeypatch.setenv("PATH", path)
    # The last clip as a result of an earlier version holds it (no facts): that one is probed.
    data = RenderInput(
        clip_file_ids=[clip["file_id"] for clip in made], clips=[*facts[:2], None], resolution="180p", fps=10
    )
    child = replace(Job.running_now(kind="render", tenant=TENANT), idempotency_key=child_key("pipeline-job", "render"))
    video = await run_render(deps, MemoryContext(child), data)
    assert video["duration_s"] == pytest.approx(3.0, abs=0.01)
    assert started(log) == 2  # the clip without facts, then the video's check

    # A render a caller submits is not held to what its input claims of the clips: each is probed.
    log.unlink()
    await run_render(deps, MemoryContext(tenant=TENANT), data.model_copy(update={"clips": facts}))
    assert started(log) == 3 + 1


async def test_a_pipelines_render_trusts_the_song_it_says_was_checked_and_a_callers_render_probes_it(
    media_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, deps = media_api, media_api.services.media
    photo = await upload(api, photo_bytes(tmp_path, 7), "g.jpg")
    song = await upload(api, song_bytes(2.0), "song.wav")
    clip = await run_canvas(
        deps, MemoryContext(tenant=TENANT), CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1)
    )
    facts = ClipFacts.model_validate({key: clip[key] for key in ("duration_s", "width", "height", "fps")})
    path, log = logged_ffprobe(tmp_path / "bin")
    monkeypatch.setenv("PATH", path)
    data = RenderInput(
        clip_file_ids=[clip["file_id"]],
        clips=[facts],
        music_file_id=song,
        music_checked=True,
        resolution="180p",
        fps=10,
    )
    child = replace(Job.running_now(kind="render", tenant=TENANT), idempotency_key=child_key("pipeline-job", "render"))
    video = await run_render(deps, MemoryContext(child), data)
    assert video["duration_s"] == pytest.approx(1.0, abs=0.01)
    assert started(log) == 1  # the video's check only
    made = await probe(await content(api, video["file_id"], tmp_path / "video.mp4"))
    assert made.audio_codec == "aac"

    # A render a caller submits is not held to what its input claims of the song (nor of the clip): both probed.
    log.unlink()
    await run_render(deps, MemoryContext(tenant=TENANT), data)
    assert started(log) == 1 + 1 + 1


async def test_a_song_the_last_clip_cannot_lay_fails_no_card_and_leaves_nothing(media_api: Api, tmp_path: Path) -> None:
    """A pipeline's song that cannot be laid (two files of other formats joined: refused by the measure)
    is left to the render, which fails saying why; the card is made and stored as asked."""
    api, deps = media_api, media_api.services.media
    song = await upload(api, b"".join(await mp3_parts_of_other_formats(tmp_path, 1.0)), "joined.mp3")
    data = LastClipInput(
        title="김순자",
        resolution="180p",
        fps=10,
        duration_s=2,
        music_file_id=song,
        music_video_s=8.0,
        music_checked=True,
    )
    child = replace(Job.running_now(kind="last_clip", tenant=TENANT), idempotency_key=child_key("p", "last_clip"))
    made = await run_last_clip(deps, MemoryContext(child), data)
    assert "music_track_file_id" not in made and "changes its sample rate or channels" in made["music_track_error"]
    assert (await file_of(api, made["file_id"]))["content_type"] == "video/mp4"
    stored = {file["id"] for file in (await api.client.get("/api/v1/files")).json()["items"]}
    assert stored == {song, made["file_id"]}
    assert leftovers(api) == []


async def test_a_transition_decodes_the_clips_for_the_stills_it_is_not_given_or_that_are_gone(
    media_api: Api, tmp_path: Path
) -> None:
    api, deps = media_api, media_api.services.media
    clips = []
    for seed in (9, 10):
        photo = await upload(api, photo_bytes(tmp_path, seed), f"{seed}.jpg")
        data = CanvasInput(photo_file_id=photo, resolution="180p", fps=10, duration_s=1, motion=seed, end_frames=True)
        clips.append(await run_canvas(deps, MemoryContext(tenant=TENANT), data))
    frames = {"from_frame_file_id": clips[0]["last_frame_file_id"], "to_frame_file_id": clips[1]["first_frame_file_id"]}
    plain = {"from_file_id": clips[0]["file_id"], "to_file_id": clips[1]["file_id"], "resolution": "180p", "fps": 10}

    async def transition(**given: str) -> tuple[dict[str, Any], Path]:
        made = await run_transition(deps, MemoryContext(tenant=TENANT), TransitionInput(**plain, **given))
        return made, await content(api, made["file_id"], tmp_path / f"{made['file_id']}.mp4")

    stored, stored_clip = await transition(**frames)
    # A clip made before canvas stored its frames: both stills decoded from the clips, the same transition.
    older, older_clip = await transition()
    # The frame after deleted (a transition job retried after its run dropped the frames): that one decoded.
    assert (await api.client.delete(f"/api/v1/files/{frames['to_frame_file_id']}")).status_code == 204
    retried, retried_clip = await transition(**frames)
    # A file that is not a frame: decoded too, never read as one.
    not_a_frame = await upload(api, photo_bytes(tmp_path, 11), "11.jpg")
    wrong, _ = await transition(from_frame_file_id=not_a_frame)
    assert [made["stills_decoded"] for made in (stored, older, retried, wrong)] == [0, 2, 1, 2]
    last_index = 6 * 10 - 1  # 6 s at 10 fps
    for index in (0, last_index):
        expected = await decoded_frame(stored_clip, tmp_path / f"s{index}.png", index)
        for other in (older_clip, retried_clip):
            assert difference(expected, await decoded_frame(other, tmp_path / f"o{index}.png", index)) < 5
    assert leftovers(api) == []


@pytest.mark.parametrize("model", ["working", "broken"])
async def test_a_transition_job_is_made_by_the_interpolation_model_or_else_by_xfade_saying_why(
    make_api: MakeApi, tmp_path: Path, model: str
) -> None:
    folder = make_model(tmp_path / "model", middle="blend" if model == "working" else "wide")
    settings = {"media_interpolation_model": str(folder), "media_interpolation_depth": 2, "media_ffmpeg_threads": 1}
    async with make_api(workers=2, **settings) as api:
        photos = [await upload(api, photo_bytes(tmp_path, seed), f"{seed}.jpg") for seed in (7, 8)]
        canvases = []
        for photo in photos:
            body = {"photo_file_id": photo, "resolution": "180p", "fps": 5, "duration_s": 1, "end_frames": True}
            canvases.append(await api.wait((await api.submit(kind="canvas", input=body))["id"]))
        before, after = canvases[0]["result"], canvases[1]["result"]
        body = {
            "from_file_id": before["file_id"],
            "to_file_id": after["file_id"],
            "from_frame_file_id": before["last_frame_file_id"],
            "to_frame_file_id": after["first_frame_file_id"],
        }
        done = await api.wait(
            (await api.submit(kind="transition", input=body | {"resolution": "180p", "fps": 5}))["id"]
        )
    assert done["status"] == "succeeded", done
    made = (done["result"]["generator"], done["result"]["fallback_reason"], done["result"]["stills_decoded"])
    assert (
        made
        == {
            "working": ("interpolation", None, 0),
            "broken": ("xfade", "internal error (ModelError); the server log has it under transition_fallback", 0),
        }[model]
    )


async def test_a_stage_running_two_things_at_once_stops_and_awaits_the_other_when_one_fails_or_it_is_canceled() -> None:
    """`stages._beside` (the last clip's card and song): the first failure stops the other, which has ended
    before the error (its own, unchanged) reaches the stage; a cancel of the stage stops both alike."""
    ended: list[str] = []

    async def runs(name: str, seconds: float, error: Exception | None = None) -> str:
        try:
            await asyncio.sleep(seconds)
            if error is not None:
                raise error
            return name
        finally:
            ended.append(name)

    failure = NonRetryable("the card's encode failed")
    with pytest.raises(NonRetryable) as raised:
        await _beside(runs("card", 0.01, failure), runs("song", 30))
    assert raised.value is failure and sorted(ended) == ["card", "song"]
    assert await _beside(runs("card", 0.01), runs("song", 0.02)) == ("card", "song")
    assert await _beside(runs("card", 0.01), None) == ("card", None)

    ended.clear()
    stage = asyncio.create_task(_beside(runs("card", 30), runs("song", 30)))
    await asyncio.sleep(0.01)
    stage.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stage
    assert sorted(ended) == ["card", "song"]
