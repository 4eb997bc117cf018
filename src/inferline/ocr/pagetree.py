"""A PDF's page count and page sizes, read in a process of its own within a time limit.

pdfium walks the page tree to count the pages and again to find one page's size, and it remembers
neither what it found under a node holding no pages nor the way to a page: a tree whose every node lists
the same child twice, 22 deep, is a 2 kB file whose pages took 1.7 s to count and 0.5 s to size, each
level more doubling both (30 deep: minutes; 40: days), in 20 MB, under the process's one pdfium lock
(`ocr.pdf.LOCK`), which every other PDF of the process then waits for. So neither the API process (the
`/ocr` pre-check) nor a worker (the pages an OCR or ingest job reads) walks a tenant's page tree: the
`pdf-pages` model does, in a process of its own (`inference.runners`), killed past PAGE_TREE_TIMEOUT_S and
replaced. Pages themselves are read in the engine's processes (`ocr.pages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from inferline.errors import BadDocument, ModelTimedOut, TooLarge
from inferline.inference.model import Model
from inferline.ocr.documents import Limits, check_page_pixels, pages_problem
from inferline.ocr.pdf import POINTS_PER_INCH, Pdf

MODEL_NAME = "pdf-pages"
PAGE_TREE_TIMEOUT_S = 10.0  # a real tree of a thousand pages is read in milliseconds


@dataclass(frozen=True)
class PageTree:
    """What the tree says: the page count, and every page's size in points (none when the count is over
    the limit it was read with: the file is refused on its count)."""

    page_count: int
    sizes_pt: list[tuple[float, float]]

    def too_many_pages(self, max_pages: int) -> str | None:
        return pages_problem(self.page_count, max_pages)

    def check_limits(self, limits: Limits, dpi: int, pages: list[int]) -> None:
        """As `Document.check_limits`: `TooLarge` past the page count, or for a page past the pixels."""
        if reason := self.too_many_pages(limits.max_pages):
            raise TooLarge(reason)
        scale = dpi / POINTS_PER_INCH
        for index in pages:
            width_pt, height_pt = self.sizes_pt[index]
            check_page_pixels(index, (round(width_pt * scale), round(height_pt * scale)), dpi, limits.max_page_pixels)


@dataclass(frozen=True)
class PageTreeQuestion:
    path: str
    max_pages: int


class PageTreeModel(Model[PageTreeQuestion, PageTree]):
    """Reads a PDF's page tree (no weights: a model only to run in a process the runner can kill)."""

    name: ClassVar[str] = MODEL_NAME
    max_batch_size: ClassVar[int] = 1
    processes: ClassVar[int] = 1  # one pre-check at a time is milliseconds; `model_processes` for more

    def predict_batch(self, inputs: list[PageTreeQuestion]) -> list[PageTree | BaseException]:
        out: list[PageTree | BaseException] = []
        for question in inputs:
            try:
                out.append(read_tree(Path(question.path), question.max_pages))
            except BadDocument as exc:
                out.append(exc)
        return out


def read_tree(path: Path, max_pages: int) -> PageTree:
    pdf = Pdf(path)
    try:
        if pdf.page_count == 0:
            raise BadDocument("the PDF has no pages")
        if pdf.page_count > max_pages:
            return PageTree(pdf.page_count, [])
        return PageTree(pdf.page_count, [pdf.page_size(index) for index in range(pdf.page_count)])
    finally:
        pdf.close()


class PageTreeTooSlow(BadDocument):
    """The page tree took past PAGE_TREE_TIMEOUT_S to read."""


def too_slow(exc: ModelTimedOut) -> PageTreeTooSlow:
    return PageTreeTooSlow(
        f"its page tree took over {exc.limit_s:g} s to read and was given up (pages listed many times over): "
        "not a document that can be read"
    )
