"""Running ffmpeg and ffprobe (Debian's, installed by `./dev`): bounded in time and output, stopped for good.

Each program runs in a process group of its own, so a stop reaches everything it started: SIGTERM to the
group, SIGKILL after `KILL_AFTER_S`, then a wait, whatever ended the run (the task canceled, its timeout,
a progress callback that raised). What a failure shows is the end of ffmpeg's stderr, with the folders
of the files it was given cut out (a tenant sees a job's error; the server's paths are none of theirs).

Every input file is named through `input_args`, which holds ffmpeg to the demuxers of its role (`Source`)
and to the `file` protocol: left to itself ffmpeg picks the demuxer by the bytes, and a tenant's "song"
that reads as an HLS playlist or a concat script names any file of the server, which the render would
then mix into the tenant's video. `run_ffmpeg` and `run_capture` refuse an input built any other way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inferline.errors import JobError, NonRetryable
from inferline.files import sniff
from inferline.subprocesses import dying_with_parent

Progress = Callable[[float], Awaitable[None]]
"""Percent (0-100) of one step done; awaited, so keep it quick (ffmpeg waits while it runs)."""

KILL_AFTER_S = 0.5  # ffmpeg finishes the frame it is on at SIGTERM; longer than this, it is stuck
STDERR_TAIL_LINES = 12
MAX_LINE_BYTES = 4096  # a longer line is cut: nothing ffmpeg prints on purpose is that long
DEFAULT_THREADS = 2  # the reference machine has 2 cores; callers running clips in parallel pass 1
INSTALL_HINT = "install it with `sudo apt-get install ffmpeg` (./dev does this)"


class TimedOut(JobError):
    """ffmpeg or ffprobe ran past its time limit (and was stopped): the machine too busy, or the input."""


@dataclass(frozen=True)
class Source:
    """What an input file may be: the demuxers allowed to read it (`ffmpeg -formats` names them), and
    the one forced with `-f` where its type is certain."""

    demuxers: tuple[str, ...]
    forced: str | None = None


# A song as uploaded: MP3, ADTS AAC, M4A (the `mov` demuxer), WAV, Ogg (Vorbis, Opus) or FLAC.
SONG = Source(("mp3", "aac", "mov", "wav", "ogg", "flac"))
CLIP = Source(("mov",), forced="mov")  # a video clip: MP4 or QuickTime, the clips' own encoding included
STILL = Source(("png_pipe",), forced="png_pipe")  # a PNG this server wrote (a frame of a clip, a test's photo)
# A normalized photo as Pillow wrote it: an uncompressed PPM (`images.normalize_photo`), no zlib to run either way.
RAW_STILL = Source(("ppm_pipe",), forced="ppm_pipe")
STILL_SEQUENCE = Source(("image2",), forced="image2")  # numbered PNGs this server wrote (`%04d` in the path)
CLIP_LIST = Source(("concat", "mov"), forced="concat")  # a concat script this server wrote, of CLIPs
_SONG_DEMUXERS = {
    sniff.MP3: "mp3",
    sniff.AAC: "aac",
    sniff.M4A: "mov",
    sniff.WAV: "wav",
    sniff.OGG: "ogg",
    sniff.FLAC: "flac",
}


def song_source(content_type: str | None) -> Source:
    """SONG, held to the one demuxer of the song's sniffed `content_type` where it is one of them."""
    demuxer = _SONG_DEMUXERS.get(content_type or "")
    return SONG if demuxer is None else Source((demuxer,), forced=demuxer)


def still_source(path: Path) -> Source:
    """The Source of a still this server wrote, by the suffix it gave it: RAW_STILL for `.ppm`, else STILL."""
    return RAW_STILL if path.suffix == ".ppm" else STILL


def input_args(path: Path, source: Source, *options: str) -> list[str]:
    """`-i path` for ffmpeg or ffprobe, read only by `source`'s demuxers and only as a local file;
    `options` are the input's own (`-ss`, `-stream_loop`, `-framerate`) and go before it."""
    held = ["-protocol_whitelist", "file", "-format_whitelist", ",".join(source.demuxers)]
    if source.forced is not None:
        held += ["-f", source.forced]
    # Absolute: a relative name with a colon ("a:b.mp3") would name a protocol, not a file.
    return [*options, *held, "-i", str(path.absolute())]


def _check_inputs(args: list[str]) -> None:
    """ValueError for an input not built by `input_args`; a `-f lavfi` graph (ours: it reads no file) passes."""
    start = 0
    for index, arg in enumerate(args):
        if arg != "-i":
            continue
        options = args[start:index]
        held = "-format_whitelist" in options and "-protocol_whitelist" in options
        if not held and options[-2:] != ["-f", "lavfi"]:
            name = args[index + 1] if index + 1 < len(args) else "?"
            raise ValueError(f"the input {name!r} is not held to its demuxers: name it with input_args()")
        start = index + 2


def executable(name: str) -> str:
    """The path of `ffmpeg` or `ffprobe`, or an error that says how to install it."""
    found = shutil.which(name)
    if found is None:
        raise NonRetryable(f"{name} is not installed; {INSTALL_HINT}")
    return found


def escape_filter_value(value: str) -> str:
    """`value` as one option value inside a filter graph (`fontfile=`, `textfile=`): escaped for the option
    parser, then for the graph parser, so a `:`, `'`, `,` or `[` in it is a character, never syntax."""
    option_level = re.sub(r"([\\':])", r"\\\1", value)
    return re.sub(r"([\\'\[\],;])", r"\\\1", option_level)


def time_budget_s(planned_s: float, frame: tuple[int, int] = (1280, 720)) -> float:
    """A generous time limit for encoding `planned_s` of video at `frame`: a run past it is stuck, not slow."""
    pixels_factor = max(1.0, frame[0] * frame[1] / (1280 * 720))
    return 60.0 + planned_s * 4.0 * pixels_factor


async def run_ffmpeg(
    args: list[str],
    *,
    planned_s: float,
    progress: Progress | None = None,
    timeout_s: float,
    threads: int = DEFAULT_THREADS,
    log_lines: Callable[[str], None] | None = None,
    log_level: Literal["info", "error"] = "info",
) -> None:
    """Run `ffmpeg <args>`, whose last argument is the output (its encoder gets `-threads threads`).

    `progress` receives `out_time_us` against `planned_s`, rising, and 100 at a successful end. With
    `log_lines`, ffmpeg logs at `log_level` and every stderr line goes to it (filters such as blackdetect report
    there). A non-zero exit raises `JobError` with the end of stderr; a run past `timeout_s` raises `TimedOut`
    (a `JobError`), after the process group is stopped, as it is on cancellation."""
    if not args:
        raise ValueError("ffmpeg needs at least an output")
    _check_inputs(args)
    level = log_level if log_lines is not None else "error"
    cmd = [executable("ffmpeg"), "-nostdin", "-hide_banner", "-nostats", "-loglevel", level, "-y"]
    cmd += ["-progress", "pipe:1", "-filter_threads", str(threads), "-filter_complex_threads", str(threads)]
    cmd += [*args[:-1], "-threads", str(threads), args[-1]]
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def on_stderr(line: str) -> None:
        tail.append(line)
        if log_lines is not None:
            log_lines(line)

    reporter = _ProgressReporter(planned_s, progress)
    returncode = await _run(cmd, timeout_s=timeout_s, on_stdout=reporter.feed, on_stderr=on_stderr)
    if returncode != 0:
        raise JobError(f"ffmpeg exited with status {returncode}: {_redacted(' | '.join(tail), args)}")
    await reporter.done()


async def run_capture(cmd: list[str], *, timeout_s: float, max_output_bytes: int) -> tuple[int, str, str]:
    """Run a program (ffprobe) to its end: (exit status, stdout, the end of stderr). Output past
    `max_output_bytes` raises `JobError`; so does a run past `timeout_s`."""
    _check_inputs(cmd)
    stdout: list[str] = []
    size = 0
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    async def on_stdout(line: str) -> None:
        nonlocal size
        size += len(line) + 1
        if size > max_output_bytes:
            raise JobError(f"{Path(cmd[0]).name} printed more than {max_output_bytes} bytes")
        stdout.append(line)

    async def on_stderr(line: str) -> None:
        tail.append(line)

    returncode = await _run(cmd, timeout_s=timeout_s, on_stdout=on_stdout, on_stderr=on_stderr)
    return returncode, "\n".join(stdout), _redacted(" | ".join(tail), cmd)


class _ProgressReporter:
    """Turns ffmpeg's `-progress` lines (`key=value`, a block per update) into rising percents."""

    def __init__(self, planned_s: float, progress: Progress | None) -> None:
        self.planned_us = max(planned_s, 1e-3) * 1_000_000
        self.progress = progress
        self.reported = -1.0

    async def feed(self, line: str) -> None:
        key, _, value = line.partition("=")
        if key != "out_time_us" or not value.strip().isdigit():  # "N/A" before the first frame
            return
        percent = min(99.0, int(value) / self.planned_us * 100)
        if percent >= self.reported + 1.0:
            await self._report(percent)

    async def done(self) -> None:
        await self._report(100.0)

    async def _report(self, percent: float) -> None:
        self.reported = percent
        if self.progress is not None:
            await self.progress(percent)


async def _run(
    cmd: list[str],
    *,
    timeout_s: float,
    on_stdout: Callable[[str], Awaitable[None]],
    on_stderr: Callable[[str], None] | Callable[[str], Awaitable[None]],
) -> int:
    async with _process_group(cmd) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as group:
                group.create_task(_read_lines(proc.stdout, on_stdout))
                group.create_task(_read_lines(proc.stderr, on_stderr))
                group.create_task(proc.wait())
        except TimeoutError:
            raise TimedOut(f"{Path(cmd[0]).name} did not finish within {timeout_s:.0f} s") from None
        except BaseExceptionGroup as group_error:  # a callback raised: that error, not the group
            raise group_error.exceptions[0] from None
    assert proc.returncode is not None
    return proc.returncode


@contextlib.asynccontextmanager
async def _process_group(cmd: list[str]) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *dying_with_parent(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so a stop reaches all of it
    )
    try:
        yield proc
    finally:
        await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the group, SIGKILL after KILL_AFTER_S, then reap it; nothing when it has ended."""
    if proc.returncode is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_AFTER_S)
    except TimeoutError:
        pass
    finally:  # even when this wait is canceled in turn
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _read_lines(
    stream: asyncio.StreamReader, on_line: Callable[[str], None] | Callable[[str], Awaitable[None]]
) -> None:
    """Every line of `stream` to `on_line`, each cut at MAX_LINE_BYTES (no line grows memory unbounded)."""
    pending = b""
    while chunk := await stream.read(65536):
        lines = re.split(rb"[\r\n]", pending + chunk)
        pending = lines.pop()[:MAX_LINE_BYTES]
        for line in lines:
            await _deliver(on_line, line)
    if pending:
        await _deliver(on_line, pending)


async def _deliver(on_line: Callable[[str], None] | Callable[[str], Awaitable[None]], line: bytes) -> None:
    text = line[:MAX_LINE_BYTES].decode(errors="replace").strip()
    if text:
        result = on_line(text)
        if result is not None:
            await result


def _redacted(text: str, args: list[str]) -> str:
    """`text` without the folders of the paths in `args` (a file's own name stays: it says which input)."""
    folders = {str(Path(arg).parent) for arg in args if arg.startswith("/") and len(arg) > 1}
    for folder in sorted(folders, key=len, reverse=True):
        if folder != "/":
            text = text.replace(folder + "/", "")
    return text
