"""The H.264 encoder a process's media jobs use, tried on this machine's real ffmpeg: x264 always works;
NVENC works only with an NVIDIA driver and a GPU that has an encoder (this machine has neither, and the
H200 a session tried has no encoder: docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inferline.errors import JobError, NonRetryable
from inferline.media import encoders
from inferline.media.encoders import LIBX264, NVENC, EncoderChoice, trial
from inferline.media.ffmpeg import run_ffmpeg
from inferline.media.probe import probe


@pytest.fixture(scope="module")
def nvenc_reason() -> str | None:
    return asyncio.run(trial(NVENC))


async def test_x264_passes_its_trial() -> None:
    assert await trial(LIBX264) is None


async def test_a_failed_trial_says_what_ffmpeg_said(nvenc_reason: str | None) -> None:
    if nvenc_reason is None:
        pytest.skip("NVENC works on this machine")
    assert "h264_nvenc" in nvenc_reason and "ffmpeg exited with status" in nvenc_reason


async def test_auto_takes_nvenc_only_where_its_trial_passes(nvenc_reason: str | None) -> None:
    choice = EncoderChoice("auto")
    assert await choice.get() == (NVENC if nvenc_reason is None else LIBX264)
    assert (choice.reason is None) == (nvenc_reason is None)


async def test_libx264_is_taken_without_a_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_trial(encoder: encoders.VideoEncoder, **_: object) -> str | None:
        raise AssertionError(f"tried {encoder.name}")

    monkeypatch.setattr(encoders, "trial", no_trial)
    assert await EncoderChoice("libx264").get() == LIBX264


async def test_required_nvenc_fails_a_job_with_the_reason_where_it_does_not_work(nvenc_reason: str | None) -> None:
    if nvenc_reason is None:
        pytest.skip("NVENC works on this machine")
    with pytest.raises(NonRetryable, match=r"media_video_encoder is h264_nvenc, which ffmpeg cannot use here: ffmpeg"):
        await EncoderChoice("h264_nvenc").get()


async def test_jobs_asking_at_once_share_one_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[str] = []
    real_trial = encoders.trial

    async def counted(encoder: encoders.VideoEncoder, **options: float) -> str | None:
        tried.append(encoder.name)
        return await real_trial(encoder, **options)

    monkeypatch.setattr(encoders, "trial", counted)
    choice = EncoderChoice("auto")
    chosen = await asyncio.gather(*(choice.get() for _ in range(5)))
    assert len(set(chosen)) == 1 and tried == ["h264_nvenc"]
    await choice.get()
    assert tried == ["h264_nvenc"]


async def test_an_nvenc_encode_that_fails_after_its_trial_passed_is_made_by_x264_under_auto_only(
    monkeypatch: pytest.MonkeyPatch, nvenc_reason: str | None, tmp_path: Path
) -> None:
    if nvenc_reason is None:
        pytest.skip("NVENC works on this machine")

    async def passed(encoder: encoders.VideoEncoder, **_: float) -> str | None:
        return None  # as on a GPU whose encoder sessions are then all taken by the time a job encodes

    monkeypatch.setattr(encoders, "trial", passed)
    out = tmp_path / "clip.mp4"
    used: list[str] = []

    async def encode(encoder: encoders.VideoEncoder) -> int:
        used.append(encoder.name)
        source = ["-f", "lavfi", "-i", "color=c=gray:s=320x180:r=10:d=0.5"]
        await run_ffmpeg([*source, *encoder.args(), "-f", "mp4", str(out)], planned_s=0.5, timeout_s=30)
        return out.stat().st_size

    size, encoder = await EncoderChoice("auto").run(encode)
    assert encoder == LIBX264 and size > 0 and used == ["h264_nvenc", "libx264"]
    assert (await probe(out)).video_codec == "h264"

    used.clear()
    with pytest.raises(JobError, match="h264_nvenc"):  # required: not made another way
        await EncoderChoice("h264_nvenc").run(encode)
    assert used == ["h264_nvenc"]

    async def broken(encoder: encoders.VideoEncoder) -> None:  # a failure that is not the encoder's
        used.append(encoder.name)
        raise JobError("ffmpeg exited with status 1: No such filter: 'nothing'")

    used.clear()
    with pytest.raises(JobError, match="No such filter"):
        await EncoderChoice("auto").run(broken)
    assert used == ["h264_nvenc"]
