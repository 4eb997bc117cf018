"""The work directory of one media job: `<work root>/<job id>/`, removed on every ending.

    async with workspaces.open(ctx.id) as work:
        photo = work.path("photo.ppm")
        clip = work.part("clip.mp4")           # ffmpeg writes clip.mp4.part
        ...validate...
        final = work.finish(clip)              # renamed to clip.mp4 once it is known good

Only the job's id and names the code chooses (`photo.ppm`, never a caption or an upload's name) become
paths, each checked: no separator, no `..`, no leading dot; the work root and the job's directory must
not be symlinks. The directory is removed when the block ends however it ends (success, failure, cancel:
the caller's subprocesses are dead by then, `run_ffmpeg` waits for them).

A worker killed with SIGKILL cannot remove its directory. Each open directory holds an exclusive `flock` on
its `.lock` file, which the kernel drops when the process dies: the first `open` of a process sweeps the
directories whose lock it can take (their owner is gone), so stale ones never outlive the next start, and
a directory another live process works in is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from inferline.errors import Retry
from inferline.private_paths import DIR_MODE, FILE_MODE, make_private_dir

log = structlog.get_logger(__name__)

LOCK_NAME = ".lock"
PART_SUFFIX = ".part"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}(\.[A-Za-z0-9]{1,10}){0,2}")
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A directory without its lock file may be one being created by another process right now.
UNLOCKED_GRACE_S = 60.0


def checked_name(name: str) -> str:
    """`name` if it can be a file name in a work directory: letters, digits, `_`, `-`, one or two
    extensions; never a separator, `..` or a leading dot."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a work file name: {name!r}")
    return name


class Workspace:
    """An open work directory; `path` and `part` name files in it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / checked_name(name)

    def part(self, name: str) -> Path:
        """Where an output is written before it is validated: `<name>.part`."""
        return self.directory / (checked_name(name) + PART_SUFFIX)

    def finish(self, part: Path) -> Path:
        """The validated output renamed from `<name>.part` to `<name>` (atomic, same directory)."""
        if part.parent != self.directory or not part.name.endswith(PART_SUFFIX):
            raise ValueError(f"not a part file of this workspace: {part}")
        final = self.path(part.name.removesuffix(PART_SUFFIX))
        part.rename(final)
        return final

    def parts(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{PART_SUFFIX}"))


class Workspaces:
    """The work root (`<data_dir>/media/work`) and the directories of the jobs working in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._swept = False

    @asynccontextmanager
    async def open(self, job_id: str) -> AsyncIterator[Workspace]:
        """The job's work directory, fresh (what an earlier attempt left is removed), removed when the block
        ends. `Retry` if another live attempt of the same job still holds it (a lease lost, not yet let go)."""
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        self._prepare_root()
        if not self._swept:
            self._swept = True
            self.sweep()
        with self._locked(self.root / job_id) as workspace:
            yield workspace

    def sweep(self) -> list[str]:
        """Remove the directories no live process holds; the job ids removed."""
        removed = []
        now = time.time()
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False) or not _JOB_ID.fullmatch(entry.name):
                continue
            directory = Path(entry.path)
            if not (directory / LOCK_NAME).exists() and now - entry.stat().st_mtime < UNLOCKED_GRACE_S:
                continue
            with contextlib.suppress(BlockingIOError), _flock(directory):
                _remove(directory)
                removed.append(entry.name)
        if removed:
            log.info("media_workspaces_swept", count=len(removed))
        return removed

    def _prepare_root(self) -> None:
        make_private_dir(self.root)
        if self.root.is_symlink() or not stat.S_ISDIR(os.lstat(self.root).st_mode):
            raise NotADirectoryError(f"the media work root {self.root} must be a directory, not a link")

    @contextlib.contextmanager
    def _locked(self, directory: Path) -> Iterator[Workspace]:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, DIR_MODE)
        if directory.is_symlink():
            raise NotADirectoryError(f"{directory} is a link")
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(_flock(directory))
            except BlockingIOError:
                raise Retry("another attempt of this job still holds its work directory", after_s=5.0) from None
            stack.callback(_remove, directory)  # before the lock is let go: no sweeper sees it half removed
            for entry in os.scandir(directory):  # an earlier attempt's files (its outputs are stored as files)
                if entry.name != LOCK_NAME:
                    _remove(Path(entry.path))
            yield Workspace(directory)


@contextlib.contextmanager
def _flock(directory: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock on the directory's lock file (BlockingIOError when held)."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
