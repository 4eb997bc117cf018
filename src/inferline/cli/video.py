"""`video make`: photos (and a song) in, a memorial video out, with a progress bar per stage; Ctrl-C cancels."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from rich.progress import Progress, TaskID

from inferline.cli.common import (
    DataDir,
    JobView,
    Key,
    ServerOrEmbedded,
    api_client,
    call,
    ctrl_c_remembered,
    err,
    follow_jobs,
    progress_bars,
)
from inferline.media.options import SIZES
from inferline.media.pipeline import PHASES, phase_spans

app = typer.Typer(help="Memorial videos from photos.", no_args_is_help=True)

STAGE_NAMES = {"canvas": "photo clips", "transition": "transitions", "last_clip": "closing card", "render": "render"}


@app.command()
def make(
    photos: Annotated[list[Path], typer.Argument(help="photos in playing order (JPEG, PNG, WebP, HEIC)", exists=True)],
    title: Annotated[str, typer.Option(help="on the closing card, e.g. the name")],
    out: Annotated[Path, typer.Option("--out", help="the MP4 to write")],
    subtitle: Annotated[str | None, typer.Option(help='under the title, e.g. "1941-2026"')] = None,
    music: Annotated[Path | None, typer.Option(help="a song (MP3, AAC, WAV, OGG, FLAC)", exists=True)] = None,
    resolution: Annotated[str, typer.Option(help="180p, 360p, 720p or 1080p")] = "720p",
    fps: Annotated[int, typer.Option(help="frames per second")] = 30,
    photo_s: Annotated[float, typer.Option("--photo-s", help="seconds each photo shows")] = 5.0,
    transition_s: Annotated[int, typer.Option("--transition-s", help="6 or 10")] = 6,
    transition: Annotated[str, typer.Option(help="auto, fade, dissolve, wipe, slide, circle, radial, smooth")] = "auto",
    server: ServerOrEmbedded = None,
    key: Key = None,
    data_dir: DataDir = None,
) -> None:
    """Make a memorial video through a server, or in-process on the embedded default (SQLite under
    --data-dir): a project with the photos and song is created and run. Ctrl-C cancels the run."""
    if resolution not in SIZES:
        err.print(f"--resolution must be one of {', '.join(SIZES)}, not {resolution!r}")
        raise typer.Exit(2)
    options = {"resolution": resolution, "fps": fps, "photo_s": photo_s, "transition_s": transition_s}
    options["transition"] = transition
    # A Ctrl-C that Python dropped (`ctrl_c_remembered`) is acted on as one that raised: before the run
    # starts, no run; from its request to its end, the run canceled.
    with api_client(server, key, data_dir) as client, ctrl_c_remembered() as pressed:
        project = _project(client, photos, music, title=title, subtitle=subtitle, name=out.stem)
        if pressed.is_set():
            raise typer.Exit(130)
        job_id: str | None = None
        try:  # one span from the run's request to its end: a Ctrl-C anywhere in it cancels the run
            job_id = call(client, "POST", f"/api/v1/projects/{project}/run", json=options)["id"]
            assert job_id is not None
            done = _follow(client, job_id, [photo_s] * len(photos), transition_s, pressed)
        except KeyboardInterrupt:  # before its answer came back, the run may have started: found by the project
            err.print("canceling the run...")
            _cancel(client, project, job_id)
        if done.get("status") != "succeeded":
            reason = (done.get("error") or {}).get("message") or done.get("status")
            err.print(f"the video was not made: {reason}")
            raise typer.Exit(1)
        _download(client, f"/api/v1/projects/{project}/video", out)
    err.print(f"{out}: {done['result']['duration_s']:.1f} s, {resolution}")


def _project(
    client: httpx.Client, photos: list[Path], music: Path | None, *, title: str, subtitle: str | None, name: str
) -> str:
    """A new project with the photos in order, then the song; its id."""
    body = {"name": name[:200] or "video", "title": title, "subtitle": subtitle}
    project_id: str = call(client, "POST", "/api/v1/projects", json=body)["id"]
    for path in [*photos, *([music] if music else [])]:
        with path.open("rb") as handle:
            call(client, "POST", f"/api/v1/projects/{project_id}/assets", files={"file": (path.name, handle)})
    return project_id


class _StageBars:
    """A bar per stage of the run, each filled by its share of the run's progress."""

    def __init__(self, progress: Progress, photos_s: list[float], transition_s: float) -> None:
        self.progress = progress
        self.spans = phase_spans(photos_s, transition_s)
        self.tasks: dict[str, TaskID] = {phase: progress.add_task(STAGE_NAMES[phase], total=100) for phase in PHASES}

    def show(self, job: JobView) -> None:
        percent = float(job.get("progress") or 0)
        finished = job.get("status") == "succeeded"
        for phase, (start, end) in self.spans.items():
            share = 100.0 if finished else (percent - start) / max(end - start, 1e-6) * 100
            self.progress.update(self.tasks[phase], completed=min(100.0, max(0.0, share)))


def _follow(
    client: httpx.Client, job_id: str, photos_s: list[float], transition_s: float, pressed: threading.Event
) -> JobView:
    """The run followed to its end with a bar per stage (a Ctrl-C leaves the bars first). A Ctrl-C that
    Python dropped (`pressed`) raises KeyboardInterrupt here, before the run is followed or at its next
    update."""

    def show(_: int, job: JobView) -> None:
        if pressed.is_set():
            raise KeyboardInterrupt
        bars.show(job)

    with progress_bars() as progress:
        bars = _StageBars(progress, photos_s, transition_s)
        if pressed.is_set():
            raise KeyboardInterrupt
        [done] = follow_jobs(client, [job_id], show)
        return done


def _cancel(client: httpx.Client, project: str, job_id: str | None) -> NoReturn:
    """Cancels the project's run (`job_id`, or whichever is active) and waits for it to stop."""
    call(client, "POST", f"/api/v1/projects/{project}/cancel")
    if job_id is None:
        job_id = (call(client, "GET", f"/api/v1/projects/{project}").get("active_job") or {}).get("id")
    if job_id is not None:
        [done] = follow_jobs(client, [job_id], lambda _, job: None)
        err.print(f"the run ended {done.get('status')}")
    raise typer.Exit(130)


def _download(client: httpx.Client, url: str, out: Path) -> None:
    """Written beside `out` and renamed into place: a half-written video never has its name."""
    part = out.with_name(out.name + ".part")
    try:
        with client.stream("GET", url) as response, part.open("wb") as target:
            if response.is_error:
                response.read()
                err.print(f"error {response.status_code}: cannot download the video")
                raise typer.Exit(1)
            for chunk in response.iter_bytes():
                target.write(chunk)
        os.replace(part, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
