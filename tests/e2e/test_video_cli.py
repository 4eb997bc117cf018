"""`inferline video make`: photos and a song to an MP4, in-process on the embedded default; Ctrl-C cancels."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import ROOT, Processes
from tests.helpers import eventually_sync
from tests.media_helpers import photo_bytes, processes_mentioning, song_bytes

from inferline.media.probe import probe


def inputs(tmp_path: Path, photos: int) -> list[str]:
    paths = []
    for number in range(photos):
        path = tmp_path / f"photo{number}.jpg"
        path.write_bytes(photo_bytes(tmp_path, number))
        paths.append(str(path))
    song = tmp_path / "song.wav"
    song.write_bytes(song_bytes(3.0))
    return [*paths, "--music", str(song)]


@pytest.fixture
def runs() -> Iterator[list[subprocess.Popen[str]]]:
    """The `video make` processes a test starts: killed if still running when it ends, their pipes read and
    closed (a test that failed midway would leave both to later tests)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def video_make(
    procs: Processes, runs: list[subprocess.Popen[str]], tmp_path: Path, *args: str
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "inferline.cli", "video", "make", *args, "--data-dir", str(tmp_path / "data")]
    command += ["--title", "김순자", "--subtitle", "1941-2026", "--resolution", "180p", "--fps", "10"]
    env = procs.env | {"INFERLINE_MEDIA_FFMPEG_THREADS": "1"}
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background of a shell inherits SIGINT ignored, and so would the CLI (Python
        # installs its Ctrl-C handler only where SIGINT is not ignored): a terminal's Ctrl-C is what is tested.
        preexec_fn=_default_sigint,
    )
    runs.append(proc)
    return proc


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pipeline_statuses(data_dir: Path) -> list[str]:
    if not (data_dir / "inferline.db").exists():
        return []
    try:
        with sqlite3.connect(data_dir / "inferline.db") as conn:
            return [row[0] for row in conn.execute("SELECT status FROM jobs WHERE kind = 'pipeline'")]
    except sqlite3.OperationalError:  # its tables not made yet
        return []


async def test_video_make_writes_the_memorial_video(
    procs: Processes, runs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    out = tmp_path / "memorial.mp4"
    proc = video_make(procs, runs, tmp_path, *inputs(tmp_path, 2), "--photo-s", "1", "--out", str(out))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "photo clips" in stderr and "closing card" in stderr  # a bar per stage
    info = await probe(out)
    assert (info.width, info.height, info.audio_codec) == (320, 180, "aac")
    assert abs(info.duration_s - (1 + 6 + 1 + 6)) <= 0.1
    assert not out.with_name("memorial.mp4.part").exists()


def test_ctrl_c_cancels_the_run_and_leaves_no_video(
    procs: Processes, runs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    out, data_dir = tmp_path / "memorial.mp4", tmp_path / "data"
    proc = video_make(
        procs, runs, tmp_path, *inputs(tmp_path, 2), "--photo-s", "20", "--transition-s", "10", "--out", str(out)
    )
    eventually_sync(lambda: pipeline_statuses(data_dir), lambda found: found == ["running"], timeout_s=60)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "canceling the run" in stderr and "the run ended canceled" in stderr
    assert pipeline_statuses(data_dir) == ["canceled"]
    assert not out.exists() and not out.with_name("memorial.mp4.part").exists()
    work_root = data_dir / "media" / "work"
    assert list(work_root.rglob("*")) == [] and processes_mentioning(str(work_root)) == []
