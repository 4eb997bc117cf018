"""The operator's drop folders: per tenant, folders by name (setting `batch_drop_folders`), whose files a
scheduled batch takes. A tenant names a folder, never a path; the folder's entries are read by name
(`os.scandir`), so no `..` can reach past it, and only regular files are taken: a symbolic link (which
could point anywhere), a directory, a FIFO or a device is refused, and a file is opened with O_NOFOLLOW
and checked again once open, so an entry swapped for a link between the listing and the open is refused
too. Names starting with a dot are skipped (the usual "write to .name, then rename" of uploaders), and so
is a file modified within `settle_s` (still being written: the next run takes it).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from inferline.errors import InvalidInput
from inferline.files.store import Quota


@dataclass(frozen=True)
class DropFolders:
    folders: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)
    max_files: int = 100
    settle_s: float = 60.0
    quota: Quota = field(default_factory=Quota)

    def folder(self, tenant: str, name: str) -> Path:
        """The tenant's folder of that name; a 422 naming `drop_folder` when the operator set none."""
        path = self.folders.get(tenant, {}).get(name)
        if path is None:
            raise InvalidInput(f"drop_folder: no drop folder {name!r} is set up for this tenant", field="drop_folder")
        return path


@dataclass(frozen=True)
class DropFile:
    name: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Refused:
    name: str
    reason: str


def list_drop_files(root: Path, *, max_bytes: int, settle_s: float) -> tuple[list[DropFile], list[Refused]]:
    """The regular files of `root` ready to take, oldest first, and the entries refused with why."""
    found: list[DropFile] = []
    refused: list[Refused] = []
    settled_ns = time.time_ns() - int(settle_s * 1e9)
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        raise FolderUnreadable(f"the drop folder cannot be read: {exc.strerror}") from exc
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not _storable(entry.name):
            refused.append(Refused(entry.name.encode(errors="surrogateescape").decode(errors="replace"), "bad name"))
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:  # gone since the listing
            continue
        reason = _refusal(info, max_bytes)
        if reason is not None:
            refused.append(Refused(entry.name, reason))
        elif info.st_mtime_ns <= settled_ns:
            found.append(DropFile(entry.name, info.st_size, info.st_mtime_ns))
    found.sort(key=lambda item: (item.mtime_ns, item.name))
    return found, refused


class FolderUnreadable(Exception):
    """The drop folder is missing or unreadable: the operator's setting is wrong, not a tenant's input."""


def _storable(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:  # not UTF-8 on disk (surrogate escapes): it cannot be a column's text
        return False
    return len(name) <= 255 and name.isprintable()


def _refusal(info: os.stat_result, max_bytes: int) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link: only regular files are taken"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty"
    if info.st_size > max_bytes:
        return f"over {max_bytes} bytes (setting batch_max_file_bytes)"
    return None


def open_drop_file(root: Path, item: DropFile) -> BinaryIO:
    """`item` opened for reading, still the regular file listed (same size and time); OSError if it is
    gone, ValueError if it changed or became something else."""
    fd = os.open(root / item.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_size, info.st_mtime_ns) != (item.size, item.mtime_ns):
            raise ValueError("changed since it was listed")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
