"""An uploaded image's structure walked before Pillow opens it: counts no real file comes near.

Pillow reads an image's headers in Python, a step per marker, chunk or tag, and nothing bounds how many
a file holds but its size. Ten megabytes took Pillow 5.5 s to open as a JPEG of fill bytes (0xFF before
a marker, legal and never written by encoders in bulk), 3.4 s as a JPEG of four-byte comments, 4.0 s as a
PNG of tiny chunks before its image data, and 2.6 s as a TIFF whose one directory has half a million
tags: two or three minutes of a thread for a 200 MB upload, again at every `/ocr` pre-check of it. Each
walk here steps by the lengths the file states (no byte-by-byte scan but of fill bytes, which it caps
too) and stops at its cap, so it costs microseconds for a real file and at most milliseconds for any.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Literal

from inferline.errors import BadDocument
from inferline.files import sniff

# Real files: tens of JPEG segments (a progressive one of 100 scans: a few hundred), a handful of PNG
# chunks before IDAT (dozens with text chunks), tens of tags in a TIFF directory.
MAX_JPEG_SEGMENTS = 2_000
MAX_JPEG_FILL_BYTES = 65_536
MAX_PNG_CHUNKS = 1_000  # before the first IDAT
MAX_TIFF_TAGS = 1_000  # in one directory
MAX_TIFF_DIRECTORIES = 10_000  # followed from the first; more pages than any limit takes

_JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # no length follows these markers
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9


def check_image_structure(path: Path, content_type: str) -> None:
    """`BadDocument` when the image at `path` holds more segments, chunks or tags than any real file
    (blocking; bounded by the caps). Types without such a walk (WebP, GIF, BMP, HEIC) pass."""
    walk = _WALKS.get(content_type)
    if walk is None:
        return
    with path.open("rb") as file:
        if path.stat().st_size < 16:
            return  # too short to hold anything: the decoder says what is wrong with it
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if problem := walk(data):
                raise BadDocument(f"not an image any encoder writes: {problem}")


def _jpeg(data: mmap.mmap) -> str | None:
    """Segments and fill bytes up to the first scan's data (where Pillow's header reading stops)."""
    pos, end, segments, fill = 2, len(data), 0, 0
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None  # not a marker: the decoder reports it
        marker = data[pos + 1]
        if marker == 0xFF:
            fill += 1
            if fill > MAX_JPEG_FILL_BYTES:
                return f"over {MAX_JPEG_FILL_BYTES} fill bytes between its JPEG markers"
            pos += 1
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            return f"over {MAX_JPEG_SEGMENTS} JPEG markers before its image data"
        if marker in (_JPEG_SOS, _JPEG_EOI):
            return None
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _png(data: mmap.mmap) -> str | None:
    pos, end, chunks = 8, len(data), 0
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] in (b"IDAT", b"IEND"):
            return None
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            return f"over {MAX_PNG_CHUNKS} PNG chunks before its image data"
        pos += 12 + length
    return None


def _tiff(data: mmap.mmap) -> str | None:
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    big = int.from_bytes(data[2:4], order) == 43  # BigTIFF: 8-byte counts and offsets
    size = 8 if big else 4
    offset = int.from_bytes(data[8:16] if big else data[4:8], order)
    seen: set[int] = set()
    while 0 < offset < len(data) and offset not in seen:
        if len(seen) >= MAX_TIFF_DIRECTORIES:
            return f"over {MAX_TIFF_DIRECTORIES} TIFF directories"
        seen.add(offset)
        count_size = 8 if big else 2
        tags = int.from_bytes(data[offset : offset + count_size], order)
        if tags > MAX_TIFF_TAGS:
            return f"a TIFF directory of {tags} tags (over {MAX_TIFF_TAGS})"
        next_at = offset + count_size + tags * (20 if big else 12)
        offset = int.from_bytes(data[next_at : next_at + size], order)
    return None


_WALKS = {sniff.JPEG: _jpeg, sniff.PNG: _png, sniff.TIFF: _tiff}
