"""Media benchmark: 10 photos and a song to a 1080p memorial video with 6 s transitions, through the
pipeline vs one hand-written ffmpeg command making the same video on the same machine.

- baseline: one ffmpeg, one filter graph: each photo fitted over its blurred fill with its Ken Burns zoom
  and caption, an xfade between the last picture of each clip and the first of the next (held stills, as
  the transition kind makes them), the closing card, the music looped, normalized and faded; one encode
  (libx264 veryfast crf 20, or NVENC where `--encoder` picks it; AAC, +faststart). The same filters the
  stages use (media/clips.py).
- inferline: `serve --workers N` (SQLite), a project with the photos and the song, `POST .../run`, timed
  from the run to the job's success (the uploads are not timed; the baseline reads the files directly).
  Its CPU seconds twice: the server's whole life (its start and the uploads too), and the run's only (the
  server's and its ffmpeg runs' between the run's start and its success, from /proc).
  With one slot the stages run one after the other; with two, the canvas clips (and the transitions) run
  two at a time.

Run: `./dev bench media` (the full size: minutes on 2 cores); `--small` for a smoke run (3 photos, 180p).
Target (issue 17): the pipeline on one slot within 10% of the baseline; the speed-up of two slots reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import platform
import resource
import sqlite3
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

import httpx
from PIL import Image, ImageDraw

from inferline.jobs.model import TERMINAL_STATUSES
from inferline.media import clips, transitions
from inferline.media.encoders import ENCODERS, EncoderChoice, VideoEncoder
from inferline.media.ffmpeg import SONG, Source, input_args, run_ffmpeg
from inferline.media.options import SIZES
from inferline.media.probe import probe
from serving import serve  # bench/ is on sys.path: these files run as scripts

TRANSITION_S = 6
POLL_S = 1.0  # how often the bench asks for the run's status, as a page showing it would
LAST_CLIP_S = 6.0
CAPTIONS = ["할머니의 젊은 날", "1965년 여름, 부산", "손주들과 함께", "고향 집 앞에서", "칠순 잔치"]
TITLE, SUBTITLE = "김순자", "1941 \u2013 2026"


@dataclass(frozen=True)
class Case:
    photos: int
    resolution: str
    fps: int
    photo_s: float

    @property
    def frame(self) -> tuple[int, int]:
        return SIZES[self.resolution]


# -- inputs -------------------------------------------------------------------------------------------------


def make_photo(out: Path, seed: int) -> Path:
    """A 12-megapixel-like JPEG (4000x3000, portrait every third) with texture, so no clip looks frozen."""
    size = (3000, 4000) if seed % 3 == 2 else (4000, 3000)
    image = Image.new("RGB", size, (60 + seed * 17 % 150, 90, 140))
    draw = ImageDraw.Draw(image)
    for i in range(0, size[0] + size[1], 40):
        draw.line([(i, 0), (i - size[1], size[1])], fill=((i * 7 + seed * 50) % 256, (i * 3) % 256, 200), width=14)
    for i in range(12):
        x, y = (i * 331 + seed * 97) % size[0], (i * 577 + seed * 61) % size[1]
        draw.ellipse((x, y, x + size[0] // 8, y + size[1] // 8), fill=(255, 240 - i * 15, i * 20))
    image.save(out, format="JPEG", quality=90)
    return out


def make_song(out: Path, seconds: float) -> Path:
    """A WAV of two tones (44.1 kHz stereo), shorter than the video: the render loops it."""
    rate = 44100
    with wave.open(str(out), "wb") as song:
        song.setnchannels(2)
        song.setsampwidth(2)
        song.setframerate(rate)
        frames = bytearray()
        for i in range(int(rate * seconds)):
            value = int(6000 * math.sin(2 * math.pi * 220 * i / rate) + 3000 * math.sin(2 * math.pi * 330 * i / rate))
            frames += value.to_bytes(2, "little", signed=True) * 2
        song.writeframes(bytes(frames))
    return out


# -- the baseline: one ffmpeg command -------------------------------------------------------------------------


def baseline_graph(case: Case, work: Path, gain_db: float) -> tuple[str, float]:
    """The filter graph (input 0: the first photo again, for the closing card; 1..n: the photos; n+1: the
    song) and the video's length in seconds. Uses the stages' own filter builders (media/clips.py)."""
    frame, fps = case.frame, case.fps
    photo_frames = clips.frame_count(case.photo_s, fps)
    held = clips.frame_count(TRANSITION_S, fps)
    parts, order = [], []
    for i in range(case.photos):
        caption = clips._caption(CAPTIONS[i % len(CAPTIONS)], frame, work / f"clip{i}.mp4")
        parts.append(clips._fit_with_blurred_fill(f"{i + 1}:v", f"s{i}", clips._supersampled(frame)))
        # The first and the last picture of the clip, which the transitions start and end on.
        stills = ([f"[f{i}]"] if i > 0 else []) + ([f"[l{i}]"] if i + 1 < case.photos else [])
        parts.append(f"[s{i}]split={1 + len(stills)}[k{i}]{''.join(stills)}")
        parts.append(f"[k{i}]{clips._ken_burns(i, photo_frames, frame, fps)}{caption},format=yuv420p,setsar=1[c{i}]")
        if i > 0:
            parts.append(f"[f{i}]{_still(i, photo_frames, frame, fps, last=False)}{caption}[first{i}]")
        if i + 1 < case.photos:
            parts.append(f"[l{i}]{_still(i, photo_frames, frame, fps, last=True)}{caption}[last{i}]")
        order.append(f"[c{i}]")
        if i + 1 < case.photos:
            crossing = transitions._crossing(transitions.xfade_name("auto", i), held, fps)
            # The stills as the stages have them: a clip's frame read back as RGB (then made YUV again).
            as_read = "scale=in_color_matrix=bt709:in_range=tv,format=rgb24,"
            parts.append(f"[last{i}]{as_read}{transitions._held_still(frame, held)}[from{i}]")
            parts.append(f"[first{i + 1}]{as_read}{transitions._held_still(frame, held)}[to{i}]")
            parts.append(f"[from{i}][to{i}]{crossing},trim=end_frame={held},format=yuv420p,setsar=1[t{i}]")
            order.append(f"[t{i}]")
    closing_frames = clips.frame_count(LAST_CLIP_S, fps)
    _, backdrop = clips._closing_backdrop(Path("first photo"), frame, fps, closing_frames)
    texts = ",".join(clips._closing_text(TITLE, SUBTITLE, frame, work / "last.mp4"))
    fade_s = min(clips.CLOSING_FADE_S, closing_frames / fps / 3)
    fade = f"fade=t=out:st={closing_frames / fps - fade_s:.4f}:d={fade_s:.4f}"
    parts.append(f"{backdrop};[backdrop]{texts},{fade},format=yuv420p,setsar=1[e]")
    order.append("[e]")
    total_s = (case.photos * photo_frames + (case.photos - 1) * held + closing_frames) / fps
    parts.append(f"{''.join(order)}concat=n={len(order)}:v=1:a=0[v]")
    parts.append(clips._music_graph(f"{case.photos + 1}:a", "a", total_s, gain_db=gain_db))
    return ";".join(parts), total_s


def _still(motion: int, frames: int, frame: tuple[int, int], fps: int, *, last: bool) -> str:
    """One picture of a clip's zoom: its first (on=0) or its last (on=frames-1)."""
    zoom_in, anchor_x, anchor_y = clips.MOTIONS[motion % len(clips.MOTIONS)]
    at_end = 1 + clips.ZOOM if zoom_in else 1.0
    at_start = 1.0 if zoom_in else 1 + clips.ZOOM
    zoom = at_end if last else at_start
    position = f"x=(iw-iw/zoom)*{anchor_x}:y=(ih-ih/zoom)*{anchor_y}"
    return f"zoompan=z={zoom}:{position}:d=1:s={frame[0]}x{frame[1]}:fps={fps}"


async def baseline(
    case: Case, photos: list[Path], song: Path, work: Path, encoder: VideoEncoder, threads: int
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of ffmpeg)."""
    jpeg = Source(("jpeg_pipe",), forced="jpeg_pipe")
    inputs = input_args(photos[0], jpeg)
    for photo in photos:
        inputs += input_args(photo, jpeg)
    inputs += input_args(song, SONG, *clips.LAID_SONG)
    out = work / "baseline.mp4"
    started, cpu_before = time.perf_counter(), children_cpu_s()
    # The song's loudness is measured first, as the render does (one linear gain needs the whole song's).
    gain_db = await clips.music_gain_db(song, baseline_graph(case, work, 0.0)[1])
    graph, total_s = baseline_graph(case, work, gain_db)
    args = [*inputs, "-filter_complex", graph, "-map", "[v]", *encoder.args(), *clips.COLOUR_TAGS, "-r", str(case.fps)]
    args += ["-map", "[a]", "-c:a", "aac", "-b:a", "192k", "-ar", "48000", "-ac", "2", "-movflags", "+faststart"]
    await run_ffmpeg([*args, "-f", "mp4", str(out)], planned_s=total_s, timeout_s=3600, threads=threads)
    elapsed, cpu_s = time.perf_counter() - started, children_cpu_s() - cpu_before
    made = await probe(out)
    assert abs(made.duration_s - total_s) < 0.2, f"the baseline made {made.duration_s:.2f} s, not {total_s:.2f} s"
    return elapsed, cpu_s


def children_cpu_s() -> float:
    """User + system CPU seconds of the child processes ended and waited for so far (a server's counts its own
    ffmpeg runs once it ends): less moved by other work on a shared machine than wall time."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


# -- the pipeline ---------------------------------------------------------------------------------------------


def process_cpu_s(marker: str, *, own: bool = False) -> float:
    """User + system CPU seconds of the one live process whose command line has `marker`, with those of its
    children it has waited for (the server and the ffmpeg runs it has ended), from /proc; `own`: its own
    only (the server's Python: the stages' bookkeeping, polls, requests)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        counted = fields[11:13] if own else fields[11:15]  # utime stime, then cutime cstime
        return sum(int(value) for value in counted) / os.sysconf("SC_CLK_TCK")
    raise LookupError(f"no process with {marker!r}")


async def pipeline(
    case: Case, photos: list[Path], song: Path, data_dir: Path, slots: int
) -> tuple[float, float, float, float]:
    """(the run's wall time in seconds, the video's length, the CPU seconds of the server and all it ran: its
    start and the uploads too, which the wall time leaves out; and those of the run only, as timed)."""
    cpu_before = children_cpu_s()
    async with (
        serve(data_dir, "--workers", str(slots)) as (port, key),
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=600
        ) as client,
    ):
        made = await client.post("/api/v1/projects", json={"name": "bench", "title": TITLE, "subtitle": SUBTITLE})
        project = made.json()["id"]
        for i, path in enumerate([*photos, song]):
            caption = {"caption": CAPTIONS[i % len(CAPTIONS)]} if path != song else {}
            with path.open("rb") as handle:
                response = await client.post(
                    f"/api/v1/projects/{project}/assets", files={"file": (path.name, handle)}, data=caption
                )
            response.raise_for_status()
        options: dict[str, object] = {"resolution": case.resolution, "fps": case.fps, "photo_s": case.photo_s}
        server = f"--data-dir {data_dir} "
        started, run_cpu_before, own_cpu_before = time.time(), process_cpu_s(server), process_cpu_s(server, own=True)
        job = (
            await client.post(f"/api/v1/projects/{project}/run", json=options | {"transition_s": TRANSITION_S})
        ).json()
        # Polled as a page showing the run would (each poll is a request the server answers on the cores the
        # run uses: every 0.1 s, as until session 23, ~850 of them); the end is the job's own `finished_at`,
        # not the poll that saw it (the server's clock is this machine's).
        while job["status"] not in TERMINAL_STATUSES:
            await asyncio.sleep(POLL_S)
            job = (await client.get(f"/api/v1/jobs/{job['id']}")).json()
        run_cpu_s = process_cpu_s(server) - run_cpu_before
        own_cpu_s = process_cpu_s(server, own=True) - own_cpu_before
        elapsed = datetime.fromisoformat(job["finished_at"]).timestamp() - started
    assert job["status"] == "succeeded", job["error"]
    stages_report(data_dir / "inferline.db", job["id"], elapsed, slots, own_cpu_s)
    return elapsed, float(job["result"]["duration_s"]), children_cpu_s() - cpu_before, run_cpu_s


def stages_report(database: Path, job_id: str, elapsed_s: float, slots: int, server_cpu_s: float) -> None:
    """Each stage kind's wall time (its children's last attempts, started to finished) and, with one slot
    (the children one after the other), the run's time outside them: the pipeline's own scheduling."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(
            "SELECT kind, started_at, finished_at FROM jobs WHERE idempotency_key LIKE ?",
            (f"%child:{job_id}:%",),
        ).fetchall()
    spans = {kind: 0.0 for kind, _, _ in rows}
    for kind, started, finished in rows:
        spans[kind] += (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    shown = ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in sorted(spans.items()))
    outside = ""
    if slots == 1:  # one after the other: the gaps are the time from one child's end to the next one's start
        times = sorted((datetime.fromisoformat(s), datetime.fromisoformat(f)) for _, s, f in rows)
        gaps_s = [(start - end).total_seconds() for (_, end), (start, _) in itertools.pairwise(times)]
        outside = f"; outside them {elapsed_s - sum(spans.values()):.1f} s, between them {sum(gaps_s):.1f} s"
    print(
        f"  {slots} slot(s): {len(rows)} stage jobs: {shown}{outside} (run {elapsed_s:.1f} s; the server process's"
        f" own CPU {server_cpu_s:.1f} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a smoke run: 3 photos at 180p, 1 s each")
    parser.add_argument("--photos", type=int, default=10)
    parser.add_argument("--resolution", choices=sorted(SIZES), help="instead of 1080p (180p with --small)")
    parser.add_argument("--photo-s", type=float, help="a photo's seconds, instead of 5 (1 with --small)")
    parser.add_argument("--slots", default="1,2", help="the pipeline's runs: `serve --workers N` for each N")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="baseline and pipeline runs alternated this many times; the ratios' median is reported too",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="each ffmpeg's threads (its encoder's and its filters'), the baseline's and the pipeline's "
        "(media_ffmpeg_threads); by default the machine's cores for the baseline, the setting's for the pipeline",
    )
    parser.add_argument(
        "--encoder",
        choices=["auto", *ENCODERS],
        default="auto",
        help="H.264 encoder of the baseline and the pipeline (media_video_encoder): auto takes NVENC where it works",
    )
    args = parser.parse_args()
    encoder = asyncio.run(EncoderChoice(args.encoder).get())
    threads = args.threads or os.cpu_count() or 2  # the baseline's; the servers' own setting unless given
    if args.threads is not None:
        if not 1 <= args.threads <= 64:
            parser.error("--threads: from 1 to 64 (media_ffmpeg_threads)")
        os.environ["INFERLINE_MEDIA_FFMPEG_THREADS"] = str(args.threads)  # each ffmpeg's, as the baseline's one
    os.environ["INFERLINE_MEDIA_VIDEO_ENCODER"] = encoder.name  # the servers' setting: both encode alike
    case = Case(3, "180p", 30, 1.0) if args.small else Case(args.photos, "1080p", 30, 5.0)
    case = Case(case.photos, args.resolution or case.resolution, case.fps, args.photo_s or case.photo_s)
    slots = [int(n) for n in args.slots.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = [make_photo(folder / f"photo{i}.jpg", i) for i in range(case.photos)]
        song = make_song(folder / "song.wav", 40.0)
        load = os.getloadavg()[0]
        # Alternated, so that a slower minute of a shared machine falls on both: each round is a ratio. Every
        # other round runs the pipeline first, so a machine slowing down (or speeding up) over a run does
        # not always fall on the same side.
        rounds = []
        for number in range(args.rounds):
            runs: dict[int, tuple[float, float, float, float]] = {}
            if number % 2:
                runs = {n: asyncio.run(pipeline(case, photos, song, folder / f"data{n}-{number}", n)) for n in slots}
            base = asyncio.run(baseline(case, photos, song, folder, encoder, threads))
            if not number % 2:
                runs = {n: asyncio.run(pipeline(case, photos, song, folder / f"data{n}-{number}", n)) for n in slots}
            rounds.append((base, runs))
            load = max(load, os.getloadavg()[0])
    if args.rounds > 1:
        fastest_base_s = min(base[0] for base, _ in rounds)
        for n in slots:
            ratios = sorted(runs[n][0] / base[0] for base, runs in rounds)
            shown = ", ".join(f"{wall:.2f}" for wall in ratios)
            print(f"{n} slot(s), wall time against the baseline in each round: {shown}; median {median(ratios):.2f}")
            # A shared machine's noise only ever adds time: each side's fastest run is its least disturbed.
            fastest_s = min(runs[n][0] for _, runs in rounds)
            print(
                f"{n} slot(s), fastest against fastest: {fastest_s:.1f} s / {fastest_base_s:.1f} s = "
                f"{fastest_s / fastest_base_s:.2f}"
            )
    (base_s, base_cpu_s), runs = rounds[-1]  # the table: the last round
    length_s = next(iter(runs.values()))[1]
    print(
        f"Media benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {case.photos} photos ({case.photo_s:g} s each), {TRANSITION_S} s "
        f"transitions, {case.resolution} at {case.fps} fps, {encoder.name}, ffmpeg threads {threads} (baseline) / "
        f"{os.environ.get('INFERLINE_MEDIA_FFMPEG_THREADS', 'default')} (pipeline): "
        f"a {length_s:.0f} s video with music; "
        "load average "
        f"(1 min) up to {load:.1f}\n"
    )
    print(
        "| measure | wall time (s) | vs baseline | CPU user+sys (s) | vs baseline | CPU of the run (s) | vs baseline |"
    )
    print("|---|---|---|---|---|---|---|")
    base = f"{base_s:.1f} | 1.00 | {base_cpu_s:.1f} | 1.00 | {base_cpu_s:.1f} | 1.00"
    print(f"| one hand-written ffmpeg command (baseline) | {base} |")
    for n, (wall_s, _, cpu_s, run_cpu_s) in runs.items():
        ratios = f"{wall_s / base_s:.2f} | {cpu_s:.1f} | {cpu_s / base_cpu_s:.2f}"
        ratios += f" | {run_cpu_s:.1f} | {run_cpu_s / base_cpu_s:.2f}"
        print(f"| pipeline, `serve --workers {n}` | {wall_s:.1f} | {ratios} |")
    if 1 in runs and 2 in runs:
        print(f"| speed-up of two slots over one | {runs[1][0] / runs[2][0]:.2f}x | | | | | |")


if __name__ == "__main__":
    sys.exit(main())
