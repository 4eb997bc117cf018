"""The H.264 encoder a process's media jobs use, tried on this machine's real ffmpeg: x264 always works;
NVENC works only with an NVIDIA driver and a GPU that has an encoder (this machine has neither, and the
H200 a session tried has no encoder: docs/benchmarks.md)."""

from __future__ import annotations

import asyncio

import pytest

from inferline.errors import NonRetryable
from inferline.media import encoders
from inferline.media.encoders import LIBX264, NVENC, EncoderChoice, trial


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
