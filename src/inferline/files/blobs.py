"""Content-addressed blobs: the bytes of a file live once, at `<root>/<sha[:2]>/<sha[2:4]>/<sha>`.

Writes go to a temporary file in the same folder tree (`stage`) and are renamed into place (`place`), so
a reader never sees half a blob and two uploads of the same bytes end as one file. Many file rows may
share one blob: it is removed only when none refers to it (files/service.py). On a fleet every process must see
the same root (a shared volume); see docs/ocr.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from inferline.errors import NotFound, TooLarge
from inferline.private_paths import make_private_dir

log = structlog.get_logger(__name__)
CHUNK_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class StagedBlob:
    """Bytes written under `tmp/` and hashed, not yet at their content address: `place` moves them there
    in the transaction that writes their file row, so a blob no row refers to is never left by a refused
    upload, and a blob is never removed under a row that is being written (see files/service.py)."""

    sha256: str
    size: int
    tmp: Path
    placed: bool = False


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"

    def path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):  # never a path built from anything but a digest
            raise NotFound(f"no blob {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError:
            log.warning("blob_missing", path=str(self.path(sha256)))  # where: for the operator, not the caller
            raise NotFound(f"blob {sha256} is missing") from None

    def stage(self, source: BinaryIO, *, max_bytes: int) -> StagedBlob:
        """Copy `source` to a temporary file (blocking: call it in a thread)."""
        make_private_dir(self.tmp_dir)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:  # mkstemp's mode, 0600, is the blob's
                while chunk := source.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"file is over the limit of {max_bytes} bytes (max_upload_bytes)")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return StagedBlob(digest.hexdigest(), size, Path(tmp_name))

    def place(self, staged: StagedBlob) -> None:
        """Move staged bytes to their address (blocking). The same bytes, the same name: replacing a blob
        that is already there is harmless."""
        final = self.path(staged.sha256)
        make_private_dir(final.parent)
        os.replace(staged.tmp, final)
        staged.placed = True

    def discard(self, staged: StagedBlob) -> None:
        """Staged bytes that will not be placed (blocking)."""
        if not staged.placed:
            staged.tmp.unlink(missing_ok=True)

    def remove(self, sha256s: Iterable[str]) -> int:
        """Remove these blobs (blocking); returns how many were there."""
        removed = 0
        for sha256 in sha256s:
            with contextlib.suppress(FileNotFoundError):
                self.path(sha256).unlink()
                removed += 1
        return removed

    def prefixes(self) -> list[Path]:
        """The first-level folders of the blobs (`<root>/ab`), each a batch for a sweep (blocking)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and len(p.name) == 2 and p.name != "tmp")

    def older_than(self, prefix: Path, cutoff: float) -> list[str]:
        """The blobs under `prefix` last written before `cutoff` (a `time.time()`; blocking)."""
        found = []
        for path in prefix.glob("*/*"):
            with contextlib.suppress(FileNotFoundError):
                if _SHA256.fullmatch(path.name) and path.stat().st_mtime < cutoff:
                    found.append(path.name)
        return found

    def remove_stale_tmp(self, cutoff: float) -> int:
        """Staged files last written before `cutoff`: left by a process that died mid-upload (blocking)."""
        removed = 0
        if not self.tmp_dir.is_dir():
            return 0
        for path in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
