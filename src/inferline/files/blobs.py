"""Content-addressed blobs: the bytes of a file live once, at `<root>/<sha[:2]>/<sha[2:4]>/<sha>`.

Writes go to a temporary file in the same folder tree and are renamed into place, so a reader never
sees half a blob and two uploads of the same bytes end as one file. On a fleet every process must see
the same root (a shared volume); see docs/ocr.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

import structlog

from inferline.errors import NotFound, TooLarge
from inferline.private_paths import make_private_dir

log = structlog.get_logger(__name__)
CHUNK_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

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

    def put(self, source: BinaryIO, *, max_bytes: int) -> tuple[str, int]:
        """Copy `source` in (blocking: call it in a thread); returns (sha256, size)."""
        tmp_dir = make_private_dir(self.root / "tmp")
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:  # mkstemp's mode, 0600, is the blob's
                while chunk := source.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"file is over the limit of {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            sha256 = digest.hexdigest()
            final = self.path(sha256)
            make_private_dir(final.parent)
            os.replace(tmp_name, final)  # same bytes, same name: replacing an existing blob is harmless
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return sha256, size
