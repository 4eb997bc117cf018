"""Documents the OCR tests make themselves: pages rendered with Pillow and the fonts `./dev` installs
(fonts-nanum for Korean, fonts-dejavu-core for Latin), PDFs with and without a text layer, and broken
files (truncated, encrypted, a decompression bomb)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

FONTS = {
    "latin": Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    "korean": Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf"),
}

ENGLISH = [
    "Invoice 2041 was paid on March 14.",
    "The warehouse ships orders every weekday.",
    "Contact support at help@example.com today.",
]
KOREAN = [
    "서울시 강남구 테헤란로 152번지",
    "회의는 다음 주 화요일 오후 세 시에 열립니다.",
    "계약서 사본을 이메일로 보내 주십시오.",
]


def font_path(script: str) -> Path:
    path = FONTS[script]
    if not path.exists():
        if os.environ.get("INFERLINE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"font {path} is required (./dev installs fonts-nanum and fonts-dejavu-core)")
        pytest.skip(f"font {path} missing: run ./dev once to install it")
    return path


def render_page(lines: list[str], script: str = "latin", *, width: int = 1400, size_px: int = 40) -> Image.Image:
    """Black text on white, one line per entry, about 10 pt at 300 dpi."""
    font = ImageFont.truetype(str(font_path(script)), size_px)
    line_h = int(size_px * 1.8)
    image = Image.new("L", (width, 80 + line_h * len(lines) + 40), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 80 + i * line_h), line, font=font, fill=0)
    return image


def image_bytes(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def image_pdf(pages: list[Image.Image], dpi: int = 300) -> bytes:
    """A PDF of raster pages only (a scan): no text layer."""
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", resolution=dpi, save_all=True, append_images=pages[1:])
    return buffer.getvalue()


def text_pdf(pages: list[list[str]], script: str = "latin", *, password: str | None = None) -> bytes:
    """A PDF with a real text layer (an embedded TrueType font), one list of lines per page."""
    from fpdf import FPDF

    pdf = FPDF(unit="mm", format=(148, 210))  # A5
    pdf.add_font("body", fname=str(font_path(script)))
    pdf.set_font("body", size=12)
    for lines in pages:
        pdf.add_page()
        for line in lines:
            pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    if password is not None:
        pdf.set_encryption(owner_password="owner", user_password=password)
    return bytes(pdf.output())


def pdf_of(objects: list[bytes]) -> bytes:
    """A PDF of these numbered objects (1 the catalog), with its cross-reference table."""
    out, offsets = bytearray(b"%PDF-1.7\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (10 gigapixels by default)."""
    png = image_bytes(Image.new("L", (8, 8), 255), "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return png[:8] + patched + png[8 + 8 + 13 + 4 :]


LEFT_COLUMN = [
    "The northern valley has three",
    "small farms that grow apples",
    "and pears for the town market",
    "every Saturday morning in May.",
    "Visitors may pick fruit themselves",
    "when the weather allows it.",
]
RIGHT_COLUMN = [
    "Our bakery opens at seven and",
    "sells fresh bread until noon on",
    "weekdays, with cakes baked to",
    "order for birthdays and parties.",
    "Orders placed before Thursday",
    "are ready for the weekend.",
]


def render_columns(
    intro: list[str], left: list[str], right: list[str], *, size_px: int = 34, gutter_px: int = 90
) -> Image.Image:
    """A one-column introduction over two columns of text (a brochure page), lines of the two columns
    level with each other, so one block across both would join them line by line."""
    font = ImageFont.truetype(str(font_path("latin")), size_px)
    line_h = int(size_px * 1.5)
    column_px = int(max(font.getlength(line) for line in left + right)) + 20
    width = 60 + 2 * column_px + gutter_px + 60
    top = 60 + line_h * (len(intro) + 1)
    image = Image.new("L", (width, top + line_h * max(len(left), len(right)) + 60), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(intro):
        draw.text((60, 60 + i * line_h), line, font=font, fill=0)
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        draw.text((60, top + i * line_h), a, font=font, fill=0)
        draw.text((60 + column_px + gutter_px, top + i * line_h), b, font=font, fill=0)
    return image
