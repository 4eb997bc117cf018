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
MAX_PNG_SMALL_CHUNKS, SMALL_CHUNK_BYTES = 10_000, 256
MAX_TIFF_TAGS = 1_000  # in one directory
MAX_TIFF_TAGS_IN_ALL = 200_000  # 200 pages of a thousand tags took Pillow ~1 s to count
MAX_TIFF_PIECES = 100_000  # strips or tiles of one image: 10,000 one-row strips make a 100 MP scan
_TIFF_PIECES = frozenset({273, 279, 324, 325})  # StripOffsets, StripByteCounts, TileOffsets, TileByteCounts
MAX_TIFF_DIRECTORIES = 10_000  # walked from the first, then no more: more pages than any limit takes

# Markers Pillow reads no length after (JPG, JPGn, RSTn, SOI, EOI; TEM as libjpeg).
_JPEG_NO_LENGTH = frozenset({0x01, 0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
_JPEG_SOS = 0xDA


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
    """Up to the first scan, as Pillow's JPEG reader steps: a byte at a time over junk and fill, a marker
    with no length (JPGn, RSTn, SOI, EOI) as two bytes, any other over its stated length (at least 2).
    Markers and stray bytes are each capped; past EOI Pillow reads on, so this does too."""
    pos, end, segments, strays = 2, len(data), 0, 0
    while pos + 1 < end:
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):  # junk, an escaped 0xFF, fill
            strays += 1
            if strays > MAX_JPEG_FILL_BYTES:
                return f"over {MAX_JPEG_FILL_BYTES} fill or stray bytes between its JPEG markers"
            pos += 2 if data[pos] == 0xFF and data[pos + 1] == 0x00 else 1
            continue
        marker = data[pos + 1]
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            return f"over {MAX_JPEG_SEGMENTS} JPEG markers before its image data"
        if marker == _JPEG_SOS:
            return None
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        pos += 2 + max(2, int.from_bytes(data[pos + 2 : pos + 4], "big"))
    return None


def _png(data: mmap.mmap) -> str | None:
    """Every chunk (Pillow reads those after the image data too, a step each): at most MAX_PNG_CHUNKS
    before the first IDAT, and at most MAX_PNG_SMALL_CHUNKS chunks under SMALL_CHUNK_BYTES in the file (an
    encoder's IDATs are kilobytes: libpng writes 8 kB, so a large real file has tens of thousands)."""
    pos, end, before_data, small = 8, len(data), 0, 0
    seen_data = False
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IEND":
            return None
        seen_data = seen_data or kind == b"IDAT"
        if not seen_data:
            before_data += 1
            if before_data > MAX_PNG_CHUNKS:
                return f"over {MAX_PNG_CHUNKS} PNG chunks before its image data"
        if length < SMALL_CHUNK_BYTES:
            small += 1
            if small > MAX_PNG_SMALL_CHUNKS:
                return f"over {MAX_PNG_SMALL_CHUNKS} PNG chunks of under {SMALL_CHUNK_BYTES} bytes"
        pos += 12 + length
    return None


def _tiff(data: mmap.mmap) -> str | None:
    """Directories followed from the first (each once): tags in each and in all, and the strips or tiles
    each lists (Pillow makes a tile of each)."""
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    big = int.from_bytes(data[2:4], order) == 43  # BigTIFF: 8-byte counts and offsets
    size, entry_size, count_size = (8, 20, 8) if big else (4, 12, 2)
    offset = int.from_bytes(data[8:16] if big else data[4:8], order)
    seen: set[int] = set()
    tags_in_all = 0
    while 0 < offset < len(data) and offset not in seen:
        if len(seen) >= MAX_TIFF_DIRECTORIES:
            return None  # the page limit refuses such a file by its count (`ocr.documents`)
        seen.add(offset)
        tags = int.from_bytes(data[offset : offset + count_size], order)
        if tags > MAX_TIFF_TAGS:
            return f"a TIFF directory of {tags} tags (over {MAX_TIFF_TAGS})"
        tags_in_all += tags
        if tags_in_all > MAX_TIFF_TAGS_IN_ALL:
            return f"over {MAX_TIFF_TAGS_IN_ALL} tags in its TIFF directories"
        first = offset + count_size
        for at in range(first, min(first + tags * entry_size, len(data)), entry_size):
            if int.from_bytes(data[at : at + 2], order) in _TIFF_PIECES:
                pieces = int.from_bytes(data[at + 4 : at + 4 + size], order)
                if pieces > MAX_TIFF_PIECES:
                    return f"a TIFF image in {pieces} strips or tiles (over {MAX_TIFF_PIECES})"
        next_at = first + tags * entry_size
        offset = int.from_bytes(data[next_at : next_at + size], order)
    return None


_WALKS = {sniff.JPEG: _jpeg, sniff.PNG: _png, sniff.TIFF: _tiff}
