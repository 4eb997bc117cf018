"""The clips of a memorial video, made by ffmpeg: a photo's clip, the closing card, frames and the poster,
and the final render (the clips joined, the music laid under them).

Every function takes paths it may write (the caller's work directory; outputs may be `.part` names, so the
format is always given) and is exact in length: a clip of `duration_s` has round(duration_s * fps) frames.
Photos arrive decoded and normalized by Pillow (the canvas kind), so ffmpeg never parses a hostile image:
it reads them as the PPMs (or PNGs) this server wrote only (`ffmpeg.still_source`). Clips and songs may be
tenant files: each input is held to its demuxers (`ffmpeg.input_args`), and each clip of the render's concat
script to `mov`.
Clips share one encoding (`clip_encoding`, with the process's encoder: `encoders.py`), which lets the render
join them without encoding them again.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inferline.errors import JobError, NonRetryable
from inferline.media.encoders import LIBX264, VideoEncoder
from inferline.media.ffmpeg import (
    CLIP,
    CLIP_LIST,
    DEFAULT_THREADS,
    SONG,
    Progress,
    input_args,
    run_ffmpeg,
    still_source,
    time_budget_s,
)
from inferline.media.probe import FormatChanges, MediaInfo, PictureCheck, probe
from inferline.media.text import TextBlock, drawtext_filters, wrap
from inferline.threads import to_thread

Size = tuple[int, int]

SUPERSAMPLE = 2  # the zoom pans over a still twice the frame's size: whole-pixel steps there are half-pixels
ZOOM = 0.12  # how far a Ken Burns zoom goes over a clip (12%): slow enough to read as calm
# (zooming in?, anchor x, anchor y): the anchor is the point of the photo that stays put while the view zooms.
MOTIONS = [
    (True, 0.5, 0.5),
    (False, 0.5, 0.5),
    (True, 0.15, 0.25),
    (False, 0.85, 0.3),
    (True, 0.85, 0.75),
    (False, 0.15, 0.7),
    (True, 0.5, 0.15),
    (False, 0.5, 0.85),
]
# Video is BT.709, limited range, and tagged so in every clip: what players take untagged video to be (Chrome
# and Firefox at every size, most others at HD), so tagged they all agree. A picture (RGB) becomes YUV in the
# scale that sizes it, given IN_BT709 (swscale's own default is BT.601: reds and greens shown 5-15% off), or
# through TO_YUV where nothing sizes it; clips are written with the tags (`clip_encoding`), which are part of
# the stream's parameter sets. (A scale with no size of its own at the end of a graph would let the filters
# before it run in RGB or with an alpha plane: a photo's clip 30% slower.)
IN_BT709 = "out_color_matrix=bt709:out_range=tv"
TO_YUV = f"scale={IN_BT709},format=yuv420p"
COLOUR_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")
CLOSING_FADE_S = 2.0
POSTER_AT_S = 1.0
LAST_FRAME_SEEK_S = 0.5  # how far before its end the last frame of a clip of any frame rate is looked for
# A clip of ours has a keyframe END_SEEK_FRAMES frames before its end (rounded up), so its last frame is
# read from there: three frames decoded, not the sixteen of half a second (0.22 → 0.14 s a 1080p clip).
END_SEEK_FRAMES = 2.5
AUDIO_FADE_IN_S = 1.0
AUDIO_FADE_OUT_S = 3.0
LOUDNESS_TARGET_LUFS = -16.0  # the song's integrated loudness in the video (EBU R128)
MAX_GAIN_DB = 24.0  # a song is lifted at most this much: a near-silent one is not raised into its noise
SILENT_LUFS = -70.0  # ebur128's absolute gate: nothing louder than this to measure
# Sample peaks are limited to -2 dBFS after the gain, which keeps the peaks between samples near -1.5 dBTP.
PEAK_LIMIT = 10 ** (-2.0 / 20)
# The video's sound: one AAC track, encoded once (a song laid ahead, `lay_song`, is copied as it is).
AUDIO_ENCODING = ("-c:a", "aac", "-b:a", "192k", "-ar", "48000", "-ac", "2")
# A song laid ahead is copied under clips that last within this of the length it was laid for (one AAC
# frame is 21 ms; a clip's length is within a frame of its plan), else the render lays it again
# (`pipeline.py`, which knows both).
TRACK_TOLERANCE_S = 0.05
# ebur128's summary: "    I:         -14.7 LUFS" (its per-100 ms lines go to the verbose level, not logged).
_INTEGRATED = re.compile(r"^\s*I:\s+(-?\d{1,3}(?:\.\d{1,2})?) LUFS\s*$")


def frame_count(duration_s: float, fps: int) -> int:
    """How many frames a clip of `duration_s` has: the nearest whole number, at least one."""
    return max(1, round(duration_s * fps))


def clip_encoding(fps: int, frames: int | None = None, encoder: VideoEncoder = LIBX264) -> list[str]:
    """The output options every clip of a video is written with: H.264 by `encoder`, no sound, MP4. Given
    its `frames`, a clip also has a keyframe END_SEEK_FRAMES before its end (rounded up), so that reading its
    last frame (`extract_frame` with `fps`) decodes those frames only, not the whole clip from its first
    keyframe."""
    keyframe = []
    if frames is not None and frames > 1:
        keyframe = ["-force_key_frames", f"expr:eq(n,{max(0, frames - math.ceil(END_SEEK_FRAMES))})"]
    return [*encoder.args(), *COLOUR_TAGS, *keyframe, "-r", str(fps), "-an", "-f", "mp4"]


def first_frame_output(graph: str, out: Path | None) -> tuple[str, list[str]]:
    """`graph` (ending in `[v]`) with its first frame also written to `out` as an RGB PPM, converted as a
    player decoding the clip converts it (BT.709, limited range). Returns the graph, still ending in `[v]`,
    and that output's arguments. An output that takes one frame and is done holds nothing up; one taking
    the last frame would (ffmpeg runs the graph for the output furthest behind: the encode would get every
    frame in one burst at the end), so the last is read back from the clip (`extract_frame`)."""
    if out is None:
        return graph, []
    if not graph.endswith("[v]"):
        raise ValueError(f"the graph's output is not [v]: {graph[-40:]!r}")
    # Trimmed to its one frame first: the branch then ends, and split stops feeding it (converting every
    # frame to RGB and dropping it cost ~0.2 CPU s per 5 s 1080p clip).
    as_decoded = "trim=end_frame=1,scale=in_color_matrix=bt709:in_range=tv,format=rgb24"
    split = f"[first]{as_decoded}[firstrgb];{graph[: -len('[v]')]},split=2[first][v]"
    return split, ["-map", "[firstrgb]", "-frames:v", "1", "-c:v", "ppm", "-f", "image2", str(out)]


def checked_output(graph: str, check: PictureCheck | None, frames: int) -> tuple[str, list[str]]:
    """`graph` (ending in `[v]`) with the picture check as a second output of the same run: the frames
    encoded are also what blackdetect and freezedetect read, so the clip is not decoded again to check it.
    Returns the graph and the check's output arguments (they go before the clip's own). The check's output
    is held to the clip's `frames` too: a source that never ends (a plain card's `color`) would run on."""
    if check is None:
        return graph, []
    check.forget()  # it reports the run it is built into, not an earlier one (a failed encode)
    if not graph.endswith("[v]"):
        raise ValueError(f"the graph's output is not [v]: {graph[-40:]!r}")
    checked = f"{graph[: -len('[v]')]},split=2[v][tocheck];[tocheck]{check.filter}[checked]"
    return checked, ["-map", "[checked]", "-frames:v", str(frames), "-f", "null", "-"]


# -- a photo's clip ---------------------------------------------------------------------------------------


async def render_photo_clip(
    photo: Path,
    out: Path,
    *,
    frame: Size,
    fps: int,
    duration_s: float,
    motion: int = 0,
    caption: str | None = None,
    progress: Progress | None = None,
    threads: int = DEFAULT_THREADS,
    encoder: VideoEncoder = LIBX264,
    timeout_s: float | None = None,
    check: PictureCheck | None = None,
    first_frame: Path | None = None,
    end_frames: tuple[Path, Path] | None = None,
) -> None:
    """`photo` as a clip: fitted into `frame` over a blurred, enlarged copy of itself, zooming slowly (the
    direction picked by `motion`), `caption` along the bottom. The caption's text files go beside `out`.
    With `check`, the frames made are checked for black and frozen stretches in the same run; with
    `first_frame`, the first frame is also written there as a PPM by the same run (`first_frame_output`);
    with `end_frames` (first, last), the first is so written and the last then read back into the other
    (`extract_frame`).

    The last frame is read back from the clip, not taken from the encode as another output of its run:
    ffmpeg feeds the output that is furthest behind first, and an output that gets no frame until the last
    made the encoder wait in bursts (a 5 s 1080p clip 4.5-5.4 s where it takes 3.5-4.2 s alone)."""
    frames = frame_count(duration_s, fps)
    graph = ";".join(
        [
            _fit_with_blurred_fill("0:v", "still", _supersampled(frame)),
            f"[still]{_ken_burns(motion, frames, frame, fps)}{_caption(caption, frame, out)},format=yuv420p[v]",
        ]
    )
    if end_frames is not None:
        first_frame = end_frames[0]
    graph, first = first_frame_output(graph, first_frame)
    graph, checked = checked_output(graph, check, frames)
    args = [*input_args(photo, still_source(photo)), "-filter_complex", graph, *checked, *first]
    args += ["-map", "[v]", "-frames:v", str(frames)]
    await run_ffmpeg(
        [*args, *clip_encoding(fps, frames, encoder), str(out)],
        planned_s=frames / fps,
        progress=progress,
        timeout_s=timeout_s or time_budget_s(frames / fps, frame),
        threads=threads,
        log_lines=check.add if check is not None else None,
    )
    if end_frames is not None:
        await extract_frame(out, end_frames[1], "last", fps=fps)


def _supersampled(frame: Size) -> Size:
    return frame[0] * SUPERSAMPLE, frame[1] * SUPERSAMPLE


def _fit_with_blurred_fill(source: str, label: str, size: Size) -> str:
    """The photo whole inside `size`, the rest filled with the same photo enlarged to cover, blurred, dimmed."""
    width, height = size
    blur_sigma = max(4, width // 48)
    return (
        f"[{source}]split=2[fill][photo];"
        f"[fill]scale={width}:{height}:force_original_aspect_ratio=increase:{IN_BT709},crop={width}:{height},"
        f"gblur=sigma={blur_sigma},eq=brightness=-0.12:saturation=0.8[backdrop];"
        f"[photo]scale={width}:{height}:force_original_aspect_ratio=decrease:{IN_BT709}[fitted];"
        f"[backdrop][fitted]overlay=x=(W-w)/2:y=(H-h)/2,setsar=1[{label}]"
    )


def _ken_burns(motion: int, frames: int, frame: Size, fps: int) -> str:
    """`frames` frames of `frame` from one still: a zoom of ZOOM in or out around an anchor of the picture."""
    zoom_in, anchor_x, anchor_y = MOTIONS[motion % len(MOTIONS)]
    step = f"{ZOOM}*on/{max(1, frames - 1)}"
    zoom = f"1+{step}" if zoom_in else f"{1 + ZOOM}-{step}"
    x = f"(iw-iw/zoom)*{anchor_x}"
    y = f"(ih-ih/zoom)*{anchor_y}"
    return f"zoompan=z={zoom}:x={x}:y={y}:d={frames}:s={frame[0]}x{frame[1]}:fps={fps}"


def _caption(caption: str | None, frame: Size, out: Path) -> str:
    """`,drawtext...` for the caption's lines (at most two, on a translucent band near the bottom), or ""."""
    if not caption or not caption.strip():
        return ""
    width, height = frame
    size_px = max(10, height // 16)
    lines = wrap(caption, size_px=size_px, width_px=int(width * 0.88), max_lines=2)
    block = TextBlock(lines, size_px, boxed=True)
    top_px = height - height // 14 - block.height_px
    return "," + ",".join(drawtext_filters(block, top_px=top_px, folder=out.parent, name=f"{out.name}.caption"))


# -- the closing card -------------------------------------------------------------------------------------


async def render_last_clip(
    title: str,
    subtitle: str | None,
    background: Path | None,
    out: Path,
    *,
    frame: Size,
    fps: int,
    duration_s: float,
    progress: Progress | None = None,
    threads: int = DEFAULT_THREADS,
    encoder: VideoEncoder = LIBX264,
    timeout_s: float | None = None,
    check: PictureCheck | None = None,
) -> None:
    """The closing card: `title` large and `subtitle` below it (Korean or any text, wrapped), centered over
    `background` blurred and dimmed and zooming slowly (or a dark plain card without one), fading to black
    over its last CLOSING_FADE_S seconds (at most a third of it). The text files go beside `out`. With
    `check`, the frames made are checked for black and frozen stretches in the same run.

    Without a background the card stands still until the fade: a frozen-picture check must not apply."""
    frames = frame_count(duration_s, fps)
    fade_s = min(CLOSING_FADE_S, frames / fps / 3)
    inputs, backdrop = _closing_backdrop(background, frame, fps, frames)
    texts = ",".join(_closing_text(title, subtitle, frame, out))
    fade = f"fade=t=out:st={frames / fps - fade_s:.4f}:d={fade_s:.4f}"
    graph, checked = checked_output(f"{backdrop};[backdrop]{texts},{fade},format=yuv420p[v]", check, frames)
    args = [*inputs, "-filter_complex", graph, *checked, "-map", "[v]", "-frames:v", str(frames)]
    await run_ffmpeg(
        [*args, *clip_encoding(fps, frames, encoder), str(out)],
        planned_s=frames / fps,
        progress=progress,
        timeout_s=timeout_s or time_budget_s(frames / fps, frame),
        threads=threads,
        log_lines=check.add if check is not None else None,
    )


def _closing_backdrop(background: Path | None, frame: Size, fps: int, frames: int) -> tuple[list[str], str]:
    """The inputs and the graph that make `[backdrop]`: the photo blurred, dimmed and slowly zooming, or a
    plain dark card."""
    width, height = frame
    if background is None:
        return [], f"color=c=0x161618:s={width}x{height}:r={fps},setsar=1[backdrop]"
    large = _supersampled(frame)
    blurred = (
        f"[0:v]scale={large[0]}:{large[1]}:force_original_aspect_ratio=increase:{IN_BT709},crop={large[0]}:{large[1]},"
        f"gblur=sigma={max(6, large[0] // 40)},eq=brightness=-0.3:saturation=0.6,setsar=1[still]"
    )
    backdrop = f"{blurred};[still]{_ken_burns(0, frames, frame, fps)}[backdrop]"
    return input_args(background, still_source(background)), backdrop


def _closing_text(title: str, subtitle: str | None, frame: Size, out: Path) -> list[str]:
    """drawtext filters for the title (up to two lines) and subtitle (up to three), centered as one block."""
    width, height = frame
    title_px = max(12, height // 10)
    subtitle_px = max(10, height // 20)
    blocks = [
        TextBlock(
            wrap(title, size_px=title_px, width_px=int(width * 0.86), max_lines=2, bold=True), title_px, bold=True
        )
    ]
    if subtitle and subtitle.strip():
        blocks.append(
            TextBlock(wrap(subtitle, size_px=subtitle_px, width_px=int(width * 0.86), max_lines=3), subtitle_px)
        )
    gap_px = subtitle_px
    total_px = sum(block.height_px for block in blocks) + gap_px * (len(blocks) - 1)
    top_px = (height - total_px) // 2
    filters: list[str] = []
    for number, block in enumerate(blocks):
        filters += drawtext_filters(block, top_px=top_px, folder=out.parent, name=f"{out.name}.text{number}")
        top_px += block.height_px + gap_px
    return filters


# -- frames -----------------------------------------------------------------------------------------------


async def extract_frame(
    video: Path, out: Path, which: Literal["first", "last"], *, fps: int | None = None, timeout_s: float = 60
) -> None:
    """The first or the last frame of `video` (what a transition starts or ends on): an uncompressed PPM if
    `out` is named `.ppm` (what the transition stage writes: 0.13 CPU s at 1080p, where a PNG's zlib took
    0.27 s), else a PNG. `ffmpeg.still_source` reads either back by the same name. Given the `fps` of a clip
    of ours (`clip_encoding`), its last frame is looked for among its last END_SEEK_FRAMES frames, where its
    last keyframe is; where none is found there (a clip of another rate), among its last half second."""
    # The last: seek that far before the end and reverse the frames from there (the seek lands on the
    # keyframe before it and the frames before it are decoded and dropped), so the last is the first out and
    # the only one encoded (writing each as a PNG over the one before cost 1.3 s more per 1080p clip).
    if which == "last" and fps is not None:
        await to_thread(out.unlink, missing_ok=True)  # what is there after the read is this read's
        await _extract(video, out, which, END_SEEK_FRAMES / fps, timeout_s)
        if await to_thread(out.exists):  # ffmpeg writes no file, and says nothing, for no frame
            return
    await _extract(video, out, which, LAST_FRAME_SEEK_S, timeout_s)


async def _extract(video: Path, out: Path, which: Literal["first", "last"], seek_s: float, timeout_s: float) -> None:
    seek = ["-sseof", f"-{seek_s:.6f}"] if which == "last" else []
    pick = ["-vf", "reverse"] if which == "last" else []
    args = [*input_args(video, CLIP, *seek), "-map", "0:v:0", *pick, "-frames:v", "1"]
    codec = "ppm" if out.suffix == ".ppm" else "png"
    args += ["-c:v", codec, "-f", "image2", str(out)]
    await run_ffmpeg(args, planned_s=0.5, timeout_s=timeout_s, threads=1)


async def extract_poster(video: Path, out_jpg: Path, *, at_s: float | None = None, timeout_s: float = 60) -> None:
    """A JPEG of `video`'s picture at `at_s` (by default POSTER_AT_S, or the middle of a shorter video)."""
    if at_s is None:
        info = await probe(video, CLIP)
        at_s = min(POSTER_AT_S, (info.video_duration_s or info.duration_s) / 2)
    args = [*input_args(video, CLIP, "-ss", f"{at_s:.3f}"), "-map", "0:v:0", "-frames:v", "1"]
    # A JPEG is BT.601 full range by definition: the video's BT.709 converted, not copied (colours 5-15% off).
    args += ["-vf", "scale=out_color_matrix=bt601:out_range=pc,format=yuvj420p"]
    args += ["-q:v", "3", "-c:v", "mjpeg", "-f", "image2", str(out_jpg)]
    await run_ffmpeg(args, planned_s=0.1, timeout_s=timeout_s, threads=1)


# -- the final render -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    duration_s: float  # as planned: the clips' lengths added up
    clips_encoded: int  # clips that could not be joined as they were, encoded again to match
    music_track_copied: bool = False  # the song laid ahead was copied (not laid again here)


async def render_final(
    clips: list[Path],
    music: Path | None,
    out: Path,
    *,
    frame: Size,
    fps: int,
    progress: Progress | None = None,
    threads: int = DEFAULT_THREADS,
    encoder: VideoEncoder = LIBX264,
    timeout_s: float | None = None,
    known: list[MediaInfo | None] | None = None,
    music_track: Path | None = None,
) -> Rendered:
    """`clips` joined in order, with `music` looped or cut to their length, faded in and out and
    loudness-normalized (silence without music): H.264 yuv420p and AAC in an MP4 that starts playing before
    it has downloaded (`+faststart`). `music_track`: the song already laid so under the clips' length
    (`lay_song`), copied as it is instead of `music` laid here.

    Clips of `frame` and `fps` in H.264 yuv420p with one set of parameters (one H.264 stream has one) are
    joined as they are, without encoding them again; any other (another size or rate, parameter sets of
    another encoder: `_encoded_again`) is first encoded by `encoder` to match, beside `out` (as is the list of
    clips), and removed after. `known`: what is already known of each clip (as the stage that made it checked it),
    None where it is to be probed."""
    if not clips:
        raise ValueError("a video needs at least one clip")
    infos = await _probe_unknown(clips, known or [None] * len(clips))
    total_s = sum(info.video_duration_s or info.duration_s for info in infos)
    conformed: dict[int, Path] = {}
    try:
        await _encode_again(clips, infos, out, frame=frame, fps=fps, threads=threads, encoder=encoder, into=conformed)
        joined = [conformed.get(number, clip) for number, clip in enumerate(clips)]
        await _join(
            joined,
            music,
            out,
            total_s=total_s,
            frame=frame,
            progress=progress,
            threads=threads,
            timeout_s=timeout_s,
            music_track=music_track,
        )
        return Rendered(total_s, clips_encoded=len(conformed), music_track_copied=music_track is not None)
    finally:
        for path in conformed.values():
            path.unlink(missing_ok=True)


async def _encode_again(
    clips: list[Path],
    infos: list[MediaInfo],
    out: Path,
    *,
    frame: Size,
    fps: int,
    threads: int,
    encoder: VideoEncoder,
    into: dict[int, Path],
) -> None:
    """The clips that cannot be joined as they are, encoded again beside `out`: their paths by number go
    into `into` as each starts (the caller removes them, half-written ones too)."""

    async def conform(numbers: list[int]) -> None:
        for number in numbers:
            into[number] = out.parent / f"{out.name}.conformed{number}.mp4"
            await _conform(clips[number], infos[number], into[number], frame, fps, threads, encoder)

    await conform([number for number, again in enumerate(_encoded_again(infos, frame, fps, encoder)) if again])
    if not into:
        return
    kept = {info.parameter_sets for number, info in enumerate(infos) if number not in into} - {None}
    made = await _parameter_sets_of(list(into.values()))
    if len(made | kept) > 1:
        # The clips kept as they are were made elsewhere, with parameter sets this encoder does not make:
        # they are encoded again too, so that the stream has one set.
        await conform([number for number in range(len(clips)) if number not in into])
        made = await _parameter_sets_of(list(into.values()))
    if len(made) > 1:  # e.g. colour tags of a caller's clips that differ
        raise NonRetryable(f"the clips differ in their H.264 parameters even encoded again ({len(made)} sets)")


async def _parameter_sets_of(paths: list[Path]) -> set[str]:
    """The parameter sets of these clips (each probed: 0.2-0.3 s; only where clips were encoded again)."""
    return {sets for path in paths if (sets := (await probe(path)).parameter_sets) is not None}


async def _join(
    clips: list[Path],
    music: Path | None,
    out: Path,
    *,
    total_s: float,
    frame: Size,
    progress: Progress | None,
    threads: int,
    timeout_s: float | None,
    music_track: Path | None = None,
) -> None:
    concat_list = out.parent / f"{out.name}.clips.txt"
    concat_list.write_text(_concat_script(clips), encoding="utf-8")
    args = input_args(concat_list, CLIP_LIST, "-safe", "0")
    if music_track is not None:  # laid and encoded before (`lay_song`): copied
        args += [*input_args(music_track, CLIP), "-map", "0:v:0", "-c:v", "copy", "-map", "1:a:0", "-c:a", "copy"]
    else:
        silence = ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]
        args += input_args(music, SONG, *LAID_SONG) if music else silence
        gain_db = await music_gain_db(music, total_s) if music else None
        args += ["-filter_complex", _music_graph("1:a", "a", total_s, gain_db=gain_db)]
        args += ["-map", "0:v:0", "-c:v", "copy", "-map", "[a]", *AUDIO_ENCODING]
    args += ["-movflags", "+faststart", "-f", "mp4", str(out)]
    await run_ffmpeg(
        args,
        planned_s=total_s,
        progress=progress,
        timeout_s=timeout_s or time_budget_s(total_s, frame),
        threads=threads,
    )


async def _conform(
    clip: Path, info: MediaInfo, out: Path, frame: Size, fps: int, threads: int, encoder: VideoEncoder
) -> Path:
    """`clip`'s picture encoded as the clips of this video are (fitted into `frame`, at `fps`)."""
    width, height = frame
    fitted = f"scale={width}:{height}:force_original_aspect_ratio=decrease"
    # The clip's own matrix read (its tags), BT.709 written. Untagged, it is read as BT.709, which is what a
    # browser showed the caller (ffmpeg's own guess, BT.601, put its reds and greens 5-15% off that).
    untagged = "setparams=colorspace=bt709," if info.color_matrix is None else ""
    picture = f"{untagged}{fitted},pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},{TO_YUV}"
    duration_s = info.video_duration_s or info.duration_s
    args = [*input_args(clip, CLIP), "-map", "0:v:0", "-vf", picture, *clip_encoding(fps, encoder=encoder), str(out)]
    await run_ffmpeg(args, planned_s=duration_s, timeout_s=time_budget_s(duration_s, frame), threads=threads)
    return out


async def _probe_unknown(clips: list[Path], known: list[MediaInfo | None]) -> list[MediaInfo]:
    """Each clip's info: `known`'s, else probed (each ffprobe is a process start: 0.2-0.3 s on 2 cores)."""
    if len(known) != len(clips):
        raise ValueError(f"{len(known)} clips known of {len(clips)}")
    limit = asyncio.Semaphore(4)

    async def one(clip: Path, info: MediaInfo | None) -> MediaInfo:
        if info is not None:
            return info
        async with limit:
            return await probe(clip, CLIP)

    return list(await asyncio.gather(*(one(clip, info) for clip, info in zip(clips, known, strict=True))))


def _encoded_again(infos: list[MediaInfo], frame: Size, fps: int, encoder: VideoEncoder) -> list[bool]:
    """Which clips are encoded again (by `encoder`) before the join: one H.264 stream has one set of
    parameters, so besides clips of another size, rate or format, those whose parameter sets differ from the
    ones most of the video has (a caller's clip from a phone, a clip of another encoder). Where those are
    not known (a result of an earlier version), by the encoders the stages recorded: clips all made by one
    encoder join as they are, whichever it was; of several, those not of `encoder` are encoded again."""
    fits = [_fits(info, frame, fps) for info in infos]
    seconds: dict[str, float] = {}
    for info, fit in zip(infos, fits, strict=True):
        if fit and info.parameter_sets is not None:
            duration_s = info.video_duration_s or info.duration_s
            seconds[info.parameter_sets] = seconds.get(info.parameter_sets, 0.0) + duration_s
    if seconds:
        # The sets of the clips this encoder made, where one says so (what is encoded again gets them too);
        # else those of most of the video.
        own = {info.parameter_sets for info in infos if info.parameter_sets in seconds and info.encoder == encoder.name}
        target = next(iter(own)) if len(own) == 1 else max(seconds, key=seconds.__getitem__)

        def again(info: MediaInfo) -> bool:
            if info.parameter_sets is None:  # a result of an earlier version (x264's) stays; a probed clip
                return info.encoder is None  # without them (no extradata) cannot be told: encoded again
            return info.parameter_sets != target

        return [not fit or again(info) for info, fit in zip(infos, fits, strict=True)]
    made_by = {info.encoder for info in infos if info.encoder is not None}
    if len(made_by) == 1 and all(fits):
        return [False] * len(infos)
    return [not fit or info.encoder not in (None, encoder.name) for info, fit in zip(infos, fits, strict=True)]


def _fits(info: MediaInfo, frame: Size, fps: int) -> bool:
    same_picture = (info.width, info.height) == frame and abs(info.fps - fps) < 0.01
    return same_picture and info.video_codec == "h264" and info.pixel_format == "yuv420p"


def _concat_script(clips: list[Path]) -> str:
    """The concat demuxer's script of `clips`, each opened by `mov` only: the script's own whitelist (`concat`
    too) passes to its files, and a clip that is itself a concat script would name files of its own."""
    files = "".join(
        f"file {_concat_quoted(clip)}\noption format_whitelist {','.join(CLIP.demuxers)}\n" for clip in clips
    )
    return "ffconcat version 1.0\n" + files


def _concat_quoted(path: Path) -> str:
    """`path` as the concat demuxer reads it: in single quotes, a quote as '\\'' (a newline cannot be said)."""
    text = str(path.resolve())
    if "\n" in text or "\r" in text:
        raise ValueError(f"a clip path with a line break: {text!r}")
    return "'" + text.replace("'", "'\\''") + "'"


async def lay_song(music: Path, out: Path, *, total_s: float, timeout_s: float | None = None) -> float:
    """`music` laid under `total_s` of video as the render lays it (looped or cut, `music_gain_db`'s gain,
    peaks limited, faded in and out) and encoded as the video's sound, into an M4A at `out`: a render given
    it (`render_final`'s `music_track`) copies it instead. The song is the render's only work on one core
    (~2 s for 110 s: the measure and the AAC encoder, which has no threads); laid by a stage that runs
    before the render, beside that stage's own encode, it costs the pipeline ~1.3 s less (docs/media.md).
    Returns the track's length as `probe` reads it."""
    gain_db = await music_gain_db(music, total_s, timeout_s=timeout_s)
    graph = _music_graph("0:a", "a", total_s, gain_db=gain_db)
    args = [*input_args(music, SONG, *LAID_SONG), "-filter_complex", graph, "-map", "[a]", *AUDIO_ENCODING]
    # `ipod`: the M4A brand, which the stored file's sniffed type then says (audio/mp4). No `+faststart`:
    # the render reads it whole and moves its own index.
    args += ["-f", "ipod", str(out)]
    await run_ffmpeg(args, planned_s=total_s, timeout_s=timeout_s or time_budget_s(total_s), threads=1)
    track = await probe(out, CLIP)
    if track.audio_codec != "aac" or track.has_video:
        raise JobError(f"the song's track came out as {track.audio_codec} (video: {track.video_codec})")
    if abs(track.duration_s - total_s) > TRACK_TOLERANCE_S:
        raise JobError(f"the song's track lasts {track.duration_s:.3f} s, not the video's {total_s:.3f} s")
    return track.duration_s


async def music_gain_db(music: Path, total_s: float, *, timeout_s: float | None = None) -> float:
    """The gain in dB that brings `music`, looped or cut to `total_s` as the render lays it, to
    LOUDNESS_TARGET_LUFS: its integrated loudness measured by ffmpeg's ebur128 over exactly those samples.

    One linear gain for the whole song (EBU R128's way for music): the song keeps its own dynamics, where
    loudnorm's dynamic mode pumps them, and it costs a tenth of the CPU (loudnorm works at 192 kHz: 1.9 s
    for a 110 s song on a 2-core VM, this 0.2 s). Silence (nothing above ebur128's gate) gets no gain."""
    found: list[float] = []
    changes = FormatChanges()  # LAID_SONG's refusal of a format that changes

    def summary(line: str) -> None:
        if match := _INTEGRATED.match(line):
            found.append(float(match[1]))
        else:
            changes(line)

    graph = f"[0:a]{','.join([*_laid(total_s), 'ebur128=framelog=verbose'])}[measured]"
    args = [*input_args(music, SONG, *LAID_SONG), "-filter_complex", graph, "-map", "[measured]"]
    try:
        await run_ffmpeg(
            [*args, "-f", "null", "-"],
            planned_s=total_s,
            timeout_s=timeout_s or time_budget_s(total_s / 10),
            threads=1,
            log_lines=summary,
        )
    except JobError:
        if changes.seen:  # the same song would fail the same way again
            raise NonRetryable(FormatChanges.REASON) from None
        raise
    if not found:
        raise JobError("ffmpeg's ebur128 reported no loudness for the song")
    # ffmpeg 5.1 parses the graph once at its start and frees it: that instance's summary measured nothing
    # (the gate's -70, as silence reads: no gain either way). A graph made again mid-song cannot be:
    # LAID_SONG refuses a format that changes.
    integrated = found[-1]
    if integrated <= SILENT_LUFS:
        return 0.0
    return min(MAX_GAIN_DB, LOUDNESS_TARGET_LUFS - integrated)


# A song is looped, and read at one sample rate and channel layout: ffmpeg would otherwise build the graph
# again where a joined file's format changes, restarting its cut (`atrim`), so a loop would never end.
LAID_SONG = ("-reinit_filter", "0", "-stream_loop", "-1")


def _laid(total_s: float) -> list[str]:
    """The filters that lay a song (looped as an input) under `total_s` of video: 48 kHz stereo, cut to
    length. Stereo here, not at the output, so its loudness is measured as it plays (a 5.1 song measured
    as 5.1 played 3 dB louder than meant once mixed down)."""
    # A looped input's timestamps jump where the file's padding was: number the samples again before cutting.
    return ["aresample=48000", "aformat=channel_layouts=stereo", "asetpts=N/SR/TB", f"atrim=end={total_s:.6f}"]


def _music_graph(source: str, label: str, total_s: float, *, gain_db: float | None) -> str:
    """`[label]`: the sound cut (or padded) to exactly `total_s`, made `gain_db` louder (`music_gain_db`)
    with its peaks limited, faded in and out, at 48 kHz. No gain: silence laid as it is."""
    fade_in_s = min(AUDIO_FADE_IN_S, total_s / 4)
    fade_out_s = min(AUDIO_FADE_OUT_S, total_s / 4)
    end = f"{total_s:.6f}"
    steps = _laid(total_s)
    if gain_db is not None:  # on the samples it was measured on, before the fades
        steps += [f"volume={gain_db:.2f}dB", f"alimiter=limit={PEAK_LIMIT:.4f}:level=false:latency=true"]
    steps += [f"afade=t=in:d={fade_in_s:.4f}", f"afade=t=out:st={total_s - fade_out_s:.6f}:d={fade_out_s:.4f}"]
    steps += [f"apad=whole_dur={end}", f"atrim=end={end}"]
    return f"[{source}]{','.join(steps)}[{label}]"
