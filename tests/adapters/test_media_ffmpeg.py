"""The ffmpeg runner and ffprobe, for real: progress, timeouts, cancel that leaves no process, probing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from tests.media_helpers import processes_mentioning, synth_video

from inferline.errors import Canceled, JobError, TooLarge, UnsupportedMediaType
from inferline.media.ffmpeg import STILL, input_args, run_capture, run_ffmpeg
from inferline.media.probe import check_audio, picture_problems, probe


async def test_progress_rises_and_ends_at_100(tmp_path: Path) -> None:
    seen: list[float] = []

    async def progress(percent: float) -> None:
        seen.append(percent)

    out = tmp_path / "out.mp4"
    args = ["-f", "lavfi", "-i", "testsrc=s=320x180:r=30:d=2", "-c:v", "libx264", "-f", "mp4", str(out)]
    await run_ffmpeg(args, planned_s=2, progress=progress, timeout_s=60)
    assert seen == sorted(seen) and seen[-1] == 100
    assert len(seen) >= 2 and all(0 <= p <= 100 for p in seen)
    assert (await probe(out)).video_codec == "h264"


async def test_cancel_stops_ffmpeg_at_once_and_leaves_no_process(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def progress(percent: float) -> None:
        started.set()

    marker = str(tmp_path / "slow-marker.mp4")  # -re: reads its input in real time, so it runs 60 s
    args = ["-re", "-f", "lavfi", "-i", "testsrc=s=320x180:r=30:d=60", "-c:v", "libx264", "-f", "mp4", marker]
    task = asyncio.create_task(run_ffmpeg(args, planned_s=60, progress=progress, timeout_s=120))
    await asyncio.wait_for(started.wait(), 20)
    assert processes_mentioning(marker), "ffmpeg runs before the cancel"
    begun = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - begun < 5.0  # ffmpeg would run its 60 s
    assert processes_mentioning(marker) == []


async def test_a_progress_callback_that_raises_stops_ffmpeg_with_its_error(tmp_path: Path) -> None:
    async def progress(percent: float) -> None:
        raise Canceled("deadline")

    marker = str(tmp_path / "raising-marker.mp4")
    args = ["-re", "-f", "lavfi", "-i", "testsrc=s=320x180:r=30:d=60", "-f", "mp4", marker]
    begun = time.monotonic()
    with pytest.raises(Canceled, match="deadline"):
        await run_ffmpeg(args, planned_s=60, progress=progress, timeout_s=120)
    assert time.monotonic() - begun < 5.0
    assert processes_mentioning(marker) == []


async def test_a_program_ignoring_sigterm_is_killed_with_its_children_at_the_timeout() -> None:
    sleep = f"sleep 29.{os.getpid()}"  # a command line no other process has
    # The shell and its sleep both ignore SIGTERM (an ignored signal stays ignored across exec).
    script = f"trap '' TERM; {sleep} & wait"
    begun = time.monotonic()
    with pytest.raises(JobError, match="did not finish within 1 s"):
        await run_capture(["sh", "-c", script], timeout_s=1, max_output_bytes=1000)
    assert time.monotonic() - begun < 2.0
    assert processes_mentioning(sleep) == []


async def test_a_run_past_its_timeout_fails_and_leaves_no_process(tmp_path: Path) -> None:
    marker = str(tmp_path / "timeout-marker.mp4")
    args = ["-re", "-f", "lavfi", "-i", "testsrc=s=320x180:r=30:d=60", "-f", "mp4", marker]
    with pytest.raises(JobError, match="did not finish"):
        await run_ffmpeg(args, planned_s=60, timeout_s=1)
    assert processes_mentioning(marker) == []


async def test_a_failing_run_says_why_without_the_server_folders(tmp_path: Path) -> None:
    missing = tmp_path / "secret-folder" / "missing.png"
    with pytest.raises(JobError) as caught:
        await run_ffmpeg([*input_args(missing, STILL), "-f", "null", "-"], planned_s=1, timeout_s=30)
    message = str(caught.value)
    assert "status" in message and "missing.png" in message and "No such file" in message
    assert str(tmp_path) not in message


async def test_output_past_the_bound_fails(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="more than 100 bytes"):
        await run_capture(["seq", "1000"], timeout_s=10, max_output_bytes=100)


async def test_probe_reads_streams_of_a_clip(tmp_path: Path) -> None:
    clip = await synth_video(tmp_path / "clip.mp4", duration_s=1.5, audio=True)
    info = await probe(clip)
    assert (info.width, info.height, info.fps) == (320, 180, 30)
    assert (info.video_codec, info.audio_codec, info.pixel_format) == ("h264", "aac", "yuv420p")
    assert info.has_video and info.has_audio
    assert abs((info.video_duration_s or 0) - 1.5) < 0.05


@pytest.mark.parametrize("content", [b"", b"hello, this is not a video\n" * 50, b"\x00\x01garbage" * 1000])
async def test_probe_refuses_what_is_not_media(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "upload.bin"
    bad.write_bytes(content)
    with pytest.raises(UnsupportedMediaType):
        await probe(bad)


async def test_check_audio_takes_a_song_and_returns_its_length(tmp_path: Path) -> None:
    song = tmp_path / "song.bin"  # no extension, like a blob: the content decides
    await run_ffmpeg(
        ["-f", "lavfi", "-i", "sine=f=440:d=2", "-c:a", "flac", "-f", "flac", str(song)], planned_s=2, timeout_s=30
    )
    assert abs(await check_audio(song, max_duration_s=10) - 2.0) < 0.05


async def test_check_audio_refuses_a_file_with_no_audio_stream(tmp_path: Path) -> None:
    silent = await synth_video(tmp_path / "silent.mp4", duration_s=1)
    with pytest.raises(UnsupportedMediaType, match="no audio stream"):
        await check_audio(silent, max_duration_s=10)


async def test_check_audio_refuses_a_song_over_the_limit(tmp_path: Path) -> None:
    song = tmp_path / "long.wav"
    await run_ffmpeg(["-f", "lavfi", "-i", "sine=d=3", "-f", "wav", str(song)], planned_s=3, timeout_s=30)
    with pytest.raises(TooLarge):
        await check_audio(song, max_duration_s=2)


async def test_picture_problems_finds_black_and_frozen_video_and_passes_a_moving_one(tmp_path: Path) -> None:
    black = await synth_video(tmp_path / "black.mp4", duration_s=2, source="color=c=black")
    frozen = await synth_video(tmp_path / "frozen.mp4", duration_s=2, source="color=c=0x3366aa")
    moving = await synth_video(tmp_path / "moving.mp4", duration_s=2, source="testsrc2")
    assert any(p.startswith("black from 0.00 s") for p in await picture_problems(black))
    assert any(p.startswith("frozen from 0.00 s") for p in await picture_problems(frozen, frozen_min_s=1))
    assert await picture_problems(moving, frozen_min_s=1) == []


async def test_picture_problems_ignores_what_is_outside_the_checked_interval(tmp_path: Path) -> None:
    fades = tmp_path / "fades.mp4"  # moving for 1.5 s, then black
    source = "testsrc2=s=320x180:r=30:d=2.5,fade=t=out:st=1.2:d=0.3"
    await run_ffmpeg(
        ["-f", "lavfi", "-i", source, "-c:v", "libx264", "-f", "mp4", str(fades)], planned_s=2.5, timeout_s=60
    )
    assert await picture_problems(fades, end_s=1.5) == []
    assert any(p.startswith("black from 1.5") for p in await picture_problems(fades))
