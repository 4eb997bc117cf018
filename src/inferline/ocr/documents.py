"""Pages out of the files users send: PNG, JPEG, TIFF (multi-page), WebP, BMP and PDF.

PDF page modes after OCRmyPDF: `auto` uses a page's text layer when it has one and OCRs the others,
`force` OCRs every page, `text-only` never OCRs. Pages are rasterized at `dpi` (300 by default).

Everything here is blocking (pdfium, Pillow): callers run it in a thread. Every pdfium call goes
through `ocr.pdf.Pdf`, under the process's one pdfium lock; a `Document` holds mutable state (an image's
current frame), so one is used by one thread at a time (a page is read through a `PageRef`, which
opens its own).
Problems with the file itself (corrupt, truncated, encrypted, a decompression bomb) raise
`BadDocument`, which fails the job with a message that names the problem.
"""

from __future__ import annotations

import contextlib
import re
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from inferline.errors import BadDocument, InvalidInput, TooLarge, UnsupportedMediaType
from inferline.files import jpeg, sniff
from inferline.files.structure import check_image_structure
from inferline.ocr.pdf import POINTS_PER_INCH, Pdf, merge_lines

# Pillow's own bomb check warns, then raises at open, at a fixed size; ours is `ocr_max_page_pixels`,
# checked on every page's header before any pixel is decoded (a 413 at submission, a failed job later).
Image.MAX_IMAGE_PIXELS = None


class PageMode(StrEnum):
    AUTO = "auto"
    FORCE = "force"
    TEXT_ONLY = "text-only"


ACCEPTED_TYPES = frozenset({*sniff.IMAGES, sniff.PDF})
# An image a PDF page draws may be finer than the page is rasterized (a 600 dpi scan on a page read at
# 300 dpi), so it is held to twice the page's pixel limit: pdfium decodes it whole, whatever it is drawn at.
IMAGE_PX_PER_PAGE_PX = 2
# What Pillow raises on a file its readers choke on, besides OSError: a TIFF directory missing its size is
# a TypeError in `seek`, a broken one a SyntaxError, KeyError or struct.error. Each is the file's doing.
PILLOW_ERRORS = (OSError, ValueError, TypeError, SyntaxError, KeyError, IndexError, struct.error, ZeroDivisionError)


@dataclass(frozen=True)
class Limits:
    max_pages: int
    max_page_pixels: int
    page_memory_bytes: int | None = None  # what pdfium may take to read one page (`ocr.pdf.Pdf`)


@dataclass
class Page:
    """One page as the OCR job sees it: an image to recognize, or the text of its text layer."""

    index: int
    width: int
    height: int
    image: Image.Image | None = None
    text: str | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PageRef:
    """A page to rasterize where it is recognized: in the engine's own process, so pages render in
    parallel and no bitmap crosses a process boundary (an A4 page at 300 dpi is 8.7 MB)."""

    path: str
    content_type: str
    index: int
    dpi: int
    limits: Limits
    mode: PageMode  # as `Document.load` takes it: FORCE never reads a text layer

    def read(self) -> Page:
        """The page, the file opened once: from its text layer where `mode` takes it (`image` None), else
        rasterized. Read where the engine runs, not in the API process: loading a PDF page is what can
        take without end (`ocr.pdf`)."""
        with Document(
            Path(self.path),
            self.content_type,
            max_pages=self.limits.max_pages,
            page_memory_bytes=self.limits.page_memory_bytes,
        ) as document:
            return document.load(self.index, self.mode, self.dpi, self.limits)


def check_type(content_type: str) -> None:
    if content_type not in ACCEPTED_TYPES:
        accepted = ", ".join(sorted(ACCEPTED_TYPES))
        raise UnsupportedMediaType(f"cannot OCR a file of type {content_type} (by its content); accepted: {accepted}")


def parse_pages(spec: str | None, page_count: int) -> list[int]:
    """`"1-3,5"` (1-based, as users count) to sorted 0-based indexes; None means every page."""
    if spec is None or not spec.strip():
        return list(range(page_count))
    chosen: set[int] = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise InvalidInput(f"pages: {part.strip()!r} is not a page number or a range like 2-5", field="pages")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if first < 1 or last < first:
            raise InvalidInput(f"pages: {part.strip()!r} is not a valid range", field="pages")
        if last > page_count:
            raise InvalidInput(f"pages: {part.strip()!r} is past the last page ({page_count})", field="pages")
        chosen.update(range(first - 1, last))
    return sorted(chosen)


class Document:
    """An open document: `page_count`, `load(i, mode, dpi)`. An image's frames are
    counted up to one past `max_pages` (then `page_count` is that, and `counted_all` False): Pillow
    reads every TIFF frame's header to count them, 0.4 ms each, and a 200 MB TIFF of tiny frames holds
    two million."""

    def __init__(
        self, path: Path, content_type: str, *, max_pages: int | None = None, page_memory_bytes: int | None = None
    ) -> None:
        check_type(content_type)
        self.path = path
        self.content_type = content_type
        self.page_memory_bytes = page_memory_bytes
        self._pdf: Pdf | None = None
        self._image: Image.Image | None = None
        self.counted_all = True
        self.jpeg_scans = 0  # counted up to one past the limit (files/jpeg.py)
        try:
            if content_type == sniff.PDF:
                self._open_pdf()
            else:
                self._open_image(max_pages)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
            self._pdf = None
        if self._image is not None:
            self._image.close()
            self._image = None

    # -- opening -----------------------------------------------------------------------------------

    def _open_pdf(self) -> None:
        self._pdf = Pdf(self.path, page_budget_bytes=self.page_memory_bytes)
        self.page_count = self._pdf.page_count
        if self.page_count == 0:
            raise BadDocument("the PDF has no pages")

    def _open_image(self, max_pages: int | None) -> None:
        check_image_structure(self.path, self.content_type)  # what would make Pillow's header reading slow
        try:
            self._image = Image.open(self.path)
        except UnidentifiedImageError as exc:  # its text names the file's path: not for the caller
            raise BadDocument("corrupt or unreadable image: not in a format the image reader knows") from exc
        except PILLOW_ERRORS as exc:
            raise BadDocument(f"corrupt or unreadable image: {_reason(exc)}") from exc
        if self._image.format == "TIFF":  # a scanner's pages
            if max_pages is not None:
                self.page_count, self.counted_all = _count_tiff_frames(self._image, max_pages)
            else:
                self.page_count = int(getattr(self._image, "n_frames", 1))
        else:
            # An animated PNG, WebP or GIF (or an MPO's second view) is one picture, read as its first
            # frame: its frames are no pages, and reaching frame k decodes all k before it (a file's
            # thousand frames cost hours of decoding, a quarter of it in the request's own page check).
            self.page_count = 1
        if self._image.format in {"JPEG", "MPO"}:
            self.jpeg_scans = jpeg.count_scans(self.path)

    def too_many_scans(self) -> str | None:
        """Why decoding this JPEG would take too long (files/jpeg.py), or None."""
        return jpeg.scans_problem(self.jpeg_scans)

    def too_many_pages(self, max_pages: int) -> str | None:
        """Why the document is over `max_pages`, or None."""
        return pages_problem(self.page_count, max_pages, counted_all=self.counted_all)

    # -- pages -------------------------------------------------------------------------------------

    def check_limits(self, limits: Limits, dpi: int, pages: list[int]) -> None:
        """An image's 413-worthy problems, found from headers alone (cheap enough to run before queueing a
        job). A PDF's are read from its page tree apart (`ocr.pagetree.PageTree.check_limits`)."""
        assert self._image is not None
        if reason := self.too_many_pages(limits.max_pages) or self.too_many_scans():
            raise TooLarge(reason)
        for index in pages:
            self._seek(index)
            check_page_pixels(index, self._image.size, dpi, limits.max_page_pixels)

    def text_page(self, index: int, mode: PageMode, dpi: int) -> Page | None:
        """The page from its text layer when `mode` says to use it, else None (it needs OCR). Cheap:
        nothing is rasterized."""
        if self._pdf is None or mode is PageMode.FORCE:
            return None
        layer = self._pdf.text_layer(index)
        if not layer.text and mode is not PageMode.TEXT_ONLY:
            return None
        scale = dpi / POINTS_PER_INCH
        lines = merge_lines(layer.segments, scale, layer.height_pt)
        width, height = round(layer.width_pt * scale), round(layer.height_pt * scale)
        return Page(index=index, width=width, height=height, text=layer.text, lines=lines)

    def load(self, index: int, mode: PageMode, dpi: int, limits: Limits) -> Page:
        if self._pdf is not None:
            return self._load_pdf_page(index, mode, dpi, limits)
        return self._load_image_page(index, limits)

    def _load_image_page(self, index: int, limits: Limits) -> Page:
        assert self._image is not None
        self._seek(index)
        width, height = self._image.size
        _check_pixels(index, width, height, limits)
        if reason := self.too_many_scans():
            raise BadDocument(reason)
        try:
            frame = self._image.copy()  # decodes the pixels: truncation shows here
            frame = ImageOps.exif_transpose(frame) or frame
        except (*PILLOW_ERRORS, Image.DecompressionBombError) as exc:
            raise BadDocument(f"corrupt or truncated image (page {index + 1}): {exc}") from exc
        if frame.mode not in {"L", "RGB"}:
            frame = frame.convert("RGB")
        return Page(index=index, width=frame.width, height=frame.height, image=frame)

    def _seek(self, index: int) -> None:
        assert self._image is not None
        try:
            self._image.seek(index)
        except (EOFError, *PILLOW_ERRORS) as exc:
            raise BadDocument(f"corrupt image: cannot read page {index + 1}: {exc}") from exc

    def _load_pdf_page(self, index: int, mode: PageMode, dpi: int, limits: Limits) -> Page:
        text_page = self.text_page(index, mode, dpi)
        if text_page is not None:
            return text_page
        assert self._pdf is not None
        scale = dpi / POINTS_PER_INCH
        image = self._pdf.render(
            index,
            scale,
            lambda width, height: _check_pixels(index, width, height, limits),
            max_image_px=limits.max_page_pixels * IMAGE_PX_PER_PAGE_PX,
        )
        return Page(index=index, width=image.width, height=image.height, image=image)


def _count_tiff_frames(image: Image.Image, max_pages: int) -> tuple[int, bool]:
    """(frames, whether all were counted), walking at most `max_pages` + 1 frame headers. Frame by frame:
    a seek past the last frame leaves Pillow's `n_frames` at the frame asked for."""
    try:
        for index in range(1, max_pages + 1):
            try:
                image.seek(index)
            except EOFError:
                return index, True
        return max_pages + 1, False
    except PILLOW_ERRORS as exc:
        raise BadDocument(f"corrupt image: cannot read page {index + 1}: {exc}") from exc
    finally:
        with contextlib.suppress(*PILLOW_ERRORS, EOFError):  # the first frame was read on opening
            image.seek(0)


def _reason(exc: Exception) -> str:
    """A library error's text without the path an OSError of opening a file carries."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return exc.strerror or type(exc).__name__
    return str(exc)


def pages_problem(count: int, max_pages: int, *, counted_all: bool = True) -> str | None:
    """Why a document of `count` pages (counted to one past the limit when not `counted_all`) is over
    `max_pages`, or None."""
    if count <= max_pages:
        return None
    shown = str(count) if counted_all else f"more than {max_pages}"
    return f"the document has {shown} pages, over the limit of {max_pages}"


def check_page_pixels(index: int, size_px: tuple[int, int], dpi: int, max_page_pixels: int) -> None:
    """`TooLarge` for a page of `size_px` (at `dpi`) over `max_page_pixels`."""
    width, height = size_px
    if width * height > max_page_pixels:
        raise TooLarge(
            f"page {index + 1} is {width}x{height} pixels at {dpi} dpi, over the limit of {max_page_pixels} "
            "pixels per page"
        )


def _check_pixels(index: int, width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_page_pixels:
        raise BadDocument(
            f"page {index + 1} is {width}x{height} pixels, over the limit of {limits.max_page_pixels} "
            "(a decompression bomb, or a page too large to OCR)"
        )
