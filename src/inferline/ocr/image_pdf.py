"""Image pages as a PDF, one page per frame, the frame as it is: the base of an image's searchable PDF.

A JPEG's bytes are embedded as they are (`DCTDecode`: no second lossy encoding), turned by its EXIF
orientation in the page's drawing instructions; any other frame's pixels are deflated (`FlateDecode`,
lossless), after the same EXIF turn and colour conversion the OCR job made, so the page shows the pixels
the boxes refer to. A bilevel frame stays one bit per pixel.

Written frame by frame to a file: one decoded frame is in memory at a time. Pure Python and Pillow; pdfium
adds the text layer afterwards (`ocr.searchable`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, ImageOps

POINTS_PER_INCH = 72
MIN_DPI = 36  # below this a file's resolution is taken for a placeholder (72 dpi screenshots pass)
MAX_DPI = 4800
MAX_PAGE_PT = 14_400  # the largest page PDF readers open (200 inches); a larger one is scaled down
CHUNK_BYTES = 1 << 20
JPEG_MODES = {"L": "/DeviceGray", "RGB": "/DeviceRGB", "CMYK": "/DeviceCMYK"}
ORIENTATION = 0x0112

# EXIF orientation → the turn that stands the stored image upright, as a map of normalized coordinates
# (u right, v down, both 0..1) of the stored image to the upright one: (a, b, c, d, e, f) with
# u' = a*u + c*v + e, v' = b*u + d*v + f. Pillow's `exif_transpose` makes the same turns.
TURNS: dict[int, tuple[float, float, float, float, float, float]] = {
    1: (1, 0, 0, 1, 0, 0),
    2: (-1, 0, 0, 1, 1, 0),  # mirrored left to right
    3: (-1, 0, 0, -1, 1, 1),  # upside down
    4: (1, 0, 0, -1, 0, 1),  # mirrored top to bottom
    5: (0, 1, 1, 0, 0, 0),  # transposed
    6: (0, 1, -1, 0, 1, 0),  # turned a quarter clockwise to stand upright
    7: (0, -1, -1, 0, 1, 1),  # transversed
    8: (0, -1, 1, 0, 0, 1),  # turned a quarter counter-clockwise to stand upright
}


@dataclass(frozen=True)
class ImagePage:
    """A page of the written PDF: the upright frame's size in pixels and in points."""

    width_px: int
    height_px: int
    width_pt: float
    height_pt: float


def page_dpi(info: Mapping[Any, Any], fallback_dpi: float) -> tuple[float, float]:
    """The frame's resolution (x, y) from its metadata, or `fallback_dpi` where it has none that is
    plausible (Pillow reads a JPEG without JFIF density as 72 or 1 dpi, a PNG without pHYs as none)."""
    dpi = info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2:
        try:
            x, y = float(dpi[0]), float(dpi[1])
        except (TypeError, ValueError):
            return fallback_dpi, fallback_dpi
        if MIN_DPI <= x <= MAX_DPI and MIN_DPI <= y <= MAX_DPI:
            return round(x, 1), round(y, 1)  # a PNG's pixels per metre read back as 199.9994 dpi
    return fallback_dpi, fallback_dpi


def write_image_pdf(path: Path, frames: list[int], out: BinaryIO, fallback_dpi: float) -> list[ImagePage]:
    """Write the PDF of the image file `path`'s `frames` (0-based) to `out`; returns its pages."""
    writer = _Writer(out)
    pages: list[ImagePage] = []
    page_ids: list[int] = []
    with Image.open(path) as image:
        for index in frames:
            image.seek(index)
            page, page_id = _write_frame(writer, path, image, fallback_dpi)
            pages.append(page)
            page_ids.append(page_id)
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    writer.object(_PAGES_ID, f"<</Type/Pages/Kids[{kids}]/Count {len(page_ids)}>>".encode())
    writer.object(_CATALOG_ID, f"<</Type/Catalog/Pages {_PAGES_ID} 0 R>>".encode())
    writer.finish(root_id=_CATALOG_ID)
    return pages


_CATALOG_ID, _PAGES_ID = 1, 2


def _write_frame(writer: _Writer, path: Path, image: Image.Image, fallback_dpi: float) -> tuple[ImagePage, int]:
    orientation = int(image.getexif().get(ORIENTATION, 1) or 1)
    turn = TURNS.get(orientation, TURNS[1])
    if image.format == "JPEG" and image.mode in JPEG_MODES:
        stored_w, stored_h = image.size
        sideways = orientation in (5, 6, 7, 8)
        width_px, height_px = (stored_h, stored_w) if sideways else (stored_w, stored_h)
        image_id = writer.stream(_jpeg_dict(image), _file_chunks(path))
    else:
        # What the OCR job read (`documents.Document`): the frame turned by its EXIF orientation, in L or
        # RGB; a bilevel frame is kept at one bit per pixel (it reads the same).
        frame = ImageOps.exif_transpose(image.copy())  # as `documents.Document` does, copy first
        if frame.mode not in {"1", "L", "RGB"}:
            frame = frame.convert("RGB")
        turn = TURNS[1]
        width_px, height_px = frame.size
        image_id = writer.stream(_raw_dict(frame), _deflated(frame.tobytes()))
    dpi_x, dpi_y = page_dpi(image.info, fallback_dpi)
    width_pt, height_pt = width_px * POINTS_PER_INCH / dpi_x, height_px * POINTS_PER_INCH / dpi_y
    if (largest := max(width_pt, height_pt)) > MAX_PAGE_PT:
        width_pt, height_pt = width_pt * MAX_PAGE_PT / largest, height_pt * MAX_PAGE_PT / largest
    content = f"q {_image_matrix(turn, width_pt, height_pt)} cm /Im0 Do Q\n".encode()
    content_id = writer.stream(b"", iter([content]))
    page_id = writer.object(
        None,
        (
            f"<</Type/Page/Parent {_PAGES_ID} 0 R/MediaBox[0 0 {_num(width_pt)} {_num(height_pt)}]"
            f"/Resources<</XObject<</Im0 {image_id} 0 R>>>>/Contents {content_id} 0 R>>"
        ).encode(),
    )
    return ImagePage(width_px, height_px, width_pt, height_pt), page_id


def _image_matrix(turn: tuple[float, ...], width_pt: float, height_pt: float) -> str:
    """The `cm` that draws the stored image (PDF's unit square: s right, t up, row 0 at the top) upright on
    a `width_pt` x `height_pt` page: (s, t) → (u, v) = (s, 1 - t) → the turn → (u'·W, (1 - v')·H)."""
    a, b, c, d, e, f = turn
    # x = W·(a·s + c·(1 - t) + e); y = H·(1 - b·s - d·(1 - t) - f)
    matrix = (
        width_pt * a,
        -height_pt * b,
        -width_pt * c,
        height_pt * d,
        width_pt * (c + e),
        height_pt * (1 - d - f),
    )
    return " ".join(_num(v) for v in matrix)


def _jpeg_dict(image: Image.Image) -> bytes:
    width, height = image.size
    # Adobe's CMYK JPEGs (an APP14 marker) store the inks inverted; Pillow reads them so, and so must PDF.
    decode = "/Decode[1 0 1 0 1 0 1 0]" if image.mode == "CMYK" and "adobe" in image.info else ""
    return (
        f"/Type/XObject/Subtype/Image/Width {width}/Height {height}/ColorSpace {JPEG_MODES[image.mode]}"
        f"/BitsPerComponent 8{decode}/Filter/DCTDecode"
    ).encode()


def _raw_dict(frame: Image.Image) -> bytes:
    width, height = frame.size
    space, bits = {"1": ("/DeviceGray", 1), "L": ("/DeviceGray", 8), "RGB": ("/DeviceRGB", 8)}[frame.mode]
    return (
        f"/Type/XObject/Subtype/Image/Width {width}/Height {height}/ColorSpace {space}"
        f"/BitsPerComponent {bits}/Filter/FlateDecode"
    ).encode()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _deflated(data: bytes) -> Iterator[bytes]:
    compressor = zlib.compressobj(6)
    for start in range(0, len(data), CHUNK_BYTES):
        if chunk := compressor.compress(data[start : start + CHUNK_BYTES]):
            yield chunk
    yield compressor.flush()


def _num(value: float) -> str:
    """A PDF number: at most 4 decimals, no exponent, no trailing zeros."""
    if not math.isfinite(value):
        raise ValueError(f"not a PDF number: {value}")
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class _Writer:
    """Objects written as they come; the cross-reference table at the end."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.offsets: dict[int, int] = {}
        self.next_id = _PAGES_ID + 1
        self.position = 0
        self._write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.position += len(data)

    def _begin(self, object_id: int | None) -> int:
        if object_id is None:
            object_id, self.next_id = self.next_id, self.next_id + 1
        self.offsets[object_id] = self.position
        self._write(f"{object_id} 0 obj\n".encode())
        return object_id

    def object(self, object_id: int | None, body: bytes) -> int:
        object_id = self._begin(object_id)
        self._write(body + b"\nendobj\n")
        return object_id

    def stream(self, entries: bytes, chunks: Iterator[bytes]) -> int:
        """A stream whose length is known once written: it goes in an object of its own, after."""
        object_id = self._begin(None)
        length_id, self.next_id = self.next_id, self.next_id + 1
        self._write(b"<<" + entries + f"/Length {length_id} 0 R>>\nstream\n".encode())
        start = self.position
        for chunk in chunks:
            self._write(chunk)
        length = self.position - start
        self._write(b"\nendstream\nendobj\n")
        self.object(length_id, str(length).encode())
        return object_id

    def finish(self, *, root_id: int) -> None:
        size = max(self.offsets) + 1
        xref = self.position
        lines = [f"xref\n0 {size}\n", "0000000000 65535 f \n"]
        lines += [
            f"{self.offsets[i]:010d} 00000 n \n" if i in self.offsets else "0000000000 65535 f \n"
            for i in range(1, size)
        ]
        lines.append(f"trailer\n<</Size {size}/Root {root_id} 0 R>>\nstartxref\n{xref}\n%%EOF\n")
        self._write("".join(lines).encode())
