"""Progressive JPEGs: libjpeg decodes every scan over every block of the image, so a small file of many
scans declaring a large size decodes for seconds to minutes. Scans are counted from the markers first and
a JPEG of too many is refused, before any pixel is decoded; real JPEGs (baseline, progressive, with EXIF
and restart markers) pass and decode."""

from __future__ import annotations

import io
import re
import struct
import time
from pathlib import Path

import pytest
from PIL import Image
from tests.hostile_media import hostile_jpeg as hostile

from inferline.errors import BadDocument, TooLarge
from inferline.files import jpeg, sniff
from inferline.ocr.documents import Document, Limits, PageMode
from inferline.ocr.options import OcrOptions
from inferline.ocr.service import image_precheck

LIMITS = Limits(max_pages=10, max_page_pixels=10**8)


def encoded(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def written(tmp_path: Path, data: bytes, name: str = "page.jpg") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_scans_are_counted_as_libjpeg_reads_them(tmp_path: Path) -> None:
    photo = Image.effect_noise((64, 48), 40).convert("RGB")
    assert jpeg.count_scans(written(tmp_path, encoded(photo))) == 1
    assert jpeg.count_scans(written(tmp_path, encoded(photo, progressive=True))) == 10  # libjpeg's script
    assert jpeg.count_scans(written(tmp_path, encoded(photo.convert("L"), progressive=True))) == 6
    # Bytes of a header segment (an APP segment's payload), restart markers and 0xFF stuffed in the data
    # are not scans.
    with_restarts = encoded(photo, progressive=True, restart_marker_blocks=1)
    assert re.search(rb"\xff[\xd0-\xd7]", with_restarts) and b"\xff\x00" in with_restarts
    payload = b"\xff\xda\x00\x0c" * 20
    with_app = with_restarts[:2] + b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload + with_restarts[2:]
    assert with_app.count(b"\xff\xda") == 30
    assert jpeg.count_scans(written(tmp_path, with_app)) == 10
    with Image.open(written(tmp_path, with_app)) as image:
        image.load()  # and it is a JPEG libjpeg reads
    assert jpeg.count_scans(written(tmp_path, hostile(500, 64, 64)), stop_after=100) == 101


def test_a_real_progressive_jpeg_passes_and_decodes(tmp_path: Path) -> None:
    page = Image.effect_noise((320, 180), 60).convert("RGB")
    path = written(tmp_path, encoded(page, progressive=True, optimize=True))
    image_precheck(path, sniff.JPEG, OcrOptions(), LIMITS, 300)
    with Document(path, sniff.JPEG) as document:
        assert document.jpeg_scans == 10
        assert document.load(0, PageMode.AUTO, 300, LIMITS).width == 320


def test_a_jpeg_of_many_scans_is_refused_before_a_pixel_is_decoded(tmp_path: Path) -> None:
    path = written(tmp_path, hostile(5000, 4000, 4000))  # 55 KB; 1,000 such scans took 4.2 s to decode
    started = time.perf_counter()
    with pytest.raises(TooLarge, match="more than 100 scans"):
        image_precheck(path, sniff.JPEG, OcrOptions(), LIMITS, 300)
    with Document(path, sniff.JPEG) as document, pytest.raises(BadDocument, match="more than 100 scans"):
        document.load(0, PageMode.AUTO, 300, LIMITS)
    assert time.perf_counter() - started < 3.0  # 5,000 scans: ~20 s when decoded


def test_a_small_jpeg_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    path = written(tmp_path, hostile(6, 20000, 20000))  # 280 bytes declaring 400 megapixels
    started = time.perf_counter()
    with pytest.raises(TooLarge, match="20000x20000 pixels"):
        image_precheck(path, sniff.JPEG, OcrOptions(), LIMITS, 300)
    with Document(path, sniff.JPEG) as document, pytest.raises(BadDocument, match="20000x20000 pixels"):
        document.load(0, PageMode.AUTO, 300, LIMITS)
    assert time.perf_counter() - started < 3.0  # seconds when decoded
