"""ZIP archives that users send (a DOCX is one), read within bounds.

`zipfile` trusts the archive: opening one reads its whole central directory into objects (a 200 MB
upload holds 4 million minimal entries, gigabytes of `ZipInfo`), and it inflates bzip2 and LZMA members
without a bound on one read's output, whatever size the entry declares. Here the central directory's
size is checked before `zipfile` reads it, only the compressions office writers use are accepted
(stored and deflate, whose reads `zipfile` bounds), and a member is read in chunks against a running
limit on the bytes it actually inflates to.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inferline.errors import BadDocument

# A DOCX has tens of entries, a few hundred with many images; each takes 46 bytes or more of directory.
MAX_DIRECTORY_BYTES = 1024 * 1024
CHUNK_BYTES = 64 * 1024
ACCEPTED_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}
# `zipfile`'s own reader of the end record, so the size checked is the one it will read.
_end_record: Any = zipfile._EndRecData  # type: ignore[attr-defined]
_ECD_SIZE = 5  # the central directory's size in bytes, in that record


@contextmanager
def open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """The archive, once its central directory is known to be small; BadDocument otherwise."""
    with path.open("rb") as file:
        try:
            record = _end_record(file)
        except (OSError, zipfile.BadZipFile, ValueError, struct.error) as exc:  # e.g. a multi-disk ZIP64 locator
            raise BadDocument("corrupt ZIP archive: cannot read its end record") from exc
        if not record:
            raise BadDocument("corrupt ZIP archive: no end of central directory record")
        if record[_ECD_SIZE] > MAX_DIRECTORY_BYTES:
            raise BadDocument(
                f"the ZIP archive's directory is {record[_ECD_SIZE]:,} bytes, over the limit of "
                f"{MAX_DIRECTORY_BYTES:,} (too many entries)"
            )
        try:
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise BadDocument(f"corrupt ZIP archive: {exc}") from exc
        with archive:
            yield archive


def member_chunks(archive: zipfile.ZipFile, name: str, max_bytes: int) -> Iterator[bytes]:
    """The member's bytes as they inflate, in chunks; BadDocument past `max_bytes` (counted, never
    declared), for a compression office writers do not use, or for a corrupt member."""
    try:
        info = archive.getinfo(name)
    except KeyError as exc:
        raise BadDocument(f"the archive has no {name}") from exc
    if info.compress_type not in ACCEPTED_COMPRESSIONS:
        method = _NAMES.get(info.compress_type, f"method {info.compress_type}")
        accepted = " or ".join(ACCEPTED_COMPRESSIONS.values())
        raise BadDocument(f"{name} is compressed with {method}; only {accepted} is accepted (what Word writes)")
    if info.file_size > max_bytes:  # a cheap early refusal; the running count below is what holds
        raise BadDocument(f"{name} is {info.file_size:,} bytes uncompressed, over the limit of {max_bytes:,}")
    read = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(CHUNK_BYTES):
                read += len(chunk)
                if read > max_bytes:
                    raise BadDocument(f"{name} inflates past the limit of {max_bytes:,} bytes")
                yield chunk
    except RuntimeError as exc:  # zipfile's word for an encrypted member
        raise BadDocument(f"{name} is encrypted; send the document without a password") from exc
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError) as exc:  # an OSError is the disk's: retried
        raise BadDocument(f"corrupt ZIP member {name}: {exc}") from exc
