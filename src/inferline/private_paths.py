"""What inferline keeps on disk is created readable by its own user only, whatever the process umask:
directories 0700, files 0600. The data dir holds the SQLite database (webhook secrets, key hashes, every
tenant's jobs), every tenant's uploaded files (blobs), the admin key and the search index.

Existing paths keep their modes: tightening them is the operator's call (`chmod -R go= <data dir>`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> Path:
    """`path` and its missing parents, each created 0700 (`mkdir -p` gives parents the umask's mode)."""
    if path.is_dir():
        return path
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            os.mkdir(directory, DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    return path


def create_private_file(path: Path) -> Path:
    """`path` created empty, 0600, unless it exists: for a file another library then opens (SQLite gives
    its -wal and -shm files the database file's mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    return path
