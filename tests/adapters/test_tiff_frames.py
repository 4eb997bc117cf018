"""A TIFF of a great many tiny frames: its pages are counted only up to one past the limit (Pillow reads
every frame's header to count them, ~0.4 ms each), and it is refused with the limit named."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from PIL import Image

from inferline.errors import TooLarge
from inferline.files import sniff
from inferline.ocr.documents import Document, Limits, PageMode
from inferline.ocr.options import OcrOptions
from inferline.ocr.service import image_precheck


def tiny_frames_tiff(frames: int) -> bytes:
    """`frames` 1x1 grayscale pages sharing one pixel: 102 bytes each, written directly."""
    tags = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8), (278, 3, 1), (279, 4, 1)]
    header = b"II*\x00" + struct.pack("<I", 9) + b"\x80"  # first IFD at 9; the pixel at 8
    ifd_size = 2 + 12 * len(tags) + 4
    parts = [header]
    for i in range(frames):
        following = 9 + (i + 1) * ifd_size if i + 1 < frames else 0
        entries = b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags)
        parts.append(struct.pack("<H", len(tags)) + entries + struct.pack("<I", following))
    return b"".join(parts)


def test_the_sample_is_a_tiff_pillow_reads(tmp_path: Path) -> None:
    path = tmp_path / "few.tif"
    path.write_bytes(tiny_frames_tiff(3))
    with Image.open(path) as image:
        assert image.n_frames == 3 and image.size == (1, 1)
    with Document(path, sniff.TIFF, max_pages=10) as document:
        assert document.page_count == 3 and document.counted_all
        assert document.load(2, PageMode.AUTO, 300, Limits(10, 100)).width == 1


def test_pages_past_the_limit_are_not_counted(tmp_path: Path) -> None:
    path = tmp_path / "many.tif"
    path.write_bytes(tiny_frames_tiff(50_000))  # 5 MB; counting every frame took ~20 s
    limits = Limits(max_pages=1000, max_page_pixels=10**8)
    started = time.perf_counter()
    with Document(path, sniff.TIFF, max_pages=limits.max_pages) as document:
        assert document.page_count == 1001 and not document.counted_all
        with pytest.raises(TooLarge, match="more than 1000 pages, over the limit of 1000"):
            document.check_limits(limits, 300, [0])
    with pytest.raises(TooLarge, match="more than 1000 pages"):
        image_precheck(path, sniff.TIFF, OcrOptions(pages="1-2000"), limits, 300)
    assert time.perf_counter() - started < 4.0
