"""A media job's work directory: fresh, private, `.part` then rename, gone on every ending; stale ones swept."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from inferline.errors import Retry
from inferline.ids import new_id
from inferline.media.workspace import LOCK_NAME, Workspaces, checked_name


async def test_an_output_is_written_as_part_and_renamed_and_the_directory_goes_at_the_end(tmp_path: Path) -> None:
    workspaces = Workspaces(tmp_path / "work")
    job_id = new_id()
    async with workspaces.open(job_id) as work:
        assert work.directory == tmp_path / "work" / job_id
        assert os.stat(work.directory).st_mode & 0o777 == 0o700
        part = work.part("clip.mp4")
        part.write_bytes(b"video")
        assert part.name == "clip.mp4.part" and work.parts() == [part]
        final = work.finish(part)
        assert final == work.path("clip.mp4") and final.read_bytes() == b"video" and not part.exists()
    assert list((tmp_path / "work").iterdir()) == []


async def test_the_directory_goes_when_the_job_fails_or_is_canceled(tmp_path: Path) -> None:
    workspaces = Workspaces(tmp_path / "work")
    with pytest.raises(RuntimeError):
        async with workspaces.open(new_id()) as work:
            work.part("clip.mp4").write_bytes(b"half")
            raise RuntimeError("ffmpeg failed")
    started = asyncio.Event()

    async def canceled_job() -> None:
        async with workspaces.open(new_id()) as work:
            work.part("clip.mp4").write_bytes(b"half")
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(canceled_job())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "x..y", "", "clip.mp4/", "a\x00b", "é.png", "x" * 101])
def test_a_name_that_could_leave_the_directory_or_hide_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a work file name"):
        checked_name(name)


async def test_a_job_id_that_is_not_an_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        async with Workspaces(tmp_path / "work").open("../../etc"):
            pass


async def test_the_first_open_sweeps_directories_of_dead_processes_and_keeps_live_ones(tmp_path: Path) -> None:
    root = tmp_path / "work"
    live_process, next_start = Workspaces(root), Workspaces(root)
    stale = root / new_id()  # a worker killed with SIGKILL left it: its lock file, no one holding it
    async with live_process.open(new_id()) as live:
        stale.mkdir()
        (stale / LOCK_NAME).touch()
        (stale / "clip.mp4.part").write_bytes(b"half")
        async with next_start.open(new_id()):
            assert not stale.exists()
            assert live.directory.is_dir()


async def test_a_resumed_job_starts_with_an_empty_directory(tmp_path: Path) -> None:
    root, job_id = tmp_path / "work", new_id()
    (root / job_id).mkdir(parents=True)
    (root / job_id / "clip.mp4.part").write_bytes(b"from the attempt that was killed")
    # No lock file and just made: the sweep leaves it (it could be another process's, being created); the
    # job's own open clears it.
    async with Workspaces(root).open(job_id) as work:
        assert sorted(p.name for p in work.directory.iterdir()) == [LOCK_NAME]


async def test_a_second_attempt_of_a_job_whose_first_still_holds_the_directory_is_retried_later(tmp_path: Path) -> None:
    job_id = new_id()
    async with Workspaces(tmp_path / "work").open(job_id) as first:
        with pytest.raises(Retry):
            async with Workspaces(tmp_path / "work").open(job_id):
                pass
        assert first.directory.is_dir()


async def test_a_work_root_or_job_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "work").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NotADirectoryError):
        async with Workspaces(tmp_path / "work").open(new_id()):
            pass
    job_id = new_id()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / job_id).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NotADirectoryError):
        async with Workspaces(tmp_path / "root").open(job_id):
            pass
    assert (tmp_path / "elsewhere").is_dir()
