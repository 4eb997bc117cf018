"""Pages out of real files (pdfium, Pillow): types, page modes, limits and broken inputs."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image
from tests.ocr_samples import ENGLISH, KOREAN, image_bytes, image_pdf, pdf_of, png_bomb, render_page, text_pdf

from inferline.errors import BadDocument, TooLarge, UnsupportedMediaType
from inferline.files import sniff
from inferline.ocr import pdf as pdf_module
from inferline.ocr.documents import Document, Limits, PageMode
from inferline.ocr.pagetree import read_tree

LIMITS = Limits(max_pages=100, max_page_pixels=50_000_000)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_types_come_from_the_content_never_the_name(tmp_path: Path) -> None:
    page = render_page(["x"])
    docx = io.BytesIO()
    with zipfile.ZipFile(docx, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    samples = {
        "a.txt": (image_bytes(page, "PNG"), sniff.PNG),
        "b.png": (image_bytes(page, "JPEG"), sniff.JPEG),
        "c.jpg": (image_bytes(page, "TIFF"), sniff.TIFF),
        "d.pdf": (image_bytes(page, "WEBP"), sniff.WEBP),
        "e.bin": (image_bytes(page, "BMP"), sniff.BMP),
        "f.png": (image_pdf([page]), sniff.PDF),
        "g.pdf": ("plain words, 한국어 포함\n".encode(), sniff.TEXT),
        "h.txt": (b"<!DOCTYPE html><html><body>hi</body></html>", sniff.HTML),
        "i.zip": (docx.getvalue(), sniff.DOCX),
        "j.png": (b"\x00\x01\x02garbage" * 10, sniff.OCTET),
    }
    for name, (data, expected) in samples.items():
        path = write(tmp_path, name, data)
        assert sniff.sniff(data[: sniff.HEAD_BYTES], path) == expected, name


def test_every_image_type_gives_its_page(tmp_path: Path) -> None:
    page = render_page(ENGLISH[:1])
    for fmt, content_type in [("PNG", sniff.PNG), ("JPEG", sniff.JPEG), ("WEBP", sniff.WEBP), ("BMP", sniff.BMP)]:
        with Document(write(tmp_path, f"p.{fmt}", image_bytes(page, fmt)), content_type) as document:
            loaded = document.load(0, PageMode.AUTO, 300, LIMITS)
        assert document.page_count == 1
        assert loaded.image is not None and loaded.image.size == page.size and loaded.text is None


def test_a_multi_page_tiff_gives_each_page_in_order(tmp_path: Path) -> None:
    pages = [render_page([f"page {i}"], width=600 + 100 * i) for i in range(3)]
    data = image_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    with Document(write(tmp_path, "multi.tif", data), sniff.TIFF) as document:
        assert document.page_count == 3
        widths = [document.load(i, PageMode.AUTO, 300, LIMITS).width for i in range(3)]
    assert widths == [600, 700, 800]


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", sniff.PNG), ("WEBP", sniff.WEBP)])
def test_an_animated_image_is_one_page_its_first_frame(tmp_path: Path, fmt: str, content_type: str) -> None:
    # Its frames are no pages: reaching frame k decodes every frame before it, so a file of a thousand
    # frames read page by page was hours of decoding (and its request's page check a quarter of that).
    frames = [render_page([f"frame {i}" + " x" * 8 * i]).convert("RGB") for i in range(3)]
    data = image_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True)
    with Image.open(io.BytesIO(data)) as animated:
        assert getattr(animated, "n_frames", 1) == 3  # Pillow sees the animation
    with Document(write(tmp_path, f"a.{fmt}", data), content_type, max_pages=100) as document:
        assert document.page_count == 1
        document.check_limits(LIMITS, 300, [0])
        loaded = document.load(0, PageMode.AUTO, 300, LIMITS).image
    assert loaded is not None
    assert loaded.convert("RGB").tobytes() == frames[0].tobytes() != frames[2].tobytes()


def test_pdf_page_modes(tmp_path: Path) -> None:
    text = write(tmp_path, "text.pdf", text_pdf([KOREAN, ENGLISH], "korean"))
    scan = write(tmp_path, "scan.pdf", image_pdf([render_page(ENGLISH)]))
    with Document(text, sniff.PDF) as document:
        auto = document.load(0, PageMode.AUTO, 300, LIMITS)
        forced = document.load(1, PageMode.FORCE, 150, LIMITS)
    assert auto.image is None and auto.text is not None
    assert [line["text"] for line in auto.lines] == KOREAN  # the text layer, line by line, in reading order
    for line in auto.lines:
        x0, y0, x1, y1 = line["bbox"]
        assert 0 <= x0 < x1 <= auto.width and 0 <= y0 < y1 <= auto.height
    assert forced.image is not None and forced.text is None
    assert abs(forced.width - 148 / 25.4 * 150) <= 1  # A5 width at 150 dpi: rasterized at the asked dpi
    with Document(scan, sniff.PDF) as document:
        auto_scan = document.load(0, PageMode.AUTO, 300, LIMITS)
        text_only = document.load(0, PageMode.TEXT_ONLY, 300, LIMITS)
    assert auto_scan.image is not None  # no text layer: OCR it
    assert text_only.image is None and text_only.text == ""


def test_broken_files_raise_bad_document_naming_the_problem(tmp_path: Path) -> None:
    png = image_bytes(render_page(ENGLISH), "PNG")
    pdf = text_pdf([ENGLISH])
    cases = {
        "truncated.png": (png[: len(png) // 3], sniff.PNG, "truncated"),
        "encrypted.pdf": (text_pdf([ENGLISH], password="secret"), sniff.PDF, "encrypted"),
        "garbage.pdf": (b"%PDF-1.7\n" + b"\x00garbage" * 200, sniff.PDF, "corrupt"),
        "truncated.pdf": (pdf[: len(pdf) // 2], sniff.PDF, "PDF"),
        "bomb.png": (png_bomb(), sniff.PNG, "decompression bomb"),
    }
    for name, (data, content_type, words) in cases.items():
        with pytest.raises(BadDocument, match=words), Document(write(tmp_path, name, data), content_type) as document:
            document.load(0, PageMode.AUTO, 300, LIMITS)


def test_limits_are_checked_from_headers_before_decoding(tmp_path: Path) -> None:
    bomb = write(tmp_path, "bomb.png", png_bomb())
    with Document(bomb, sniff.PNG) as document, pytest.raises(TooLarge, match="pixels"):
        document.check_limits(LIMITS, 300, [0])
    three = write(tmp_path, "three.pdf", text_pdf([ENGLISH] * 3))  # a PDF's, from its page tree (`pdf-pages`)
    with pytest.raises(TooLarge, match="3 pages"):
        read_tree(three, 10).check_limits(Limits(max_pages=2, max_page_pixels=10**9), 300, [0])
    with pytest.raises(TooLarge, match="1200 dpi"):
        read_tree(three, 10).check_limits(Limits(max_pages=10, max_page_pixels=20_000_000), 1200, [0])


def pdf_drawing_an_image(side_px: int, times: int = 1) -> bytes:
    """A one-inch page drawing a `side_px` square grey image `times` times (deflated: a few kB for millions
    of pixels)."""
    pixels = zlib.compress(bytes(side_px * side_px), 9)
    image = b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray " % (side_px, side_px)
    image += b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (len(pixels), pixels)
    content = b" ".join([b"q 72 0 0 72 0 0 cm /Im1 Do Q"] * times)
    return pdf_of(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Contents 4 0 R "
            b"/Resources << /XObject << /Im1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
            image,
        ]
    )


def test_an_image_a_pdf_page_draws_is_held_to_twice_the_page_pixel_limit_before_it_is_decoded(
    tmp_path: Path,
) -> None:
    # pdfium decodes a drawn image whole, whatever the page's size: a 40000x40000 one on a one-inch page
    # took 1.6 GB and 6.9 s to render at 300x300 pixels.
    limits = Limits(max_pages=10, max_page_pixels=1_000_000)
    bomb = write(tmp_path, "bomb.pdf", pdf_drawing_an_image(1500))  # 2.25 MP: over twice 1 MP
    with Document(bomb, sniff.PDF) as document, pytest.raises(BadDocument, match="one is 1500x1500"):
        document.load(0, PageMode.AUTO, 300, limits)
    twice = write(tmp_path, "twice.pdf", pdf_drawing_an_image(1100, times=2))  # 1.21 MP, twice
    with Document(twice, sniff.PDF) as document, pytest.raises(BadDocument, match="draws images of over"):
        document.load(0, PageMode.AUTO, 300, limits)
    fine = write(tmp_path, "fine.pdf", pdf_drawing_an_image(1400))  # 1.96 MP
    with Document(fine, sniff.PDF) as document:
        page = document.load(0, PageMode.AUTO, 300, limits)
    assert (page.width, page.height) == (300, 300)


def test_a_text_layer_of_more_characters_than_a_page_holds_fails_its_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "t.pdf", text_pdf([ENGLISH]))
    with Document(path, sniff.PDF) as document:
        chars = len(document.load(0, PageMode.AUTO, 300, LIMITS).text or "")
    monkeypatch.setattr(pdf_module, "MAX_LAYER_CHARS", chars // 2)
    with Document(path, sniff.PDF) as document, pytest.raises(BadDocument, match="characters, over"):
        document.load(0, PageMode.AUTO, 300, LIMITS)


def test_a_type_it_cannot_read_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaType, match="text/plain"):
        Document(write(tmp_path, "a.txt", b"hello"), sniff.TEXT)
    gif = write(tmp_path, "a.gif", image_bytes(Image.new("L", (4, 4)), "GIF"))
    with pytest.raises(UnsupportedMediaType):
        Document(gif, sniff.GIF)
