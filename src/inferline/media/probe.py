"""What a media file holds (ffprobe), whether its picture is black or frozen where it should not be, and the
checks an uploaded song passes. ffprobe reads hostile uploads here: bounded in time and in output, and
held to the demuxers of the file's role (`ffmpeg.Source`: a clip by default, the strictest)."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from inferline.errors import InvalidInput, JobError, TooLarge, UnsupportedMediaType
from inferline.media.ffmpeg import (
    CLIP,
    Source,
    TimedOut,
    executable,
    input_args,
    run_capture,
    run_ffmpeg,
    song_source,
    time_budget_s,
)
from inferline.turns import TenantSlots

MAX_PROBE_OUTPUT_BYTES = 1_000_000  # a file with thousands of streams or tags is not a song or a clip
MAX_PROBLEMS = 50
AUDIO_CODECS = frozenset({"mp3", "aac", "vorbis", "opus", "flac", "alac"})  # and every pcm_* (WAV)


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float  # of the container; 0.0 for a still image
    width: int  # 0 without a video stream
    height: int
    fps: float  # the video stream's average frame rate; 0.0 without one
    video_codec: str | None
    audio_codec: str | None
    pixel_format: str | None = None
    video_duration_s: float | None = None  # the video stream's own, where the container says
    encoder: str | None = None  # what made the picture, where a stage of ours recorded it (`encoders.py`); not probed
    # A hash of the video stream's parameter sets (H.264's SPS and PPS, the MP4's extradata): clips join into
    # one stream without encoding again only where these are the same.
    parameter_sets: str | None = None
    # The video stream's colour matrix as tagged (ffprobe's `color_space`: "bt709", "smpte170m", ...); None
    # untagged, or not probed (what a stage of ours recorded: our clips are tagged BT.709).
    color_matrix: str | None = None

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


async def probe(path: Path, source: Source = CLIP, *, timeout_s: float = 10) -> MediaInfo:
    """The streams of `path` read as `source`; `UnsupportedMediaType` if ffprobe cannot read it so."""
    cmd = [executable("ffprobe"), "-hide_banner", "-loglevel", "error", "-print_format", "json"]
    cmd += ["-show_format", "-show_streams", "-show_data_hash", "sha256", *input_args(path, source)]
    try:
        returncode, stdout, stderr = await run_capture(
            cmd, timeout_s=timeout_s, max_output_bytes=MAX_PROBE_OUTPUT_BYTES
        )
    except JobError as exc:  # too much output or too slow: hostile or broken, either way not media we take
        raise UnsupportedMediaType(f"the file could not be read as media ({exc})") from None
    if returncode != 0:
        raise UnsupportedMediaType(f"the file is not a media file ffprobe can read: {stderr or 'no detail'}")
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        raise UnsupportedMediaType("the file could not be read as media (unreadable probe report)") from None
    return _media_info(report)


def _media_info(report: dict[str, Any]) -> MediaInfo:
    streams = [s for s in report.get("streams", []) if isinstance(s, dict)]
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        raise UnsupportedMediaType("the file holds neither a picture nor sound")
    container = report.get("format", {})
    return MediaInfo(
        duration_s=_number(container.get("duration")),
        width=int(_number(video.get("width"))) if video else 0,
        height=int(_number(video.get("height"))) if video else 0,
        fps=_rate(video.get("avg_frame_rate")) if video else 0.0,
        video_codec=str(video["codec_name"]) if video and video.get("codec_name") else None,
        audio_codec=str(audio["codec_name"]) if audio and audio.get("codec_name") else None,
        pixel_format=str(video["pix_fmt"]) if video and video.get("pix_fmt") else None,
        video_duration_s=(_number(video.get("duration")) or None) if video else None,
        parameter_sets=_hash(video.get("extradata_hash")) if video else None,
        color_matrix=_tag(video.get("color_space")) if video else None,
    )


def _tag(value: Any) -> str | None:
    """A colour tag as ffprobe names it, or None where it says none ("unknown", "reserved", absent, or not a
    name)."""
    text = value if isinstance(value, str) else ""
    named = 0 < len(text) <= 20 and text.replace("-", "").replace("_", "").isalnum()
    return text if named and text not in ("unknown", "reserved") else None


def _hash(value: Any) -> str | None:
    """ffprobe's `SHA256:<64 hex>`, or None for anything else (no extradata: parameter sets in the stream)."""
    text = str(value) if isinstance(value, str) else ""
    return text if text.startswith("SHA256:") and len(text) == 71 else None


def _is_cover_art(stream: dict[str, Any]) -> bool:
    disposition = stream.get("disposition")
    return isinstance(disposition, dict) and disposition.get("attached_pic") == 1


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and 0 <= number < 1e9 else 0.0  # NaN and nonsense read as unknown


def _rate(value: Any) -> float:
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(rate) if 0 < rate < 1000 else 0.0


async def check_audio(
    path: Path,
    max_duration_s: float,
    *,
    content_type: str | None = None,
    timeout_s: float = 10,
    decodes: TenantSlots | None = None,
    tenant: str = "",
) -> float:
    """An uploaded song's duration in seconds, if it is one: a file of a song's container (that of its
    sniffed `content_type` where given), a sound stream in a codec the render takes, no longer than
    `max_duration_s`, that decodes to its end at one sample rate and channel layout (`decodes`: the
    process's limit of such decodes at once, taken by `tenant` in turn with others). `TimedOut` (retryable)
    when that decode runs past its time."""
    info = await probe(path, song_source(content_type), timeout_s=timeout_s)
    if info.audio_codec is None:
        raise UnsupportedMediaType("the file has no audio stream; upload an MP3, AAC, WAV, OGG or FLAC song")
    if info.audio_codec not in AUDIO_CODECS and not info.audio_codec.startswith("pcm_"):
        raise UnsupportedMediaType(f"audio in {info.audio_codec} is not accepted: use MP3, AAC, WAV, OGG or FLAC")
    if info.duration_s <= 0:
        raise InvalidInput("the song's length could not be read", field="file")
    if info.duration_s > max_duration_s:
        raise TooLarge(f"the song lasts {info.duration_s:.0f} s; at most {max_duration_s:.0f} s is accepted")
    async with decodes.hold(tenant) if decodes is not None else contextlib.nullcontext():
        await _check_song_decodes(path, content_type, info.duration_s)
    return info.duration_s


class FormatChanges:
    """Watches ffmpeg's stderr lines for its refusal, under `-reinit_filter 0`, of sound whose sample rate or
    channels change partway (the check at upload and the render's measure both read songs so)."""

    REASON = "the song changes its sample rate or channels partway (files joined into one?); save it again as one file"

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, line: str) -> None:
        self.seen = self.seen or "properties on the fly" in line


async def _check_song_decodes(path: Path, content_type: str | None, duration_s: float) -> None:
    """InvalidInput unless the song's sound decodes to its end at one sample rate and channel layout, as the
    render lays it (`clips.LAID_SONG`): a file that changes partway (two joined into one) is refused now,
    not a failed render later. Decoded only as far as its probed length (a file that hides hours behind
    a short header is not decoded for hours): 0.1-0.3 s for a few minutes of MP3."""
    changes = FormatChanges()
    held = input_args(path, song_source(content_type), "-reinit_filter", "0", "-t", f"{duration_s + 1:.3f}")
    try:
        await run_ffmpeg(
            [*held, "-map", "0:a:0", "-f", "null", "-"],
            planned_s=duration_s,
            timeout_s=time_budget_s(duration_s / 20),
            threads=1,
            log_lines=changes,
            log_level="error",
        )
    except TimedOut:
        raise  # the machine, not the file: retried (a render), or 503 (an upload)
    except JobError:
        if changes.seen:
            raise InvalidInput(FormatChanges.REASON, field="file") from None
        raise InvalidInput("the song's sound could not be decoded to its end", field="file") from None


# blackdetect: "black_start:1.2 black_end:2 black_duration:0.8"; freezedetect: "lavfi.freezedetect.freeze_start: 1.2"
_BLACK = re.compile(r"black_start:\s*([\d.]+)\s+black_end:\s*([\d.]+)")
_FREEZE = re.compile(r"freezedetect\.freeze_(start|end):\s*([\d.]+)")


@dataclass
class PictureCheck:
    """Where a picture is black (at least `black_min_s`) or frozen (at least `frozen_min_s`): ffmpeg's
    blackdetect and freezedetect, run over a decoded file (`picture_problems`) or as a side output of the
    encode that makes the clip (`filter`, then `add` for each line ffmpeg logs: no second decode)."""

    black_min_s: float = 0.5
    frozen_min_s: float = 2.0
    black: list[tuple[float, float]] = field(default_factory=list)
    frozen: list[tuple[float, float | None]] = field(default_factory=list)  # None: frozen to the end

    @property
    def filter(self) -> str:
        return f"blackdetect=d={self.black_min_s}:pix_th=0.10,freezedetect=n=-60dB:d={self.frozen_min_s}"

    def add(self, line: str) -> None:
        if len(self.black) + len(self.frozen) >= MAX_PROBLEMS:
            return
        if black := _BLACK.search(line):
            self.black.append((float(black[1]), float(black[2])))
        elif freeze := _FREEZE.search(line):
            if freeze[1] == "start":
                self.frozen.append((float(freeze[2]), None))
            elif self.frozen and self.frozen[-1][1] is None:
                self.frozen[-1] = (self.frozen[-1][0], float(freeze[2]))

    def forget(self) -> None:
        """Nothing found yet: before the check runs again on a new encode (a fallback's, after a failed one)."""
        self.black.clear()
        self.frozen.clear()

    def problems(self, *, start_s: float = 0.0, end_s: float) -> list[str]:
        """What was found within [`start_s`, `end_s`], as sentences; empty when the picture is alive there."""
        problems = [f"black from {a:.2f} s to {b:.2f} s" for a, b in self.black if a < end_s and b > start_s]
        for a, b in self.frozen:
            if a < end_s and (b is None or b > start_s):
                problems.append(f"frozen from {a:.2f} s to {'the end' if b is None else f'{b:.2f} s'}")
        return problems


async def picture_problems(
    path: Path,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    black_min_s: float = 0.5,
    frozen_min_s: float = 2.0,
    timeout_s: float | None = None,
) -> list[str]:
    """Where the video of `path` is black (at least `black_min_s`) or frozen (at least `frozen_min_s`) within
    [`start_s`, `end_s`], as sentences; empty when its picture is alive there. A fade to black at the end is
    wanted: pass an `end_s` before it."""
    info = await probe(path, CLIP)
    if not info.has_video:
        raise InvalidInput("the file has no picture to check", field="file")
    duration_s = info.video_duration_s or info.duration_s
    end = duration_s if end_s is None else min(end_s, duration_s)
    check = PictureCheck(black_min_s, frozen_min_s)
    await run_ffmpeg(
        [*input_args(path, CLIP), "-map", "0:v:0", "-vf", check.filter, "-f", "null", "-"],
        planned_s=duration_s,
        timeout_s=timeout_s or time_budget_s(duration_s, (info.width, info.height)),
        log_lines=check.add,
    )
    return check.problems(start_s=start_s, end_s=end)
