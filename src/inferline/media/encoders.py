"""The H.264 encoder of a process's media jobs: x264 on the CPU, or NVENC where the GPU and driver have one.

Setting `media_video_encoder`: `auto` (the default) asks ffmpeg once per process to encode a few frames with
NVENC and uses it if that works, else x264; `libx264` never tries; `h264_nvenc` requires NVENC, and a media
job on a machine without it fails with ffmpeg's reason. Debian's ffmpeg offers `h264_nvenc` and loads the
driver's `libnvidia-encode` when it runs, so whether NVENC works is known only by trying: a machine without
an NVIDIA driver, and GPUs without an encoder (the A100, H100 and H200 have none), fail the trial.

Clips of one video must share one encoding, since the render joins them without encoding them again (one
H.264 stream, one set of parameters): each clip stage's result names its `encoder`, and the render encodes
again any clip of another encoder (a fleet whose workers differ) as its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import structlog

from inferline.errors import JobError, NonRetryable
from inferline.media.ffmpeg import run_ffmpeg

log = structlog.get_logger(__name__)
T = TypeVar("T")

EncoderSetting = Literal["auto", "libx264", "h264_nvenc"]
TRIAL_TIMEOUT_S = 30.0  # the first use of NVENC loads the driver and makes a CUDA context: seconds, not minutes


@dataclass(frozen=True)
class VideoEncoder:
    """An ffmpeg H.264 encoder and its options: high profile, yuv420p (what every player plays), of a
    quality that stands a second encoding."""

    name: str
    options: tuple[str, ...]

    def args(self) -> list[str]:
        return ["-c:v", self.name, *self.options, "-profile:v", "high", "-pix_fmt", "yuv420p"]


LIBX264 = VideoEncoder("libx264", ("-preset", "veryfast", "-crf", "20"))
# Constant quality like x264's crf (`-cq` with no bitrate target); p4 is NVENC's middle preset.
NVENC = VideoEncoder(
    "h264_nvenc", ("-preset", "p4", "-tune", "hq", "-rc", "vbr", "-cq", "21", "-b:v", "0", "-forced-idr", "1")
)
ENCODERS = {encoder.name: encoder for encoder in (LIBX264, NVENC)}


async def trial(encoder: VideoEncoder, *, timeout_s: float = TRIAL_TIMEOUT_S) -> str | None:
    """None if this machine's ffmpeg encodes a few frames with `encoder`, else why not (ffmpeg's words)."""
    source = ["-f", "lavfi", "-i", "color=c=gray:s=256x144:r=25:d=0.2"]
    try:
        await run_ffmpeg(
            [*source, *encoder.args(), "-frames:v", "3", "-f", "null", "-"],
            planned_s=0.12,
            timeout_s=timeout_s,
            threads=1,
        )
    except JobError as exc:
        return str(exc)
    return None


class EncoderChoice:
    """The encoder a setting picks on this machine, tried once (the first media job asks; the rest wait for
    that answer). `reason` says why `auto` did not take NVENC."""

    def __init__(self, setting: EncoderSetting = "auto") -> None:
        self.setting: EncoderSetting = setting
        self.reason: str | None = None
        self._chosen: VideoEncoder | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> VideoEncoder:
        if self._chosen is not None:
            return self._chosen
        async with self._lock:
            if self._chosen is None:
                self._chosen = await self._choose()
                log.info("media_encoder_chosen", setting=self.setting, encoder=self._chosen.name, reason=self.reason)
        return self._chosen

    async def run(self, encode: Callable[[VideoEncoder], Awaitable[T]]) -> tuple[T, VideoEncoder]:
        """`encode(encoder)` with the chosen encoder; returns its value and the encoder that made it. Under
        `auto`, an NVENC encode that fails (a GPU's encoder sessions all taken, a size it does not take) is
        made again by x264: the trial said NVENC works, not that every encode will."""
        encoder = await self.get()
        try:
            return await encode(encoder), encoder
        except JobError as exc:
            if self.setting != "auto" or encoder != NVENC or "nvenc" not in str(exc).lower():
                raise
            log.warning("media_encoder_fallback", encoder=encoder.name, error=str(exc))
        return await encode(LIBX264), LIBX264

    async def _choose(self) -> VideoEncoder:
        if self.setting == "libx264":
            return LIBX264
        self.reason = await trial(NVENC)
        if self.reason is None:
            return NVENC
        if self.setting == "h264_nvenc":
            # Not kept: the next job tries again (a driver may be mounted later), and fails the same way till then.
            raise NonRetryable(f"media_video_encoder is h264_nvenc, which ffmpeg cannot use here: {self.reason}")
        return LIBX264
