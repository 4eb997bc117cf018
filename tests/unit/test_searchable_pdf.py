"""The searchable PDF's parts, without an OCR engine: image pages, where text lands on a page that was
turned (by the file's /Rotate, and by the engine before reading it), and how words are spaced."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw, ImageOps

from inferline.ocr.image_pdf import write_image_pdf
from inferline.ocr.searchable import runs, write_searchable_pdf

MARKS = [(40, 30, 140, 52), (60, 100, 100, 180), (10, 10, 50, 20)]  # one black box per page, points


def raw_pdf() -> bytes:
    """Three pages of different sizes, each with a black box; the second is shown turned (/Rotate 90)."""
    sizes, rotations = [(200, 150), (300, 250), (120, 90)], [0, 90, 0]
    objects = ["<</Type/Catalog/Pages 2 0 R>>", "<</Type/Pages/Kids[3 0 R 5 0 R 7 0 R]/Count 3>>"]
    for (width, height), rotate, (x0, y0, x1, y1) in zip(sizes, rotations, MARKS, strict=True):
        content = f"0 g {x0} {y0} {x1 - x0} {y1 - y0} re f"
        objects.append(
            f"<</Type/Page/Parent 2 0 R/MediaBox[0 0 {width} {height}]/Rotate {rotate}"
            f"/Contents {len(objects) + 2} 0 R>>"
        )
        objects.append(f"<</Length {len(content)}>>stream\n{content}\nendstream")
    out, offsets = b"%PDF-1.7\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<</Size {len(objects) + 1}/Root 1 0 R>>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def render(doc: Any, index: int, scale: float) -> Image.Image:
    page = doc[index]
    try:
        return page.render(scale=scale, grayscale=True).to_pil()  # type: ignore[no-any-return]
    finally:
        page.close()


def ink_box(image: Image.Image) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.asarray(image) < 128)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def char_union(doc: Any, index: int) -> tuple[float, float, float, float]:
    page = doc[index]
    textpage = page.get_textpage()
    try:
        boxes = [textpage.get_charbox(i) for i in range(textpage.count_chars())]
        text = textpage.get_text_range(0, textpage.count_chars())
    finally:
        textpage.close()
        page.close()
    assert text == "Mark here"
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def test_pages_read_keep_their_content_and_get_text_where_the_engine_saw_it_through_its_turns(tmp_path: Path) -> None:
    source = tmp_path / "marks.pdf"
    source.write_bytes(raw_pdf())
    dpi = 144
    original = pdfium.PdfDocument(source)
    pages = []
    for index, rotation, skew in ((1, 0, 0.0), (2, 270, -4.0)):
        seen = render(original, index, dpi / 72)
        # What the engine read: the rasterized page turned upright, then levelled (as `ocr.orientation` does).
        if rotation:
            seen = seen.rotate(rotation, expand=True)
        if skew:
            seen = seen.rotate(skew, expand=True, resample=Image.Resampling.BICUBIC, fillcolor=255)
        line = {"text": "Mark here", "confidence": 0.9, "bbox": list(ink_box(seen))}
        pages.append(
            {"index": index, "width": seen.width, "height": seen.height, "source": "ocr", "text": "Mark here"}
            | {"lines": [line], "rotation_deg": rotation, "deskew_deg": skew}
        )
    out = io.BytesIO()
    write_searchable_pdf(source, "application/pdf", {"pages": pages, "dpi": dpi}, out)
    searchable = pdfium.PdfDocument(out.getvalue())
    try:
        assert len(searchable) == 2  # the first page was not read: it is not in the file
        for position, index in enumerate((1, 2)):
            assert searchable.get_page_size(position) == original.get_page_size(index)
            before, after = render(original, index, 2), render(searchable, position, 2)
            assert np.array_equal(np.asarray(before), np.asarray(after))  # the content, as it was
            # The text covers the box, in the page's own coordinates (those of the file's /Rotate'd page).
            left, bottom, right, top = char_union(searchable, position)
            x0, y0, x1, y1 = MARKS[index]
            assert left <= x0 + 0.5 and right >= x1 - 0.5 and bottom <= y0 + 0.5 and top >= y1 - 0.5
            assert (left + right) / 2 == pytest.approx((x0 + x1) / 2, abs=0.5)
            assert (bottom + top) / 2 == pytest.approx((y0 + y1) / 2, abs=0.5)
            # A levelled page's box, turned back, is a slanted box around the mark: its corners stick out.
            slack_pt = 3.5 if pages[position]["deskew_deg"] else 0.5
            assert left >= x0 - slack_pt and right <= x1 + slack_pt and bottom >= y0 - slack_pt and top <= y1 + slack_pt
    finally:
        searchable.close()
        original.close()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_is_embedded_as_its_bytes_and_shown_upright_by_its_exif_orientation(
    tmp_path: Path, orientation: int
) -> None:
    image = Image.new("RGB", (60, 40), "white")
    ImageDraw.Draw(image).rectangle((4, 4, 20, 12), fill="red")
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    image.save(path, "JPEG", exif=exif, dpi=(144, 144), quality=95)
    out = io.BytesIO()
    [page] = write_image_pdf(path, [0], out, fallback_dpi=300)
    upright = ImageOps.exif_transpose(Image.open(path))
    assert (page.width_px, page.height_px) == upright.size and page.width_pt == upright.width / 2
    doc = pdfium.PdfDocument(out.getvalue())
    try:
        pdf_page = doc[0]
        [embedded] = list(pdf_page.get_objects())
        assert bytes(embedded.get_data(decode_simple=False)) == path.read_bytes()  # not encoded again
        shown = np.asarray(pdf_page.render(scale=2).to_pil().convert("RGB"))
        pdf_page.close()
        assert np.array_equal(shown, np.asarray(upright.convert("RGB")))
    finally:
        doc.close()


def test_words_are_spaced_as_the_page_text_spaces_them() -> None:
    """Tesseract's word boxes split Korean words into syllables that its page text joins."""
    words = [("회", [0, 0, 10, 10]), ("의는", [11, 0, 30, 10]), ("다음", [40, 0, 60, 12]), ("주", [70, 1, 80, 9])]
    page: dict[str, Any] = {
        "text": "회의는 다음 주\n\nHello  world",
        "lines": [
            {"text": "회 의는 다음 주", "bbox": [0, 0, 80, 12], "words": [{"text": t, "bbox": b} for t, b in words]},
            {"text": "Hello world", "bbox": [0, 20, 80, 30]},  # no word boxes: one run over the line
            {"text": "\x07", "bbox": [0, 40, 10, 50]},  # nothing to set
        ],
    }
    placed = [(run.text, run.fit, run.bbox) for run in runs(page)]
    assert placed == [
        ("회의는 ", 3, (0, 0, 30, 10)),
        ("다음 ", 2, (40, 0, 60, 12)),
        ("주", 1, (70, 1, 80, 9)),
        ("Hello world", 11, (0, 20, 80, 30)),
    ]


def test_searchable_pdfs_are_built_a_few_at_once_and_one_per_tenant() -> None:
    from inferline.errors import Overloaded
    from inferline.ocr.deps import PdfBuilds

    builds = PdfBuilds(at_once=2)
    builds.start("a")
    with pytest.raises(Overloaded, match="of this tenant"):
        builds.start("a")
    builds.start("b")
    with pytest.raises(Overloaded, match="for others"):
        builds.start("c")
    builds.end("a")
    builds.start("c")
