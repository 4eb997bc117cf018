"""Images whose headers Pillow would read for seconds are refused before it opens them (`files/structure.py`);
the images real encoders write pass."""

from __future__ import annotations

import io
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

from inferline.errors import BadDocument
from inferline.files import sniff
from inferline.files.structure import check_image_structure
from inferline.media.ffmpeg import executable
from inferline.media.images import normalize_photo
from inferline.ocr.documents import Document

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ocr"


def picture(size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size, (200, 120, 40))
    for x in range(0, size[0], 4):
        image.putpixel((x, x % size[1]), (0, 0, 0))
    return image


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def jpeg_with_comments(count: int) -> bytes:
    """A real JPEG with `count` empty comment segments after its SOI."""
    real = encoded(picture(), "JPEG")
    return real[:2] + b"\xff\xfe\x00\x02" * count + real[2:]


def png_with_text_chunks(count: int) -> bytes:
    real = encoded(picture(), "PNG")
    chunk = b"tEXt" + b"k\x00v"
    text = struct.pack(">I", 3) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end_of_ihdr = 8 + 8 + 13 + 4
    return real[:end_of_ihdr] + text * count + real[end_of_ihdr:]


def tiff_with_tags(count: int) -> bytes:
    """A classic little-endian TIFF whose one directory has `count` tags (the first 8 describe a 1x1 grey
    image, the rest repeat a private tag)."""
    base = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (277, 3, 1, 1)]
    total = len(base) + 2 + (count - len(base) - 2)
    pixel_at = 8 + 2 + 12 * total + 4
    entries = [struct.pack("<HHII", tag, kind, n, value) for tag, kind, n, value in base]
    entries += [struct.pack("<HHII", 273, 4, 1, pixel_at), struct.pack("<HHII", 279, 4, 1, 1)]
    entries += [struct.pack("<HHII", 65000, 3, 1, 0)] * (count - len(entries))
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", count) + b"".join(entries) + b"\x00" * 4 + b"\x80"


@pytest.mark.parametrize(
    ("data", "content_type", "reason"),
    [
        (jpeg_with_comments(2_001), sniff.JPEG, "over 2000 JPEG markers before its image data"),
        (b"\xff\xd8" + b"\xff" * 70_000 + encoded(picture(), "JPEG")[2:], sniff.JPEG, "over 65536 fill bytes"),
        (png_with_text_chunks(1_001), sniff.PNG, "over 1000 PNG chunks before its image data"),
        (tiff_with_tags(1_001), sniff.TIFF, "a TIFF directory of 1001 tags"),
    ],
)
def test_headers_no_encoder_writes_are_refused_before_pillow_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, content_type: str, reason: str
) -> None:
    path = tmp_path / "hostile"
    path.write_bytes(data)
    with pytest.raises(BadDocument, match=f"^not an image any encoder writes: {reason}"):
        check_image_structure(path, content_type)

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow opened it")

    monkeypatch.setattr(Image, "open", not_here)
    with pytest.raises(BadDocument, match=reason):
        Document(path, content_type)  # the OCR reader and its /ocr pre-check
    if content_type != sniff.TIFF:  # a project photo is a JPEG, PNG, WebP or HEIC
        with pytest.raises(BadDocument, match=reason):
            normalize_photo(path, tmp_path / "out.ppm", content_type, max_pixels=10**8)


def test_just_under_every_cap_the_file_is_read(tmp_path: Path) -> None:
    for name, data, content_type in [
        ("comments.jpg", jpeg_with_comments(1_990), sniff.JPEG),
        ("text.png", png_with_text_chunks(999), sniff.PNG),
        ("tags.tif", tiff_with_tags(1_000), sniff.TIFF),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        check_image_structure(path, content_type)
        with Image.open(path) as image:
            image.load()


def test_images_real_encoders_write_pass(tmp_path: Path) -> None:
    """Pillow's JPEGs (baseline, progressive and optimized, with EXIF and an ICC profile), PNGs, and
    multi-page TIFFs of several compressions; ffmpeg's JPEG; the OCR test set's scans."""
    image = picture((640, 480))
    exif = Image.Exif()
    exif[0x0112] = 6
    made = {
        "baseline.jpg": encoded(image, "JPEG", quality=90, exif=exif.tobytes(), icc_profile=b"\x00" * 3000),
        "progressive.jpg": encoded(image, "JPEG", progressive=True, optimize=True),
        "palette.png": encoded(image.convert("P"), "PNG", optimize=True),
        "grey16.png": encoded(image.convert("I;16"), "PNG"),
    }
    for compression in ("raw", "tiff_lzw", "tiff_deflate", "group4"):
        frames = [image.convert("1" if compression == "group4" else "RGB")] * 3
        out = io.BytesIO()
        frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:], compression=compression)
        made[f"{compression}.tif"] = out.getvalue()
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    source = ["-f", "lavfi", "-i", "testsrc=s=320x240:d=0.1", "-frames:v", "1"]
    subprocess.run([executable("ffmpeg"), "-v", "error", *source, str(tmp_path / "ff.jpg")], check=True)
    types = {".jpg": sniff.JPEG, ".png": sniff.PNG, ".tif": sniff.TIFF}
    files = sorted(tmp_path.iterdir()) + sorted(SHARED.glob("*.png"))
    assert len(files) > 20
    for path in files:
        check_image_structure(path, types[path.suffix])
