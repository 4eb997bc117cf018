"""pdfium through `ocr.pdf`: from many threads at once, every call of every path (the `/ocr` pre-check,
page loads, text layers, renders, closes) made while holding the process's one pdfium lock; a page's text
runs read in one pass over its characters, giving the lines that reading each rectangle's text gave."""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pypdfium2
import pypdfium2.raw
import pytest
from tests.ocr_samples import ENGLISH, KOREAN, font_path, image_pdf, render_page, text_pdf

from inferline.errors import BadDocument
from inferline.files import sniff
from inferline.ocr import pdf
from inferline.ocr.documents import Document, Limits, PageMode, PageRef
from inferline.ocr.pagetree import read_tree
from inferline.ocr.pdf import Pdf, Segment, merge_lines

LIMITS = Limits(max_pages=100, max_page_pixels=50_000_000)


class Calls:
    def __init__(self) -> None:
        self.made = 0
        self.unlocked: list[str] = []
        self.guard = threading.Lock()

    def record(self, name: str) -> None:
        with self.guard:
            self.made += 1
            if not pdf.LOCK._is_owned():  # type: ignore[attr-defined]
                self.unlocked.append(name)


@pytest.fixture
def pdfium_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Every function of pdfium's C API, wrapped to note whether the calling thread holds the lock."""
    calls = Calls()

    def wrap(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            calls.record(name)
            return func(*args)

        return call

    for name, value in vars(pypdfium2.raw).copy().items():
        if name.startswith("FPDF") and isinstance(value, ctypes._CFuncPtr):
            monkeypatch.setattr(pypdfium2.raw, name, wrap(name, value))
    yield calls
    gc.collect()  # a pypdfium2 object left to its finalizer would call pdfium now, outside the lock


def test_every_pdfium_call_from_many_threads_holds_the_process_lock(tmp_path: Path, pdfium_calls: Calls) -> None:
    text = tmp_path / "text.pdf"
    text.write_bytes(text_pdf([ENGLISH, ENGLISH[:1]] * 2))
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(image_pdf([render_page(ENGLISH[:1], width=600)], dpi=100))
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(text.read_bytes()[:2000])

    def text_pages() -> int:
        with Document(text, sniff.PDF) as document:
            return sum(len(document.load(i, PageMode.AUTO, 150, LIMITS).lines) for i in range(document.page_count))

    def render() -> int:
        image = PageRef(str(scan), sniff.PDF, 0, 100, LIMITS, PageMode.FORCE).read().image
        assert image is not None
        return image.width

    def check() -> int:  # what the pdf-pages model does for the /ocr pre-check and a job's page count
        assert read_tree(text, 1000).page_count == 4
        with pytest.raises(BadDocument):
            read_tree(broken, 1000)
        return 1

    work = [text_pages, render, check] * 16
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda task: task(), work))
    assert results[:3] == [8, results[1], 1] and results[1] > 100
    assert all(result == expected for result, expected in zip(results, results[:3] * 16, strict=True))
    gc.collect()
    assert pdfium_calls.made > 500  # the wrappers were called: every path went through them
    assert pdfium_calls.unlocked == []
    outside = pypdfium2.PdfDocument(str(text))  # what a path that bypassed `ocr.pdf` would do
    outside.close()
    assert pdfium_calls.unlocked  # is seen


def many_runs_pdf(runs: int) -> bytes:
    """One page of `runs` tiny words, each its own text object, on rows with a little jitter."""
    from fpdf import FPDF

    document = FPDF(unit="pt", format=(600, 850))
    document.add_font("body", fname=str(font_path("latin")))
    document.set_font("body", size=3)
    document.add_page()
    for i in range(runs):
        row, column = divmod(i, 40)
        document.text(10 + column * 14.5 + (row % 7) * 0.3, 10 + row * 5.3 + (column % 3) * 2.2, f"w{i}")
    return bytes(document.output())


def rectangle_texts(path: Path, index: int) -> tuple[list[Segment], float]:
    """The reference: pdfium's text rectangles, each with the text pdfium finds inside it (a scan of
    every character of the page per rectangle)."""
    document = pypdfium2.PdfDocument(str(path))
    page = document[index]
    textpage = page.get_textpage()
    segments = []
    for i in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(i)
        text = textpage.get_text_bounded(left, bottom, right, top).strip()
        if text:
            segments.append((left, bottom, right, top, text))
    height_pt = page.get_size()[1]
    textpage.close()
    page.close()
    document.close()
    return segments, height_pt


def test_text_runs_give_the_lines_of_each_rectangles_text(tmp_path: Path) -> None:
    samples = {
        "english.pdf": text_pdf([ENGLISH, ENGLISH[::-1]]),
        "korean.pdf": text_pdf([KOREAN], "korean"),
        "runs.pdf": many_runs_pdf(400),
    }
    for name, data in samples.items():
        path = tmp_path / name
        path.write_bytes(data)
        opened = Pdf(path)
        try:
            for index in range(opened.page_count):
                layer = opened.text_layer(index)
                reference, height_pt = rectangle_texts(path, index)
                assert layer.segments, name
                assert merge_lines(layer.segments, 300 / 72, height_pt) == merge_lines(reference, 300 / 72, height_pt)
        finally:
            opened.close()


def test_a_page_of_thousands_of_runs_is_read_in_linear_time(tmp_path: Path) -> None:
    small, large = tmp_path / "small.pdf", tmp_path / "large.pdf"
    small.write_bytes(many_runs_pdf(1000))
    large.write_bytes(many_runs_pdf(6000))

    def read_s(path: Path, runs: int) -> float:
        with Document(path, sniff.PDF) as document:
            started = time.perf_counter()
            page = document.load(0, PageMode.AUTO, 300, LIMITS)
            elapsed = time.perf_counter() - started
        assert sum(len(line["text"].split()) for line in page.lines) == runs  # every run, in some line
        return elapsed

    read_s(small, 1000)  # warm
    small_s, large_s = read_s(small, 1000), read_s(large, 6000)
    # Six times the runs: about six times the time (rectangle by rectangle it was 50 times: 3.9 s).
    assert large_s < 2.0 and large_s < 15 * max(small_s, 0.01), (small_s, large_s)
