"""The scans of a JPEG, counted from its markers without decoding it.

libjpeg decodes a progressive JPEG scan by scan, each over every block of the image, and a scan costs
its file as little as 11 bytes: an 11 KB file of 1,000 scans declaring 4000x4000 pixels took 4.2 s to
decode, and the time grows with scans times pixels, far past the pixel limit's bound. Pillow has no
scan limit, so callers count first (`count_scans`) and refuse past `MAX_SCANS` (libjpeg's own default
progression has 10 scans, encoders that optimize it a few dozen).
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path

from inferline.errors import TooLarge

MAX_SCANS = 100
_SOS = 0xDA
_EOI = 0xD9
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # TEM, SOI, RST0-7: no length follows
# The end of a scan's entropy-coded data: a marker, that is 0xFF followed by neither a stuffed 0x00, a
# restart marker nor another 0xFF (fill).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def count_scans(path: Path, *, stop_after: int = MAX_SCANS) -> int:
    """The scans (SOS markers) of the JPEG at `path`, those of every image it holds (MPO), counted up to
    `stop_after` + 1 (blocking). Headers
    are stepped over by their lengths and entropy-coded data by one regex search, so it is linear in
    the file; a file that is not well-formed is counted as far as it goes (its decode fails later)."""
    with path.open("rb") as file:
        if path.stat().st_size < 4:
            return 0
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _count(data, stop_after)


def scans_problem(scans: int) -> str | None:
    """Why decoding a JPEG of `scans` scans (as `count_scans` counts) would take too long, or None."""
    if scans <= MAX_SCANS:
        return None
    return f"the JPEG has more than {MAX_SCANS} scans (a decompression bomb)"


def check_scans(path: Path) -> None:
    """`TooLarge` if the JPEG at `path` has more than MAX_SCANS scans (blocking; linear in the file)."""
    if problem := scans_problem(count_scans(path)):
        raise TooLarge(problem)


def _count(data: mmap.mmap, stop_after: int) -> int:
    scans = 0
    pos = 2  # after SOI
    end = len(data)
    while pos + 1 < end and scans <= stop_after:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _EOI:  # the next image of an MPO (a camera's stereo pair), if any, counts too
            pos = data.find(b"\xff\xd8\xff", pos + 2) + 2
            if pos == 1:
                break
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > end:
            break
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == _SOS:
            scans += 1
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return scans
