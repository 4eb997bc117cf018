"""A project's run through the API: the `pipeline` job and its stage children, with real ffmpeg at 320x180.
A run that succeeds leaves the video, the poster and the project's own files; one that is canceled or
fails leaves nothing of its own (no clip, work directory, part file or ffmpeg process)."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image
from tests.api.conftest import Api, MakeApi
from tests.helpers import eventually
from tests.media_helpers import logged_ffprobe, make_model, photo_bytes, processes_mentioning, song_bytes, started

from inferline import db
from inferline.jobs.children import key_prefix
from inferline.jobs.model import TERMINAL_STATUSES
from inferline.jobs.store import JobStore
from inferline.media.pipeline import clip_facts
from inferline.media.probe import probe
from inferline.schema import files

CAPTIONS = ["할머니의 젊은 날", "1965년 여름, 부산", "손주들과 함께"]
RUN = {"resolution": "180p", "fps": 10, "photo_s": 1, "transition_s": 6}


async def new_project(api: Api, tmp_path: Path, photos: int, *, song_s: float | None = None) -> str:
    made = await api.client.post(
        "/api/v1/projects", json={"name": "추모", "title": "김순자", "subtitle": "1941 \u2013 2026"}
    )
    assert made.status_code == 201, made.text
    project_id: str = made.json()["id"]
    for number in range(photos):
        data = photo_bytes(tmp_path, number, (480, 640) if number % 2 else (640, 360))
        caption = {"caption": CAPTIONS[number % len(CAPTIONS)]}
        response = await api.client.post(
            f"/api/v1/projects/{project_id}/assets", files={"file": (f"{number}.jpg", data)}, data=caption
        )
        assert response.status_code == 201, response.text
    if song_s is not None:
        response = await api.client.post(
            f"/api/v1/projects/{project_id}/assets", files={"file": ("song.wav", song_bytes(song_s))}
        )
        assert response.status_code == 201, response.text
    return project_id


async def run(api: Api, project_id: str, **options: Any) -> dict[str, Any]:
    response = await api.client.post(f"/api/v1/projects/{project_id}/run", json=RUN | options)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def children_of(api: Api, job_id: str) -> list[Any]:
    async with db.read(api.services.engine) as conn:
        return await JobStore(conn).by_key_prefix("default", key_prefix(job_id))


async def file_ids(api: Api) -> set[str]:
    async with db.read(api.services.engine) as conn:
        return set((await conn.execute(sa.select(files.c.id))).scalars())


async def asset_file_ids(api: Api, project_id: str) -> set[str]:
    assets = (await api.client.get(f"/api/v1/projects/{project_id}/assets")).json()["items"]
    return {asset["file_id"] for asset in assets}


def leftovers(api: Api) -> list[str]:
    root = api.services.media.work_root
    found = [str(path) for path in root.rglob("*")] if root.exists() else []
    return found + processes_mentioning(str(root))


@pytest.fixture
async def media_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    async with make_api(workers=2, database_url=database_url, media_ffmpeg_threads=1) as api:
        yield api


async def test_a_projects_photos_with_korean_captions_and_its_song_become_its_video(
    media_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = media_api
    project_id = await new_project(api, tmp_path, 3, song_s=5.0)
    path, probes = logged_ffprobe(tmp_path / "bin")
    monkeypatch.setenv("PATH", path)
    job = await run(api, project_id)
    seen: list[float] = []

    async def current() -> dict[str, Any]:
        found: dict[str, Any] = (await api.client.get(f"/api/v1/jobs/{job['id']}")).json()
        seen.append(found["progress"])
        return found

    done = await eventually(current, lambda found: found["status"] in TERMINAL_STATUSES, timeout_s=60, interval_s=0.05)
    assert done["status"] == "succeeded", done
    assert (done["stage"], done["progress"]) == ("pipeline_done", 100)
    assert seen == sorted(seen) and len(set(seen)) > 3  # the children's progress, rising
    result = done["result"]
    assert result["photos"] == 3 and result["duration_s"] == pytest.approx(3 * 1 + 2 * 6 + 6, abs=0.1)
    # Each transition started and ended on the frames its clips' encodes wrote: no clip decoded for them.
    made = {"generator": "xfade", "fallback_reason": "no frame interpolation model is configured", "stills_decoded": 0}
    assert result["transitions"] == [made] * 2
    # Each clip probed once, by the stage that made it (the render joins them as checked and the song as
    # checked at its upload), the song's track once, by the last clip that laid it, then the video by the
    # render, which copied that track.
    assert started(probes) == 3 + 2 + 1 + 1 + 1

    project = (await api.client.get(f"/api/v1/projects/{project_id}")).json()
    assert (project["video_file_id"], project["poster_file_id"]) == (result["video_file_id"], result["poster_file_id"])
    video = await api.client.get(f"/api/v1/projects/{project_id}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "video.mp4").write_bytes(video.content)
    info = await probe(tmp_path / "video.mp4")
    assert (info.width, info.height, info.video_codec, info.audio_codec) == (320, 180, "h264", "aac")
    assert abs(info.duration_s - 21) <= 0.1
    poster = await api.client.get(f"/api/v1/projects/{project_id}/poster")
    assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"

    children = await children_of(api, job["id"])
    assert sorted(child.kind for child in children) == ["canvas"] * 3 + ["last_clip", "render"] + ["transition"] * 2
    assert all(child.status.value == "succeeded" and child.attempts == 1 for child in children)
    [render] = [child for child in children if child.kind == "render"]
    assert render.result["music_track_copied"]  # the song the last clip laid beside its card, not laid again
    # Only the project's own files remain: its photos and song, the video and the poster.
    kept = await asset_file_ids(api, project_id) | {result["video_file_id"], result["poster_file_id"]}
    assert await file_ids(api) == kept
    assert leftovers(api) == []


@pytest.mark.parametrize("stage", ["canvas", "transition", "last_clip", "render"])
async def test_a_run_canceled_in_any_stage_ends_canceled_and_leaves_nothing_behind(
    make_api: MakeApi, tmp_path: Path, stage: str
) -> None:
    async with make_api(workers=2, media_ffmpeg_threads=1) as api:
        project_id = await new_project(api, tmp_path, 2, song_s=3.0)
        # Long enough at 30 fps that each stage is still at work when the cancel comes.
        job = await run(api, project_id, fps=30, photo_s=4, transition_s=10)
        await api.wait(
            job["id"], lambda found: found["stage"] == f"pipeline_{stage}" or found["status"] in TERMINAL_STATUSES
        )
        canceled = await api.client.post(f"/api/v1/projects/{project_id}/cancel")
        assert canceled.status_code == 200, canceled.text
        done = await api.wait(job["id"])
        assert (done["status"], done["stage"]) == ("canceled", f"pipeline_{stage}")
        children = await children_of(api, job["id"])
        assert all(child.status.is_terminal for child in children)
        assert any(child.status.value == "canceled" for child in children)
        assert await file_ids(api) == await asset_file_ids(api, project_id)
        assert leftovers(api) == []
        project = (await api.client.get(f"/api/v1/projects/{project_id}")).json()
        assert project["status"] == "canceled" and project["video_file_id"] is None


async def test_a_failed_stage_fails_the_run_with_its_reason_and_leaves_nothing_behind(
    make_api: MakeApi, tmp_path: Path
) -> None:
    # Three photos, and room for two more files: the second clip made is over the quota.
    async with make_api(workers=1, files_max_per_tenant=5, media_ffmpeg_threads=1) as api:
        project_id = await new_project(api, tmp_path, 3)
        done = await api.wait((await run(api, project_id))["id"])
        assert done["status"] == "failed" and done["attempts"] == 1, done
        assert "(canvas job " in done["error"]["message"]
        assert "file quota exceeded: 5 files stored, the limit is 5" in done["error"]["message"]
        assert await file_ids(api) == await asset_file_ids(api, project_id)
        assert leftovers(api) == []


async def test_a_run_with_a_frame_interpolation_model_makes_its_transitions_with_it(
    make_api: MakeApi, tmp_path: Path
) -> None:
    model = make_model(tmp_path / "model")
    settings = {"media_interpolation_model": str(model), "media_interpolation_depth": 2, "media_ffmpeg_threads": 1}
    async with make_api(workers=2, **settings) as api:
        project_id = await new_project(api, tmp_path, 2)
        done = await api.wait((await run(api, project_id, fps=5))["id"])
        assert done["status"] == "succeeded", done
        assert done["result"]["transitions"] == [
            {"generator": "interpolation", "fallback_reason": None, "stills_decoded": 0}
        ]
        poster = await api.client.get(f"/api/v1/projects/{project_id}/poster")
        with Image.open(io.BytesIO(poster.content)) as image:
            assert image.size == (320, 180)


def test_a_clip_result_of_an_earlier_version_gives_no_facts_so_the_render_probes_that_clip() -> None:
    checked = {"file_id": "c1", "kind": "canvas", "duration_s": 2.0, "width": 320, "height": 180}
    assert clip_facts(checked) is None  # no `fps`, and its length was the plan's, not measured
    facts = clip_facts(checked | {"fps": 10.0})
    assert facts is not None and (facts.duration_s, facts.width, facts.height, facts.fps) == (2.0, 320, 180, 10.0)


async def test_a_canceled_run_stops_its_running_ffmpeg_within_a_second_and_leaves_nothing(
    make_api: MakeApi, tmp_path: Path
) -> None:
    # A heartbeat far apart: the cancel stops the jobs this process runs at once, not at the next beat.
    async with make_api(workers=1, media_ffmpeg_threads=1, heartbeat_s=10.0) as api:
        project_id = await new_project(api, tmp_path, 2)
        job = await run(api, project_id, fps=30, photo_s=20, transition_s=10)
        root = str(api.services.media.work_root)
        await eventually(lambda: processes_mentioning(root), bool, timeout_s=30, interval_s=0.02)
        canceled_at = time.monotonic()
        canceled = await api.client.post(f"/api/v1/projects/{project_id}/cancel")
        assert canceled.status_code == 200, canceled.text
        await eventually(lambda: processes_mentioning(root), lambda found: not found, timeout_s=30, interval_s=0.02)
        stopped_s = time.monotonic() - canceled_at
        done = await api.wait(job["id"])
        ended_s = time.monotonic() - canceled_at
        assert done["status"] == "canceled"
        assert await file_ids(api) == await asset_file_ids(api, project_id)
        assert leftovers(api) == []
        print(f"ffmpeg stopped after {stopped_s:.2f} s, the run canceled after {ended_s:.2f} s")
        assert stopped_s <= 1.0 and ended_s <= 5.0
