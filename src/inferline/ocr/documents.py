"""Pages out of the files users send: PNG, JPEG, TIFF (multi-page), WebP, BMP and PDF.

PDF page modes after OCRmyPDF: `auto` uses a page's text layer when it has one and OCRs the others,
`force` OCRs every page, `text-only` never OCRs. Pages are rasterized at `dpi` (300 by default).

Everything here is blocking (pdfium, Pillow): callers run it in a thread. pdfium is not thread-safe,
so one `Document` must be used by one thread at a time (the OCR job serializes its page loads).
Problems with the file itself (corrupt, truncated, encrypted, a decompression bomb) raise
`BadDocument`, which fails the job with a message that names the problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from inferline.errors import BadDocument, InvalidInput, TooLarge, UnsupportedMediaType
from inferline.files import sniff

POINTS_PER_INCH = 72
# Pillow's own bomb check warns, then raises at open, at a fixed size; ours is `ocr_max_page_pixels`,
# checked on every page's header before any pixel is decoded (a 413 at submission, a failed job later).
Image.MAX_IMAGE_PIXELS = None


class PageMode(StrEnum):
    AUTO = "auto"
    FORCE = "force"
    TEXT_ONLY = "text-only"


ACCEPTED_TYPES = frozenset({*sniff.IMAGES, sniff.PDF})


@dataclass(frozen=True)
class Limits:
    max_pages: int
    max_page_pixels: int


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

    def load_image(self) -> Image.Image:
        with Document(Path(self.path), self.content_type) as document:
            page = document.load(self.index, PageMode.FORCE, self.dpi, self.limits)
        assert page.image is not None
        return page.image


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
    """An open document: `page_count`, `size_px(i, dpi)`, `load(i, mode, dpi)`."""

    def __init__(self, path: Path, content_type: str) -> None:
        check_type(content_type)
        self.path = path
        self.content_type = content_type
        self._pdf: Any = None
        self._image: Image.Image | None = None
        if content_type == sniff.PDF:
            self._open_pdf()
        else:
            self._open_image()

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
        import pypdfium2 as pdfium

        try:
            self._pdf = pdfium.PdfDocument(str(self.path))
        except pdfium.PdfiumError as exc:
            message = str(exc)
            if "password" in message.lower():
                raise BadDocument("the PDF is encrypted (password protected); send it decrypted") from exc
            raise BadDocument(f"corrupt or truncated PDF: {message}") from exc
        self.page_count = len(self._pdf)
        if self.page_count == 0:
            raise BadDocument("the PDF has no pages")

    def _open_image(self) -> None:
        try:
            self._image = Image.open(self.path)
        except UnidentifiedImageError as exc:  # its text names the file's path: not for the caller
            raise BadDocument("corrupt or unreadable image: not in a format the image reader knows") from exc
        except (OSError, ValueError) as exc:
            raise BadDocument(f"corrupt or unreadable image: {_reason(exc)}") from exc
        self.page_count = int(getattr(self._image, "n_frames", 1))

    # -- pages -------------------------------------------------------------------------------------

    def size_px(self, index: int, dpi: int) -> tuple[int, int]:
        """The page's size in pixels as it would be rasterized, read without decoding any pixel."""
        if self._pdf is not None:
            width_pt, height_pt = self._pdf.get_page_size(index)
            scale = dpi / POINTS_PER_INCH
            return round(width_pt * scale), round(height_pt * scale)
        assert self._image is not None
        self._seek(index)
        return self._image.size

    def check_limits(self, limits: Limits, dpi: int, pages: list[int]) -> None:
        """413-worthy problems, found from headers alone (cheap enough to run before queueing a job)."""
        if self.page_count > limits.max_pages:
            raise TooLarge(f"the document has {self.page_count} pages, over the limit of {limits.max_pages}")
        for index in pages:
            width, height = self.size_px(index, dpi)
            if width * height > limits.max_page_pixels:
                raise TooLarge(
                    f"page {index + 1} is {width}x{height} pixels at {dpi} dpi, over the limit of "
                    f"{limits.max_page_pixels} pixels per page"
                )

    def text_page(self, index: int, mode: PageMode, dpi: int) -> Page | None:
        """The page from its text layer when `mode` says to use it, else None (it needs OCR). Cheap:
        nothing is rasterized."""
        if self._pdf is None or mode is PageMode.FORCE:
            return None
        with self._pdf_page(index) as page:
            width_pt, height_pt = page.get_size()
            scale = dpi / POINTS_PER_INCH
            text, lines = _text_layer(page, scale, height_pt)
        if not text.strip() and mode is not PageMode.TEXT_ONLY:
            return None
        return Page(index=index, width=round(width_pt * scale), height=round(height_pt * scale), text=text, lines=lines)

    def load(self, index: int, mode: PageMode, dpi: int, limits: Limits) -> Page:
        if self._pdf is not None:
            return self._load_pdf_page(index, mode, dpi, limits)
        return self._load_image_page(index, limits)

    def _load_image_page(self, index: int, limits: Limits) -> Page:
        assert self._image is not None
        self._seek(index)
        width, height = self._image.size
        _check_pixels(index, width, height, limits)
        try:
            frame = self._image.copy()  # decodes the pixels: truncation shows here
            frame = ImageOps.exif_transpose(frame) or frame
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise BadDocument(f"corrupt or truncated image (page {index + 1}): {exc}") from exc
        if frame.mode not in {"L", "RGB"}:
            frame = frame.convert("RGB")
        return Page(index=index, width=frame.width, height=frame.height, image=frame)

    def _seek(self, index: int) -> None:
        assert self._image is not None
        try:
            self._image.seek(index)
        except (EOFError, OSError, ValueError) as exc:
            raise BadDocument(f"corrupt image: cannot read page {index + 1}: {exc}") from exc

    def _load_pdf_page(self, index: int, mode: PageMode, dpi: int, limits: Limits) -> Page:
        text_page = self.text_page(index, mode, dpi)
        if text_page is not None:
            return text_page
        scale = dpi / POINTS_PER_INCH
        with self._pdf_page(index) as page:
            width_pt, height_pt = page.get_size()
            _check_pixels(index, round(width_pt * scale), round(height_pt * scale), limits)
            image = page.render(scale=scale, grayscale=True).to_pil()
        return Page(index=index, width=image.width, height=image.height, image=image)

    @contextmanager
    def _pdf_page(self, index: int) -> Iterator[Any]:
        """A pdfium page, closed after use; pdfium's errors become BadDocument naming the page."""
        import pypdfium2 as pdfium

        try:
            page = self._pdf[index]
            try:
                yield page
            finally:
                page.close()
        except pdfium.PdfiumError as exc:
            raise BadDocument(f"corrupt PDF: cannot read page {index + 1}: {exc}") from exc


def _reason(exc: Exception) -> str:
    """A library error's text without the path an OSError of opening a file carries."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return exc.strerror or type(exc).__name__
    return str(exc)


def _check_pixels(index: int, width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_page_pixels:
        raise BadDocument(
            f"page {index + 1} is {width}x{height} pixels, over the limit of {limits.max_page_pixels} "
            "(a decompression bomb, or a page too large to OCR)"
        )


def _text_layer(page: Any, scale: float, height_pt: float) -> tuple[str, list[dict[str, Any]]]:
    """The page's text, and its lines with boxes in pixels at the rendering scale (origin top-left)."""
    textpage = page.get_textpage()
    try:
        text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n")
        if not text.strip():
            return "", []
        segments = []
        for i in range(textpage.count_rects()):
            left, bottom, right, top = textpage.get_rect(i)
            segment = textpage.get_text_bounded(left, bottom, right, top).strip()
            if segment:
                segments.append((left, bottom, right, top, segment))
    finally:
        textpage.close()
    return text.strip(), _merge_lines(segments, scale, height_pt)


def _merge_lines(
    segments: list[tuple[float, float, float, float, str]], scale: float, height_pt: float
) -> list[dict[str, Any]]:
    """pdfium gives text runs; runs that share most of their height are one line, read left to right."""
    lines: list[list[tuple[float, float, float, float, str]]] = []
    for seg in sorted(segments, key=lambda s: (-s[3], s[0])):
        for line in lines:
            _, bottom, _, top, _ = line[0]
            overlap = min(top, seg[3]) - max(bottom, seg[1])
            if overlap > 0.5 * min(top - bottom, seg[3] - seg[1]):
                line.append(seg)
                break
        else:
            lines.append([seg])
    out = []
    for line in lines:
        line.sort(key=lambda s: s[0])
        left = min(s[0] for s in line)
        bottom = min(s[1] for s in line)
        right = max(s[2] for s in line)
        top = max(s[3] for s in line)
        bbox = [
            round(left * scale),
            round((height_pt - top) * scale),
            round(right * scale),
            round((height_pt - bottom) * scale),
        ]
        out.append({"text": " ".join(s[4] for s in line), "confidence": 1.0, "bbox": bbox})
    return out
