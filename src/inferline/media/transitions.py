"""Transitions between neighbouring clips: the `TransitionGenerator` port and its ffmpeg `xfade` adapter,
the fallback that always works (the frame-interpolation model is the other adapter, `interpolation.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from inferline.errors import InvalidInput
from inferline.media.clips import IN_BT709, Size, checked_output, clip_encoding, frame_count
from inferline.media.encoders import LIBX264, VideoEncoder
from inferline.media.ffmpeg import DEFAULT_THREADS, Progress, input_args, run_ffmpeg, still_source, time_budget_s
from inferline.media.probe import PictureCheck

# The styles a run may ask for, each a family of xfade's transitions; `index` picks within a family.
FAMILIES: dict[str, list[str]] = {
    "fade": ["fade"],
    "dissolve": ["dissolve"],
    "wipe": ["wipeleft", "wiperight", "wipeup", "wipedown"],
    "slide": ["slideleft", "slideright", "slideup", "slidedown"],
    "circle": ["circleopen", "circleclose", "circlecrop"],
    "radial": ["radial"],
    "smooth": ["smoothleft", "smoothright", "smoothup", "smoothdown"],
}
# `auto`: calm ones, in an order that never repeats a family twice in a row.
AUTO = ["fade", "smoothleft", "circleopen", "dissolve", "wiperight", "radial", "smoothup", "fade", "slideleft"]


class TransitionGenerator(Protocol):
    """Makes the clip between two others from two stills: the last frame of the clip before and the first
    frame of the clip after. The clip made starts on `first`, ends on `last` and lasts `duration_s` exactly
    (round(duration_s * fps) frames), encoded as every clip is (`clips.clip_encoding`). With `check`, the
    frames encoded are checked for black and frozen stretches in the same run (`clips.checked_output`): the
    clip is not decoded again to check it."""

    @property
    def name(self) -> str:
        """Which path made a transition, as a job's result records it."""

    async def generate(
        self,
        first: Path,
        last: Path,
        out: Path,
        *,
        frame: Size,
        fps: int,
        duration_s: float,
        style: str = "auto",
        index: int = 0,
        progress: Progress | None = None,
        check: PictureCheck | None = None,
        encoder: VideoEncoder = LIBX264,
    ) -> None: ...


def xfade_name(style: str, index: int) -> str:
    """The xfade transition for `style` (a family, `auto`, or one of xfade's own names) at `index`."""
    if style == "auto":
        return AUTO[index % len(AUTO)]
    if style in FAMILIES:
        family = FAMILIES[style]
        return family[index % len(family)]
    if any(style in family for family in FAMILIES.values()):
        return style
    known = ", ".join(["auto", *FAMILIES])
    raise InvalidInput(f"unknown transition {style!r}; use one of {known}", field="transition")


class XfadeTransitions:
    """ffmpeg's `xfade` between the two stills, over the whole clip."""

    name = "xfade"

    def __init__(self, *, threads: int = DEFAULT_THREADS) -> None:
        self.threads = threads

    async def generate(
        self,
        first: Path,
        last: Path,
        out: Path,
        *,
        frame: Size,
        fps: int,
        duration_s: float,
        style: str = "auto",
        index: int = 0,
        progress: Progress | None = None,
        check: PictureCheck | None = None,
        encoder: VideoEncoder = LIBX264,
    ) -> None:
        transition = xfade_name(style, index)  # from the list above: never a caller's text in the graph
        frames = frame_count(duration_s, fps)
        graph, checked = checked_output(
            ";".join(
                [
                    f"[0:v]{_held_still(frame, frames)}[from]",
                    f"[1:v]{_held_still(frame, frames)}[to]",
                    f"[from][to]{_crossing(transition, frames, fps)},format=yuv420p[v]",
                ]
            ),
            check,
            frames,
        )
        rate = ["-framerate", str(fps)]
        stills = [*input_args(first, still_source(first), *rate), *input_args(last, still_source(last), *rate)]
        args = [*stills, "-filter_complex", graph, *checked, "-map", "[v]", "-frames:v", str(frames)]
        await run_ffmpeg(
            [*args, *clip_encoding(fps, encoder=encoder), str(out)],
            planned_s=frames / fps,
            progress=progress,
            timeout_s=time_budget_s(frames / fps, frame),
            threads=self.threads,
            log_lines=check.add if check is not None else None,
        )


def _crossing(transition: str, frames: int, fps: int) -> str:
    """xfade over the whole clip: its first frame all `from`, its last (at (frames - 1) / fps) all `to`."""
    return f"xfade=transition={transition}:duration={max(1, frames - 1) / fps:.6f}:offset=0"


def _held_still(frame: Size, frames: int) -> str:
    """One still fitted into `frame` and repeated for `frames` frames (decoded and scaled once)."""
    width, height = frame
    fitted = f"scale={width}:{height}:force_original_aspect_ratio=decrease:{IN_BT709}"
    padded = f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p"
    return f"{fitted},{padded},tpad=stop={frames}:stop_mode=clone"
