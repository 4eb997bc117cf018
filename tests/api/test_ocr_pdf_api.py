"""The searchable PDF of an OCR job (`GET /jobs/{id}/result?format=pdf`), read back with pdfium: the
original pages, and the recognized text where the job recognized it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import pytest
from tests.api.conftest import Api, MakeApi
from tests.ocr_samples import ENGLISH, KOREAN, font_path, image_bytes, render_page

from inferline.ocr.pdf import LOCK


@pytest.fixture
async def ocr_api(make_api: MakeApi) -> AsyncIterator[Api]:
    """On SQLite only: the PDF is made from the job's result and file, which the database only looks up."""
    async with make_api(max_upload_bytes=2_000_000, ocr_max_pages=25) as started:
        yield started


@contextmanager
def opened(data: bytes) -> Iterator[Any]:
    """A PDF read under the process's pdfium lock: the API's threads run pdfium in this process too."""
    with LOCK:
        doc = pdfium.PdfDocument(data)
        try:
            yield doc
        finally:
            doc.close()


def page_text(doc: Any, index: int) -> str:
    page = doc[index]
    textpage = page.get_textpage()
    try:
        return str(textpage.get_text_range(0, textpage.count_chars()))
    finally:
        textpage.close()
        page.close()


def pixels(doc: Any, index: int, scale: float) -> np.ndarray[Any, Any]:
    page = doc[index]
    bitmap = page.render(scale=scale, grayscale=True)
    try:
        return np.asarray(bitmap.to_pil()).copy()
    finally:
        bitmap.close()
        page.close()


def words_of(text: str) -> str:
    return " ".join(text.split())


def mixed_pdf() -> bytes:
    """Page 1 with a text layer (English), page 2 a scan of Korean lines (an image, no text)."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(420, 595))
    pdf.add_font("body", fname=str(font_path("latin")))
    pdf.set_font("body", size=12)
    pdf.add_page()
    for line in ENGLISH:
        pdf.cell(0, 20, line, new_x="LMARGIN", new_y="NEXT")
    pdf.add_page()
    scan = render_page(KOREAN, "korean")
    pdf.image(scan, x=20, y=40, w=scan.width * 72 / 300)
    return bytes(pdf.output())


async def submitted(api: Api, data: bytes, name: str) -> str:
    response = await api.client.post("/api/v1/ocr", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_images_and_pdfs_come_back_as_their_own_pages_with_the_text_on_the_words(ocr_api: Api) -> None:
    # Both at once: the engine's two processes read them side by side.
    image = render_page(KOREAN + ENGLISH, "korean")
    mixed = mixed_pdf()
    image_job = await submitted(ocr_api, image_bytes(image, "PNG", dpi=(150, 150)), "page.png")
    pdf_job = await submitted(ocr_api, mixed, "mixed.pdf")
    await image_comes_back_as_its_pixels_with_the_text_on_its_words(ocr_api, await ocr_api.wait(image_job), image)
    await pdf_keeps_its_pages_and_only_its_scanned_page_gets_a_text_layer(ocr_api, await ocr_api.wait(pdf_job), mixed)


async def image_comes_back_as_its_pixels_with_the_text_on_its_words(api: Api, job: dict[str, Any], image: Any) -> None:
    assert job["status"] == "succeeded", job["error"]
    [read] = job["result"]["pages"]
    url = f"/api/v1/jobs/{job['id']}/result"
    response = await api.client.get(url, params={"format": "pdf"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert int(response.headers["content-length"]) == len(response.content)
    pt_per_px = 72 / 150  # the PNG's own resolution
    with opened(response.content) as doc:
        assert len(doc) == 1
        width_pt, height_pt = doc.get_page_size(0)
        assert (width_pt, height_pt) == pytest.approx((image.width * pt_per_px, image.height * pt_per_px), abs=0.01)
        text = page_text(doc, 0)
        assert "서울시" in text and words_of(text) == words_of(job["result"]["text"])
        # The characters of a word lie on that word as it was recognized.
        [line] = [line for line in read["lines"] if "Invoice" in line["text"]]
        box = next((w["bbox"] for w in line.get("words", []) if w["text"] == "Invoice"), line["bbox"])
        left, top = box[0] * pt_per_px, height_pt - box[1] * pt_per_px
        right, bottom = box[2] * pt_per_px, height_pt - box[3] * pt_per_px
        start = text.index("Invoice")
        page = doc[0]
        textpage = page.get_textpage()
        try:
            for i in range(start, start + len("Invoice")):
                x0, y0, x1, y1 = textpage.get_charbox(i)
                assert left - 0.5 <= x0 < x1 <= right + 0.5 and bottom - 0.5 <= y0 < y1 <= top + 0.5
        finally:
            textpage.close()
            page.close()
        assert np.array_equal(pixels(doc, 0, 1 / pt_per_px), np.asarray(image))  # the PNG's pixels, untouched
    # Once the file is deleted, the PDF cannot be made; the other formats still can.
    file_id = job["input"]["file_id"]
    assert (await api.client.delete(f"/api/v1/files/{file_id}")).status_code == 204
    gone = await api.client.get(url, params={"format": "pdf"})
    assert gone.status_code == 409 and file_id in gone.json()["detail"] and "deleted" in gone.json()["detail"]
    assert (await api.client.get(url, params={"format": "text"})).text == job["result"]["text"]


async def pdf_keeps_its_pages_and_only_its_scanned_page_gets_a_text_layer(
    api: Api, job: dict[str, Any], data: bytes
) -> None:
    assert job["status"] == "succeeded", job["error"]
    assert [p["source"] for p in job["result"]["pages"]] == ["text-layer", "ocr"]
    response = await api.client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": "pdf"})
    assert response.status_code == 200
    with opened(data) as original, opened(response.content) as searchable:
        assert len(searchable) == 2
        for index in range(2):
            assert searchable.get_page_size(index) == original.get_page_size(index)
            assert np.array_equal(pixels(searchable, index, 1.5), pixels(original, index, 1.5))
        assert page_text(searchable, 0) == page_text(original, 0)  # its own text layer, not a second one
        scanned = page_text(searchable, 1)
        assert "회의는" in scanned and words_of(scanned) == words_of(job["result"]["pages"][1]["text"])
