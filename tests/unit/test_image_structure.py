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


def tiff_with_tags(count: int, *, directories: int = 1, strips: int = 1) -> bytes:
    """A classic little-endian TIFF of `directories` 1-pixel-wide grey images, each directory of `count`
    tags (the first 8 describe the image, the rest repeat a private tag), in `strips` one-row strips."""
    base = [(256, 3, 1, 1), (257, 3, 1, strips), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (278, 3, 1, 1)]
    size = 2 + 12 * count + 4
    pixels_at = 8 + size * directories
    tables_at = pixels_at + strips  # the strips' offsets, then their byte counts, when more than one
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for index in range(directories):
        if strips == 1:
            pieces = [struct.pack("<HHII", 273, 4, 1, pixels_at), struct.pack("<HHII", 279, 4, 1, 1)]
        else:
            pieces = [
                struct.pack("<HHII", 273, 4, strips, tables_at),
                struct.pack("<HHII", 279, 4, strips, tables_at + 4 * strips),
            ]
        entries = [struct.pack("<HHII", tag, kind, n, value) for tag, kind, n, value in base] + pieces
        entries += [struct.pack("<HHII", 65000, 3, 1, 0)] * (count - len(entries))
        following = 8 + size * (index + 1) if index + 1 < directories else 0
        out += struct.pack("<H", count) + b"".join(entries) + struct.pack("<I", following)
    out += b"\x80" * strips
    if strips > 1:
        out += b"".join(struct.pack("<I", pixels_at + i) for i in range(strips)) + struct.pack("<I", 1) * strips
    return bytes(out)


def png_with_empty_data_chunks(count: int) -> bytes:
    """A real PNG whose image data is followed by `count` empty IDAT chunks."""
    real = encoded(picture(), "PNG")
    empty = struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))
    return real[:-12] + empty * count + real[-12:]


def jpeg_with(prefix: bytes) -> bytes:
    """A real JPEG with `prefix` after its SOI."""
    real = encoded(picture(), "JPEG")
    return real[:2] + prefix + real[2:]


@pytest.mark.parametrize(
    ("data", "content_type", "reason"),
    [
        (jpeg_with_comments(2_001), sniff.JPEG, "over 2000 JPEG markers before its image data"),
        (jpeg_with(b"\xff" * 70_000), sniff.JPEG, "over 65536 fill or stray bytes"),
        (jpeg_with(b"\x00" * 70_000), sniff.JPEG, "over 65536 fill or stray bytes"),  # junk: a byte a step
        (jpeg_with(b"\xff\xd9" + b"\xff\xfe\x00\x02" * 2_001), sniff.JPEG, "over 2000 JPEG markers"),  # past EOI
        (jpeg_with(b"\xff\xfe\x00\x00" * 2_001), sniff.JPEG, "over 2000 JPEG markers"),  # lengths of 0
        (png_with_text_chunks(1_001), sniff.PNG, "over 1000 PNG chunks before its image data"),
        (png_with_empty_data_chunks(10_001), sniff.PNG, "over 10000 PNG chunks of under 256 bytes"),
        (tiff_with_tags(1_001), sniff.TIFF, "a TIFF directory of 1001 tags"),
        (tiff_with_tags(1_000, directories=201), sniff.TIFF, "over 200000 tags in its TIFF directories"),
        (tiff_with_tags(8, strips=100_001), sniff.TIFF, "a TIFF image in 100001 strips or tiles"),
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
        ("fill.jpg", jpeg_with(b"\xff" * 60_000), sniff.JPEG),
        ("text.png", png_with_text_chunks(999), sniff.PNG),
        ("data.png", png_with_empty_data_chunks(9_000), sniff.PNG),
        ("tags.tif", tiff_with_tags(1_000), sniff.TIFF),
        ("pages.tif", tiff_with_tags(1_000, directories=200), sniff.TIFF),
        ("strips.tif", tiff_with_tags(8, strips=1_000), sniff.TIFF),
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
    made_here = sorted(tmp_path.iterdir())
    assert len(made_here) == 9
    files = made_here + sorted(SHARED.glob("*.png"))  # the shared scans where this checkout has them
    for path in files:
        check_image_structure(path, types[path.suffix])


def test_a_tiff_page_pillow_cannot_size_is_the_documents_fault_not_a_crash(tmp_path: Path) -> None:
    """Its second directory holds only a compression tag: Pillow's `seek` raises TypeError there, which
    was a 500 from `/ocr` and a retried job."""
    first = tiff_with_tags(8)
    second_at = len(first)
    patched = bytearray(first)
    patched[8 + 2 + 12 * 8 : 8 + 2 + 12 * 8 + 4] = struct.pack("<I", second_at)  # the first's "next"
    patched += struct.pack("<H", 1) + struct.pack("<HHII", 259, 3, 1, 1) + struct.pack("<I", 0)
    path = tmp_path / "two.tif"
    path.write_bytes(bytes(patched))
    with pytest.raises(BadDocument, match="corrupt image: cannot read page 2"):
        Document(path, sniff.TIFF, max_pages=10)
