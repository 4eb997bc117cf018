"""Media projects through the API, on both engines: projects, their assets (hostile files too), runs (one
at a time), the rendered video with range requests, and the runtime view of any job.

No worker runs here (runs stay queued), so the tests never depend on the `pipeline` kind's own work:
`tests.plugins.pipeline_stub` stands in for it where the process has none."""

from __future__ import annotations

import asyncio
import io
import shutil
import struct
import subprocess
import time
import wave
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image
from tests.api.conftest import Api, MakeApi
from tests.hostile_media import hostile_jpeg, playlist_posing_as_mp3
from tests.media_helpers import mp3_parts_of_other_formats

from inferline import db
from inferline.clock import utcnow
from inferline.files.service import receive_file, record_file
from inferline.media import probe
from inferline.media.store import MediaStore
from inferline.schema import files, jobs

MAX_PIXELS = 200_000  # the fixture's media_max_image_pixels: 320 x 240 passes, 500 x 500 does not
MAX_SONG_S = 2.0  # its media_max_audio_s


@pytest.fixture
async def media_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    settings = {"media_max_image_pixels": MAX_PIXELS, "media_max_audio_s": MAX_SONG_S, "files_gc_interval_s": 0}
    plugins = ["tests.plugins.kinds", "tests.plugins.pipeline_stub"]
    async with make_api(workers=0, database_url=database_url, plugins=plugins, **settings) as api:
        yield api


# -- files a family might upload, and some nobody should ----------------------------------------


def jpeg(width: int = 320, height: int = 240, *, orientation: int | None = None) -> bytes:
    image = Image.new("RGB", (width, height), (200, 120, 40))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def png_of(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 90)).save(out, format="PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header claims `width` x `height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def wav(seconds: float = 0.5) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as song:
        song.setnchannels(1)
        song.setsampwidth(2)
        song.setframerate(8000)
        song.writeframes(b"\x00\x10" * int(8000 * seconds))
    return out.getvalue()


async def new_project(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/projects", json={"name": "할머니 추모"} | body)
    assert response.status_code == 201, response.text
    project: dict[str, Any] = response.json()
    return project


async def upload(
    client: httpx.AsyncClient, project_id: str, data: bytes, name: str = "photo.jpg", **fields: str
) -> httpx.Response:
    return await client.post(f"/api/v1/projects/{project_id}/assets", files={"file": (name, data)}, data=fields)


async def add(
    client: httpx.AsyncClient, project_id: str, data: bytes, name: str = "photo.jpg", **fields: str
) -> dict[str, Any]:
    response = await upload(client, project_id, data, name, **fields)
    assert response.status_code == 201, response.text
    asset: dict[str, Any] = response.json()
    return asset


async def asset_ids(client: httpx.AsyncClient, project_id: str) -> list[str]:
    listed = await client.get(f"/api/v1/projects/{project_id}/assets")
    assert listed.status_code == 200, listed.text
    return [asset["id"] for asset in listed.json()["items"]]


async def count_rows(api: Api, table: sa.Table) -> int:
    async with db.read(api.services.engine) as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


# -- projects -------------------------------------------------------------------------------------


async def test_a_project_is_created_listed_read_changed_and_deleted(media_api: Api) -> None:
    client = media_api.client
    made = await new_project(client, title="김순자", subtitle="1941-2026", settings={"resolution": "180p"})
    assert made["status"] == "draft" and made["active_job"] is None and made["settings"] == {"resolution": "180p"}
    others = [await new_project(client, name=f"project {n}") for n in range(2)]

    first = (await client.get("/api/v1/projects", params={"limit": 2})).json()
    assert [p["id"] for p in first["items"]] == [others[1]["id"], others[0]["id"]]  # newest first
    rest = (await client.get("/api/v1/projects", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [p["id"] for p in rest["items"]] == [made["id"]] and rest["next_cursor"] is None

    changed = await client.patch(f"/api/v1/projects/{made['id']}", json={"subtitle": None, "settings": {"fps": 12}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["subtitle"] is None and changed.json()["title"] == "김순자"
    assert changed.json()["settings"] == {"fps": 12}
    assert (await client.patch(f"/api/v1/projects/{made['id']}", json={"name": None})).status_code == 422

    assert (await client.delete(f"/api/v1/projects/{made['id']}")).status_code == 204
    assert (await client.get(f"/api/v1/projects/{made['id']}")).status_code == 404


async def test_project_fields_are_bounded_and_checked(media_api: Api) -> None:
    client = media_api.client
    for body, field in [
        ({"name": ""}, "body.name"),
        ({"name": "a", "title": "x" * 101}, "body.title"),
        ({"name": "a", "title": "bell\x07"}, "body.title"),
        ({"name": "a", "settings": {"transition_s": 7}}, "body.settings.transition_s"),
        ({"name": "a", "settings": {"resolution": "4k"}}, "body.settings.resolution"),
        ({"name": "a", "owner": "someone"}, "body.owner"),
    ]:
        response = await client.post("/api/v1/projects", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field
    with_newline = await new_project(client, subtitle="1941\n2026")
    assert with_newline["subtitle"] == "1941\n2026"


# -- assets ---------------------------------------------------------------------------------------


async def test_photos_and_a_song_are_kept_in_order_and_can_be_moved_captioned_and_deleted(media_api: Api) -> None:
    client = media_api.client
    project = (await new_project(client))["id"]
    photos = [await add(client, project, jpeg(), caption=f"사진 {n}") for n in range(3)]
    turned = await add(client, project, jpeg(320, 240, orientation=6), duration_s="7.5")
    song = await add(client, project, wav(), name="song.wav")
    png = await add(client, project, png_of(100, 50), name="x.png")
    assert [p["position"] for p in photos] == [0, 1, 2] and turned["position"] == 3 and png["position"] == 4
    assert (photos[0]["kind"], photos[0]["caption"], photos[0]["width"], photos[0]["height"]) == (
        "image",
        "사진 0",
        320,
        240,
    )
    assert (turned["width"], turned["height"], turned["duration_s"]) == (240, 320, 7.5)  # EXIF: a quarter turn
    assert (song["kind"], song["position"], song["width"]) == ("audio", 0, None)
    assert song["duration_s"] == pytest.approx(0.5, abs=0.05)  # measured by ffprobe
    file = (await client.get(f"/api/v1/files/{song['file_id']}")).json()
    assert file["content_type"] == "audio/wav"

    ids = [photo["id"] for photo in photos]
    assert await asset_ids(client, project) == [*ids, turned["id"], png["id"], song["id"]]
    moved = await client.patch(f"/api/v1/projects/{project}/assets/{photos[2]['id']}", json={"position": 0})
    assert moved.status_code == 200 and moved.json()["position"] == 0
    assert await asset_ids(client, project) == [ids[2], ids[0], ids[1], turned["id"], png["id"], song["id"]]
    last = await client.patch(f"/api/v1/projects/{project}/assets/{ids[2]}", json={"position": 99, "caption": None})
    assert last.json()["position"] == 4 and last.json()["caption"] is None
    no_time = await client.patch(f"/api/v1/projects/{project}/assets/{song['id']}", json={"duration_s": 5})
    assert no_time.status_code == 422 and no_time.json()["field"] == "duration_s"
    bad = await client.patch(f"/api/v1/projects/{project}/assets/{ids[0]}", json={"duration_s": 0.5})
    assert bad.status_code == 422 and bad.json()["field"] == "body.duration_s"

    assert (await client.delete(f"/api/v1/projects/{project}/assets/{ids[0]}")).status_code == 204
    listed = (await client.get(f"/api/v1/projects/{project}/assets")).json()["items"]
    assert [(a["id"], a["position"]) for a in listed if a["kind"] == "image"] == [
        (ids[1], 0),
        (turned["id"], 1),
        (png["id"], 2),
        (ids[2], 3),
    ]
    assert (await client.get(f"/api/v1/files/{photos[0]['file_id']}")).status_code == 404  # its file went too
    in_use = await client.delete(f"/api/v1/files/{photos[1]['file_id']}")
    assert in_use.status_code == 409 and photos[1]["id"] in in_use.json()["detail"]

    assert (await client.delete(f"/api/v1/projects/{project}")).status_code == 204
    assert await count_rows(media_api, files) == 0  # every asset's file went with the project


async def test_hostile_and_unsupported_uploads_are_refused_and_leave_no_file(media_api: Api) -> None:
    client = media_api.client
    project = (await new_project(client))["id"]
    whole = jpeg()
    mp4_head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
    for data, name, status, field in [
        (b"just some text, named like a photo", "photo.jpg", 415, None),
        (whole[: len(whole) // 2], "cut.jpg", 422, "file"),
        (png_header(50_000, 50_000), "huge.png", 413, None),
        (png_of(500, 500), "big.png", 413, None),
        (b"%PDF-1.7\n" + b"0" * 100, "doc.pdf", 415, None),
        (mp4_head, "clip.mp4", 415, None),
        (b"GIF89a" + b"\x00" * 100, "anim.gif", 415, None),
        (b"", "empty.jpg", 422, "file"),
    ]:
        response = await upload(client, project, data, name)
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json().get("field") == field, (name, response.json())
    assert "media_max_image_pixels" in (await upload(client, project, png_of(500, 500), "big.png")).json()["detail"]
    refused = await upload(client, project, wav(), "song.wav", duration_s="5")
    assert refused.status_code == 422 and refused.json()["field"] == "duration_s"
    fields = await upload(client, project, jpeg(), caption="x" * 201)
    assert fields.status_code == 422 and fields.json()["field"] == "caption"
    assert await asset_ids(client, project) == []
    assert await count_rows(media_api, files) == 0
    staged = media_api.services.blobs.tmp_dir
    assert not staged.exists() or list(staged.iterdir()) == []


async def test_a_song_of_two_files_joined_is_422_at_upload(media_api: Api, tmp_path: Path) -> None:
    # Two MP3s of other rates and channels in one file: the render could not lay it (`clips.LAID_SONG`).
    parts = await mp3_parts_of_other_formats(tmp_path, 0.3)  # short: the fixture takes songs of 2 s at most
    client = media_api.client
    project = (await new_project(client))["id"]
    response = await upload(client, project, b"".join(parts), "joined.mp3")
    assert response.status_code == 422 and response.json()["field"] == "file", response.text
    assert "changes its sample rate or channels" in response.json()["detail"]
    assert (await upload(client, project, parts[0], "one.mp3")).status_code == 201  # each part alone is a song
    assert await count_rows(media_api, files) == 1


async def test_a_song_the_busy_machine_cannot_decode_in_time_is_503_not_blamed_on_the_file(
    media_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "time_budget_s", lambda planned_s, frame=(0, 0): 0.001)  # no time at all
    client = media_api.client
    project = (await new_project(client))["id"]
    response = await upload(client, project, wav(), "song.wav")
    assert response.status_code == 503 and "Retry-After" in response.headers, response.text
    assert "could not be checked in time" in response.json()["detail"]
    assert await count_rows(media_api, files) == 0


async def test_a_progressive_jpeg_of_too_many_scans_is_413_at_once(media_api: Api) -> None:
    client = media_api.client
    project = (await new_project(client))["id"]
    bomb = hostile_jpeg(10_000, 400, 400)  # under the fixture's pixel cap: only its scans are too many
    started = time.perf_counter()
    response = await upload(client, project, bomb, "bomb.jpg")
    assert response.status_code == 413, response.text
    assert "more than 100 scans" in response.json()["detail"]
    assert time.perf_counter() - started < 2.0
    assert await asset_ids(client, project) == []
    assert await count_rows(media_api, files) == 0
    progressive = io.BytesIO()
    Image.effect_noise((320, 240), 40).convert("RGB").save(progressive, "JPEG", progressive=True, optimize=True)
    assert (await add(client, project, progressive.getvalue()))["width"] == 320


async def test_songs_without_sound_or_too_long_are_refused(media_api: Api, tmp_path: Path) -> None:
    client = media_api.client
    project = (await new_project(client))["id"]
    # An M4A by its brand that holds only a picture: sniffed as audio, refused by ffprobe.
    silent = ffmpeg_output(
        tmp_path, "silent.m4a", "-f", "lavfi", "-i", "testsrc=d=0.5:s=64x64:r=5", "-c:v", "libx264", "-brand", "M4A "
    )
    # An ID3 tag, then an HLS playlist naming a file of the server: ffprobe left to itself plays that file.
    ffmpeg_output(tmp_path, "secret.mp3", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "libmp3lame", "-f", "mp3")
    playlist = playlist_posing_as_mp3(tmp_path / "secret.mp3")
    for data, name, status, words in [
        (silent, "song.m4a", 415, "no audio stream"),
        (playlist, "song.mp3", 415, "media"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 500, "song.mp3", 415, "media"),
        (wav(MAX_SONG_S + 1), "long.wav", 413, "lasts 3 s"),
    ]:
        response = await upload(client, project, data, name)
        assert response.status_code == status, (name, response.text)
        assert words in response.json()["detail"], (name, response.json())
    assert await asset_ids(client, project) == []
    assert await count_rows(media_api, files) == 0


# -- runs -----------------------------------------------------------------------------------------


async def test_a_second_run_is_409_until_the_first_ends(media_api: Api) -> None:
    client = media_api.client
    project = (await new_project(client, settings={"resolution": "180p", "fps": 10}))["id"]
    photo = await add(client, project, jpeg())
    song = await add(client, project, wav(), name="song.wav")

    run = await client.post(f"/api/v1/projects/{project}/run", json={"fps": 12, "transition": "fade"})
    assert run.status_code == 202, run.text
    job = run.json()
    assert run.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert job["kind"] == "pipeline" and job["status"] == "queued"
    assert job["input"]["project_id"] == project and job["input"]["music"] == song["id"]
    assert (job["input"]["resolution"], job["input"]["fps"], job["input"]["transition"]) == ("180p", 12, "fade")
    shown = (await client.get(f"/api/v1/projects/{project}")).json()
    assert shown["status"] == "queued" and shown["active_job"]["id"] == job["id"]

    again = await client.post(f"/api/v1/projects/{project}/run", json={})
    assert again.status_code == 409 and job["id"] in again.json()["detail"]
    assert (await upload(client, project, jpeg())).status_code == 409
    url = f"/api/v1/projects/{project}/assets/{photo['id']}"
    assert (await client.patch(url, json={"caption": "late"})).status_code == 409
    assert (await client.delete(url)).status_code == 409
    assert (await client.delete(f"/api/v1/projects/{project}")).status_code == 409

    canceled = await client.post(f"/api/v1/projects/{project}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert (await client.get(f"/api/v1/projects/{project}")).json()["status"] == "canceled"
    assert (await client.post(f"/api/v1/projects/{project}/cancel")).status_code == 409
    rerun = await client.post(f"/api/v1/projects/{project}/run")  # no body: the project's settings
    assert rerun.status_code == 202, rerun.text
    assert (rerun.json()["input"]["fps"], rerun.json()["input"]["transition_s"]) == (10, 6)


async def test_two_runs_at_once_start_one_job(media_api: Api) -> None:
    client = media_api.client
    project = (await new_project(client))["id"]
    await add(client, project, jpeg())
    answers = await asyncio.gather(*(client.post(f"/api/v1/projects/{project}/run", json={}) for _ in range(4)))
    assert sorted(answer.status_code for answer in answers) == [202, 409, 409, 409]
    async with db.read(media_api.services.engine) as conn:
        count = (await conn.execute(sa.select(sa.func.count()).where(jobs.c.kind == "pipeline"))).scalar_one()
    assert count == 1


async def test_a_pipeline_through_post_jobs_is_the_projects_run_too(media_api: Api) -> None:
    client = media_api.client
    project = (await new_project(client, settings={"resolution": "180p"}))["id"]
    body = {"kind": "pipeline", "input": {"project_id": project, "resolution": "180p"}}
    no_photo = await client.post("/api/v1/jobs", json=body)
    assert no_photo.status_code == 409 and "no photos" in no_photo.json()["detail"]
    await add(client, project, jpeg())

    submitted = await client.post("/api/v1/jobs", json=body)
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()
    shown = (await client.get(f"/api/v1/projects/{project}")).json()
    assert shown["status"] == "queued" and shown["active_job"]["id"] == job["id"]
    for again in (
        await client.post("/api/v1/jobs", json=body),
        await client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "second"}),
        await client.post(f"/api/v1/projects/{project}/run", json={}),
    ):
        assert again.status_code == 409 and job["id"] in again.json()["detail"], again.text
    assert (await client.delete(f"/api/v1/projects/{project}")).status_code == 409

    elsewhere = {"kind": "pipeline", "input": {"project_id": "01a23d68-0000-7000-8000-000000000000"}}
    missing = await client.post("/api/v1/jobs", json=elsewhere)
    assert missing.status_code == 422 and missing.json()["field"] == "input.project_id", missing.text
    async with db.read(media_api.services.engine) as conn:
        count = (await conn.execute(sa.select(sa.func.count()).where(jobs.c.kind == "pipeline"))).scalar_one()
    assert count == 1


async def test_a_failed_run_retried_is_the_projects_run_again_unless_another_is_going(media_api: Api) -> None:
    client = media_api.client
    project = (await new_project(client))["id"]
    await add(client, project, jpeg())
    first = (await client.post(f"/api/v1/projects/{project}/run", json={})).json()
    async with db.write(media_api.services.engine) as conn:  # as a run that failed for good
        await conn.execute(sa.update(jobs).where(jobs.c.id == first["id"]).values(status="failed"))
    second = await client.post(f"/api/v1/projects/{project}/run", json={})
    assert second.status_code == 202, second.text
    refused = await client.post(f"/api/v1/jobs/{first['id']}/retry")
    assert refused.status_code == 409 and second.json()["id"] in refused.json()["detail"]
    assert (await client.post(f"/api/v1/projects/{project}/cancel")).status_code == 200
    retried = await client.post(f"/api/v1/jobs/{first['id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued", retried.text
    shown = (await client.get(f"/api/v1/projects/{project}")).json()
    assert shown["active_job"]["id"] == first["id"] and shown["status"] == "queued"


async def test_a_run_needs_a_photo_and_takes_only_a_song_of_its_own(media_api: Api) -> None:
    client = media_api.client
    project = (await new_project(client))["id"]
    no_photo = await client.post(f"/api/v1/projects/{project}/run", json={})
    assert no_photo.status_code == 409 and "no photos" in no_photo.json()["detail"]
    photo = await add(client, project, jpeg())
    elsewhere = (await new_project(client))["id"]
    foreign_song = await add(client, elsewhere, wav(), name="song.wav")
    for music in (foreign_song["id"], photo["id"]):
        refused = await client.post(f"/api/v1/projects/{project}/run", json={"music": music})
        assert refused.status_code == 422 and refused.json()["field"] == "music"
    bad = await client.post(f"/api/v1/projects/{project}/run", json={"transition_s": 7})
    assert bad.status_code == 422 and bad.json()["field"] == "body.transition_s"
    silent = await client.post(f"/api/v1/projects/{project}/run", json={})
    assert silent.status_code == 202 and silent.json()["input"]["music"] is None


async def test_another_tenants_project_is_404_everywhere(media_api: Api) -> None:
    project = (await new_project(media_api.client))["id"]
    asset = (await add(media_api.client, project, jpeg()))["id"]
    other = media_api.other
    base = f"/api/v1/projects/{project}"
    for method, url, kwargs in [
        ("GET", base, {}),
        ("PATCH", base, {"json": {"name": "mine now"}}),
        ("DELETE", base, {}),
        ("GET", f"{base}/assets", {}),
        ("POST", f"{base}/assets", {"files": {"file": ("a.jpg", jpeg())}}),
        ("PATCH", f"{base}/assets/{asset}", {"json": {"position": 0}}),
        ("DELETE", f"{base}/assets/{asset}", {}),
        ("POST", f"{base}/run", {"json": {}}),
        ("POST", f"{base}/cancel", {}),
        ("GET", f"{base}/video", {}),
        ("GET", f"{base}/poster", {}),
    ]:
        response = await other.request(method, url, **kwargs)
        assert response.status_code == 404, (method, url, response.text)
    assert (await other.get("/api/v1/projects")).json()["items"] == []
    assert await asset_ids(media_api.client, project) == [asset]


# -- the rendered video -----------------------------------------------------------------------------


def ffmpeg_output(tmp_path: Path, name: str, *args: str) -> bytes:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None, "ffmpeg is installed by ./dev"
    out = tmp_path / name
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", *args, str(out)], check=True, timeout=60)
    return out.read_bytes()


def rendered(tmp_path: Path) -> tuple[bytes, bytes]:
    """A 1 s MP4 at 320 x 180 and a JPEG poster, as a render stage leaves them."""
    source = ["-f", "lavfi", "-i", "testsrc=d=1:s=320x180:r=10"]
    video = ffmpeg_output(
        tmp_path, "video.mp4", *source, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart"
    )
    return video, jpeg(320, 180)


async def test_the_video_is_served_with_range_requests_and_the_poster_as_jpeg(media_api: Api, tmp_path: Path) -> None:
    client, services = media_api.client, media_api.services
    project = (await new_project(client))["id"]
    assert (await client.get(f"/api/v1/projects/{project}/video")).status_code == 404
    assert (await client.get(f"/api/v1/projects/{project}/poster")).status_code == 404
    video, poster = rendered(tmp_path)
    stored = []
    for data in (video, poster):
        info = await receive_file(
            services.blobs, tenant="default", source=io.BytesIO(data), filename=None, max_bytes=10**7
        )
        await record_file(services.engine, info)
        stored.append(info)
    async with db.write(services.engine) as conn:
        assert await MediaStore(conn).set_output(
            project, video_file_id=stored[0].id, poster_file_id=stored[1].id, now=utcnow()
        )

    whole = await client.get(f"/api/v1/projects/{project}/video")
    assert whole.status_code == 200 and whole.content == video
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-disposition"].startswith("inline")
    part = await client.get(f"/api/v1/projects/{project}/video", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == video[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(video)}"
    tail = await client.get(f"/api/v1/projects/{project}/video", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == video[-10:]
    beyond = await client.get(f"/api/v1/projects/{project}/video", headers={"Range": f"bytes={len(video) + 5}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(video)}"
    shown = await client.get(f"/api/v1/projects/{project}/poster")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg" and shown.content == poster

    assert (await client.delete(f"/api/v1/files/{stored[0].id}")).status_code == 409  # the project shows it
    assert (await client.delete(f"/api/v1/projects/{project}")).status_code == 204
    assert await count_rows(media_api, files) == 0


# -- the runtime view of any job ----------------------------------------------------------------------


async def test_the_runtime_view_follows_a_running_job_and_its_cancel(api: Api) -> None:
    job = await api.submit(input={"message": "hi", "steps": 200, "step_s": 0.05})
    running = await api.wait(job["id"], lambda j: j["status"] == "running" and (j["progress"] or 0) > 0)
    runtime = await api.client.get(f"/api/v1/jobs/{job['id']}/runtime")
    assert runtime.status_code == 200
    view = runtime.json()
    assert set(view) == {"status", "stage", "progress_percent", "detail_message", "cancel_requested"}
    assert view["stage"].startswith("step ") and 0 < view["progress_percent"] < 100
    assert view["cancel_requested"] is False and running["status"] == view["status"] == "running"
    assert (await api.client.post(f"/api/v1/jobs/{job['id']}/cancel")).status_code == 200
    assert (await api.client.get(f"/api/v1/jobs/{job['id']}/runtime")).json()["cancel_requested"] is True
    await api.wait(job["id"])
    assert (await api.client.get(f"/api/v1/jobs/{job['id']}/runtime")).json()["status"] == "canceled"
    assert (await api.other.get(f"/api/v1/jobs/{job['id']}/runtime")).status_code == 404
