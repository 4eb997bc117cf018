"""Every pdfium call of the process, under one lock.

pdfium is not thread-safe, not even across documents: pypdfium2's documentation says concurrent calls
can crash the process, and a crash ends every tenant's jobs. Page trees are walked (page counts, the
`/ocr` pre-check's page sizes) by the `pdf-pages` model's process (`ocr.pagetree`), pages are loaded where
the engine runs (its processes, or threads of a model on a `ThreadRunner`): all of them go through `Pdf`,
whose methods hold `LOCK`
while pdfium runs and close what they opened before letting go (a pypdfium2 object left to the garbage
collector is closed by a finalizer on whichever thread collects it, outside any lock). The searchable
PDF (`ocr.searchable`, built in a process of its own), which writes with pdfium, holds the same `LOCK`
and closes what it opens alike. Each process has its own pdfium and its own lock, so a model's
processes still render in parallel.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from inferline import memory
from inferline.errors import BadDocument

LOCK = threading.RLock()  # reentrant: a method may call another while holding it
POINTS_PER_INCH = 72
# A page's text layer is read character by character (~5-50 µs each, holding LOCK): a dense page holds
# ~10,000; a few hundred kB of deflated content stream can hold millions (minutes under the lock).
MAX_LAYER_CHARS = 200_000
FORM_DEPTH = 64  # forms in forms are looked into this deep for their images (pypdfium2's default: 15)

Segment = tuple[float, float, float, float, str]  # left, bottom, right, top (points, origin bottom-left), text


@dataclass(frozen=True)
class TextLayer:
    width_pt: float
    height_pt: float
    text: str
    segments: list[Segment]


class Pdf:
    """An open PDF: `page_count`, `page_size`, `text_layer`, `render`; `close` when done.

    pdfium parses a page whole as it loads it, and nothing bounds what that takes: forms that draw
    forms twice over, 40 deep, are 2**40 objects from a few kB of file. So a page is loaded only within
    `page_budget_bytes` of memory (`memory.budget`, effective in a model's own process, where pages are
    read: `ocr.pages`); past it pdfium leaves out an image (a soft mask too large) or aborts the process
    (while parsing), and the job's page fails with the process's end, never the API process."""

    def __init__(self, path: Path, *, page_budget_bytes: int | None = None) -> None:
        import pypdfium2 as pdfium

        self.page_budget_bytes = page_budget_bytes
        with LOCK:
            try:
                self._doc: Any = pdfium.PdfDocument(str(path))
            except pdfium.PdfiumError as exc:
                message = str(exc)
                if "password" in message.lower():
                    raise BadDocument("the PDF is encrypted (password protected); send it decrypted") from exc
                raise BadDocument(f"corrupt or truncated PDF: {message}") from exc
            self.page_count = len(self._doc)

    def close(self) -> None:
        with LOCK:
            if self._doc is not None:
                self._doc.close()
                self._doc = None

    def page_size(self, index: int) -> tuple[float, float]:
        """Width and height in points, read without loading the page."""
        with self._errors(index):
            width_pt, height_pt = self._doc.get_page_size(index)
        return float(width_pt), float(height_pt)

    def text_layer(self, index: int) -> TextLayer:
        """The page's text and its runs with their boxes."""
        with self._page(index) as page:
            width_pt, height_pt = page.get_size()
            textpage = page.get_textpage()
            try:
                if (chars := textpage.count_chars()) > MAX_LAYER_CHARS:
                    raise BadDocument(
                        f"page {index + 1}'s text layer holds {chars} characters, over {MAX_LAYER_CHARS} "
                        "(no page holds that much text)"
                    )
                text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n")
                segments = _segments(textpage) if text.strip() else []
            finally:
                textpage.close()
        return TextLayer(float(width_pt), float(height_pt), text.strip(), segments)

    def render(
        self, index: int, scale: float, check_px: Callable[[int, int], None], *, max_image_px: int | None = None
    ) -> Image.Image:
        """The page in grayscale at `scale` pixels per point; `check_px(width, height)` runs first and may
        refuse the size, and so may an image the page draws of over `max_image_px` pixels: pdfium decodes
        each image whole whatever the page's size (a 40000x40000 one on a 1-inch page: 1.6 GB, 6.9 s)."""
        with self._page(index) as page:
            width_pt, height_pt = page.get_size()
            check_px(round(width_pt * scale), round(height_pt * scale))
            if max_image_px is not None:
                _check_images(page, index, max_image_px)
            bitmap = page.render(scale=scale, grayscale=True)
            try:
                # A bitmap pypdfium2 allocates: the image keeps its buffer; closing frees pdfium's shell only.
                return bitmap.to_pil()  # type: ignore[no-any-return]
            finally:
                bitmap.close()

    @contextmanager
    def _page(self, index: int) -> Iterator[Any]:
        """A pdfium page, under the lock, closed after use."""
        with self._errors(index), memory.budget(self.page_budget_bytes):
            page = self._doc[index]
            try:
                yield page
            finally:
                page.close()

    @contextmanager
    def _errors(self, index: int) -> Iterator[None]:
        """The lock held; pdfium's errors become BadDocument naming the page."""
        import pypdfium2 as pdfium

        with LOCK:
            try:
                yield
            except pdfium.PdfiumError as exc:
                raise BadDocument(f"corrupt PDF: cannot read page {index + 1}: {exc}") from exc


def _check_images(page: Any, index: int, max_image_px: int) -> None:
    """BadDocument when the images the page draws (inside forms too, to FORM_DEPTH) and those of its
    annotations' appearances add up to over `max_image_px` pixels, read from their dictionaries: nothing
    is decoded. Not seen: soft masks (pdfium has no call that reads their size), bounded by the page's
    memory budget instead (`Pdf`)."""
    import pypdfium2.raw as pdfium_c

    total_px = 0
    for width, height in _image_sizes(page, pdfium_c):
        total_px += width * height
        if total_px > max_image_px:
            raise BadDocument(
                f"page {index + 1} draws images of over {max_image_px} pixels (one is {width}x{height}): a "
                "decompression bomb, or a scan too large to OCR"
            )


def _image_sizes(page: Any, pdfium_c: Any) -> Iterator[tuple[int, int]]:
    """(width, height) in pixels of each image the page draws, then of each one its annotations'
    normal appearances draw (what pdfium renders of them), forms looked into to FORM_DEPTH."""
    for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=FORM_DEPTH):
        yield image.get_px_size()
    for annot_index in range(pdfium_c.FPDFPage_GetAnnotCount(page.raw)):
        annot = pdfium_c.FPDFPage_GetAnnot(page.raw, annot_index)
        if not annot:
            continue
        try:
            for object_index in range(pdfium_c.FPDFAnnot_GetObjectCount(annot)):
                yield from _raw_image_sizes(pdfium_c.FPDFAnnot_GetObject(annot, object_index), pdfium_c, 0)
        finally:
            pdfium_c.FPDFPage_CloseAnnot(annot)


def _raw_image_sizes(obj: Any, pdfium_c: Any, depth: int) -> Iterator[tuple[int, int]]:
    if not obj:
        return
    kind = pdfium_c.FPDFPageObj_GetType(obj)
    if kind == pdfium_c.FPDF_PAGEOBJ_IMAGE:
        width, height = ctypes.c_uint(), ctypes.c_uint()
        if pdfium_c.FPDFImageObj_GetImagePixelSize(obj, ctypes.byref(width), ctypes.byref(height)):
            yield width.value, height.value
    elif kind == pdfium_c.FPDF_PAGEOBJ_FORM and depth < FORM_DEPTH:
        for index in range(pdfium_c.FPDFFormObj_CountObjects(obj)):
            yield from _raw_image_sizes(pdfium_c.FPDFFormObj_GetObject(obj, index), pdfium_c, depth + 1)


def _segments(textpage: Any) -> list[Segment]:
    """The page's text runs with their boxes: pdfium's text rectangles (a run of characters of one text
    object, generated ones left out), each with its characters' text. One pass over the characters:
    asking pdfium for the text inside each rectangle scans every character of the page per rectangle
    (6,000 runs: 4-7 s, holding the pdfium lock)."""
    import pypdfium2.raw as pdfium_c

    segments = []
    for start, count in _runs(textpage, pdfium_c):
        boxes = [textpage.get_rect(i) for i in range(textpage.count_rects(start, count))]  # one, as a rule
        text = textpage.get_text_range(start, count).replace("\ufffe", "\x02").strip()  # \x02: a soft hyphen
        if boxes and text:
            left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
            segments.append((left, bottom, max(b[2] for b in boxes), max(b[3] for b in boxes), text))
    return segments


def _runs(textpage: Any, pdfium_c: Any) -> list[tuple[int, int]]:
    """(first character, count) of each run, as pdfium cuts its text rectangles: a run ends where the
    text object changes; generated characters and ones without a box join no run."""
    runs: list[tuple[int, int]] = []
    start = last = -1
    current: int | None = None
    for i in range(textpage.count_chars()):
        if pdfium_c.FPDFText_IsGenerated(textpage, i) == 1:
            continue
        left, bottom, right, top = textpage.get_charbox(i)
        if right - left < 0.01 or top - bottom < 0.01:
            continue
        obj = ctypes.cast(pdfium_c.FPDFText_GetTextObject(textpage, i), ctypes.c_void_p).value
        if obj != current:
            if current is not None:
                runs.append((start, last - start + 1))
            current, start = obj, i
        last = i
    if current is not None:
        runs.append((start, last - start + 1))
    return runs


def merge_lines(segments: list[Segment], scale: float, height_pt: float) -> list[dict[str, Any]]:
    """pdfium gives text runs; runs that share most of their height are one line, read left to right.
    Lines are matched by their first run. Runs come top first, so a line whose first run's bottom is at
    or above the current run's top can never take a run again: only lines still straddling the current
    height are compared. Those cannot nest (one inside another shares all of the smaller's height), and
    two that share a point but at most half of either's height cannot be joined by a third: at most two
    are open at once, so the merge is O(n log n) (the sort), where comparing with every line was
    O(n^2) (6,000 runs on a page took 26 s)."""
    lines: list[list[Segment]] = []
    open_lines: list[list[Segment]] = []  # in creation order, as the first match must be
    for seg in sorted((_upright(s) for s in segments), key=lambda s: (-s[3], s[0])):
        open_lines = [line for line in open_lines if line[0][1] < seg[3]]
        for line in open_lines:
            _, bottom, _, top, _ = line[0]
            overlap = min(top, seg[3]) - max(bottom, seg[1])
            if overlap > 0.5 * min(top - bottom, seg[3] - seg[1]):
                line.append(seg)
                break
        else:
            lines.append([seg])
            open_lines.append(lines[-1])
    return [_line(line, scale, height_pt) for line in lines]


def _upright(seg: Segment) -> Segment:
    """A box with its bottom below its top, whatever order the file gave them in."""
    left, bottom, right, top, text = seg
    return (left, min(bottom, top), right, max(bottom, top), text)


def _line(line: list[Segment], scale: float, height_pt: float) -> dict[str, Any]:
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
    return {"text": " ".join(s[4] for s in line), "confidence": 1.0, "bbox": bbox}
