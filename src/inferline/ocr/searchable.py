"""The searchable PDF of an OCR result: the original pages with an invisible text layer on the words.

- A PDF's pages keep their content as it was: pdfium appends the text in a content stream of its own
  (`FPDFPage_GenerateContent` leaves the page's existing streams alone when none of their objects
  changed). When the job read every page, in order, the file itself is extended (bookmarks and links
  stay); otherwise the read pages are imported into a new document, so pages not asked for are not in
  the file at all.
- An image's frames become pages (`ocr.image_pdf`: a JPEG's bytes as they are, other frames lossless).
- Pages taken from a PDF's own text layer (`source: "text-layer"`) get no second one.

The text is drawn in render mode 3 (invisible) with a font made for the document (`text_font`): one glyph
per character used, all alike (a box, never drawn) and of one advance, which pdfium embeds as a CID font
with a ToUnicode map built from the font's own character map, so the text extracts back as recognized
(Korean included). Each word (each line, where the result has no word boxes) is stretched to its box,
the font's ascent to descent spanning the box's height.

Boxes are pixels of the page as OCR saw it: turned by `rotation_deg` and levelled by `deskew_deg` when
those were asked for. Each is mapped back through the inverse turns to the page as rasterized, then to
the page's own coordinates (`FPDF_DeviceToPage`, which accounts for its /Rotate and crop box).

Blocking, on a worker thread: every pdfium call holds the process's pdfium lock (`ocr.pdf.LOCK`), taken
page by page so other jobs' pdfium calls interleave; one page is loaded at a time.
"""

from __future__ import annotations

import ctypes
import io
import math
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from inferline.files import sniff
from inferline.ocr.image_pdf import POINTS_PER_INCH, write_image_pdf
from inferline.ocr.pdf import LOCK

UNITS_PER_EM = 1000
ADVANCE = 500  # every glyph's advance: words are stretched to their boxes anyway
ASCENT, DESCENT = 800, -200  # a word's box spans the font's ascent to descent
FONT_NAME = "InferlineOcrText"
DEFAULT_DPI = 300
Box = tuple[float, float, float, float]  # x0, y0, x1, y1


class Affine(NamedTuple):
    """PDF's matrix: x' = a·x + c·y + e, y' = b·x + d·y + f."""

    a: float
    b: float
    c: float
    d: float
    e: float
    f: float

    def then(self, other: Affine) -> Affine:
        """This map, followed by `other`."""
        return Affine(
            other.a * self.a + other.c * self.b,
            other.b * self.a + other.d * self.b,
            other.a * self.c + other.c * self.d,
            other.b * self.c + other.d * self.d,
            other.a * self.e + other.c * self.f + other.e,
            other.b * self.e + other.d * self.f + other.f,
        )

    def apply(self, x: float, y: float) -> tuple[float, float]:
        return self.a * x + self.c * y + self.e, self.b * x + self.d * y + self.f


def _shift(dx: float, dy: float) -> Affine:
    return Affine(1, 0, 0, 1, dx, dy)


def _unturn(angle_deg: float) -> Affine:
    """Undoes a counter-clockwise turn by `angle_deg` (as the eye sees it, y pointing down)."""
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    return Affine(cos, sin, -sin, cos, 0, 0)


def uncorrect(page: dict[str, Any], original_px: tuple[float, float]) -> Affine:
    """Pixels of the page as OCR read it → pixels of the page as rasterized (`original_px` wide and high).
    The engine turned it by `rotation_deg`, then by `deskew_deg`, each time about its centre onto a
    canvas grown to fit (Pillow's `rotate(expand=True)`); undone in the other order."""
    rotation = int(page.get("rotation_deg") or 0) % 360
    skew = float(page.get("deskew_deg") or 0.0)
    width0, height0 = original_px
    width1, height1 = (height0, width0) if rotation in (90, 270) else (width0, height0)
    width2, height2 = float(page["width"]), float(page["height"])
    undo_skew = _shift(-width2 / 2, -height2 / 2).then(_unturn(skew)).then(_shift(width1 / 2, height1 / 2))
    undo_rotation = _shift(-width1 / 2, -height1 / 2).then(_unturn(rotation)).then(_shift(width0 / 2, height0 / 2))
    return undo_skew.then(undo_rotation)


@dataclass(frozen=True)
class Run:
    """Text to place over a box (pixels as OCR read them): `fit` characters of it span the box's width,
    and what follows them (the space after a word) runs on past it."""

    text: str
    fit: int
    bbox: Box


def _clean(text: str) -> str:
    """Text pdfium can set: no control characters (a tab is a space)."""
    text = text.replace("\t", " ")
    return "".join(ch for ch in text if unicodedata.category(ch) not in {"Cc", "Cs"})


def runs(page: dict[str, Any]) -> Iterator[Run]:
    """The page's words, each followed by a space but the last of its line; a line without word boxes is
    one run over the line's box. Words are spaced as in the page's text: Tesseract's lines and words
    split Korean words into syllables ("회 의 는") that its page text joins ("회의는"), so words that
    the text joins become one run over their boxes together."""
    reference = _Reference(str(page.get("text") or ""))
    lines = page.get("lines") or [line for block in page.get("blocks") or [] for line in block.get("lines") or []]
    for line in lines:
        words = [
            (text, _box(word["bbox"]))
            for word in line.get("words") or []
            if (text := _clean(str(word["text"])).strip())
        ]
        groups: list[tuple[str, Box]] = []
        if words:
            for text, box in words:
                if groups and reference.joined(text):
                    joined_text, joined_box = groups[-1]
                    groups[-1] = (joined_text + text, _union(joined_box, box))
                else:
                    reference.joined(text)  # moves past it
                    groups.append((text, box))
        elif tokens := _clean(str(line.get("text", ""))).split():
            text = tokens[0]
            reference.joined(tokens[0])
            for token in tokens[1:]:
                text += token if reference.joined(token) else " " + token
            groups.append((text, _box(line["bbox"])))
        for i, (text, (x0, y0, x1, y1)) in enumerate(groups):
            if x1 > x0 and y1 > y0:
                yield Run(text if i == len(groups) - 1 else text + " ", len(text), (x0, y0, x1, y1))


class _Reference:
    """The page's text, read token by token: is the next token joined to the one before it?"""

    def __init__(self, text: str) -> None:
        self.text = text
        self.cursor = 0

    def joined(self, token: str) -> bool:
        """Whether `token` follows the token read before it with no space between them; reads past it. A
        token not where the text goes on is looked for further on, then anywhere (a layout that orders
        lines otherwise); one not in the text at all is spaced."""
        text, start = self.text, self.cursor
        at = start
        while at < len(text) and text[at].isspace():
            at += 1
        if text.startswith(token, at):
            self.cursor = at + len(token)
            return at == start and start > 0
        found = text.find(token, start)
        if found < 0:
            found = text.find(token)
        if found < 0:
            return False
        self.cursor = found + len(token)
        return found > 0 and not text[found - 1].isspace()


def _box(bbox: Any) -> Box:
    x0, y0, x1, y1 = (float(v) for v in bbox)
    return x0, y0, x1, y1


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def needs_text(page: dict[str, Any]) -> bool:
    return page.get("source") != "text-layer"


def text_font(chars: set[str]) -> bytes:
    """A TrueType font with one glyph per character of `chars`: a box ASCENT high, DESCENT deep and ADVANCE
    wide, never drawn (render mode 3), which gives each character its extent in pdfium's text boxes (an
    empty glyph gives boxes of no height: a viewer's selection would not show). The box is compiled
    once and shared: compiling 1,500 glyphs one by one took 0.4 s."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib.tables._g_l_y_f import Glyph

    ordered = sorted(chars)
    names = [".notdef", *(f"g{i}" for i in range(1, len(ordered) + 1))]
    pen = TTGlyphPen(None)
    pen.moveTo((0, DESCENT))
    pen.lineTo((0, ASCENT))
    pen.lineTo((ADVANCE, ASCENT))
    pen.lineTo((ADVANCE, DESCENT))
    pen.closePath()
    box = pen.glyph()
    box.recalcBounds(None)
    builder = FontBuilder(UNITS_PER_EM, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({ord(ch): name for ch, name in zip(ordered, names[1:], strict=True)})
    builder.setupGlyf(dict.fromkeys(names, box), calcGlyphBounds=False)
    compiled = box.compile(None)
    builder.font["glyf"].glyphs = {name: Glyph(compiled) for name in names}
    builder.setupHorizontalMetrics({name: (ADVANCE, 0) for name in names})
    builder.setupHorizontalHeader(ascent=ASCENT, descent=DESCENT)
    builder.setupNameTable({"familyName": FONT_NAME, "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=ASCENT, sTypoDescender=DESCENT, usWinAscent=ASCENT, usWinDescent=-DESCENT)
    builder.setupPost()
    # Bounds and maximums set by hand: recalculating them would expand every glyph again.
    head, maxp = builder.font["head"], builder.font["maxp"]
    head.xMin, head.yMin, head.xMax, head.yMax = 0, DESCENT, ADVANCE, ASCENT
    maxp.maxPoints, maxp.maxContours = 4, 1
    builder.font.recalcBBoxes = False
    out = io.BytesIO()
    builder.save(out)
    return out.getvalue()


def write_searchable_pdf(
    source: Path, content_type: str, result: dict[str, Any], out: BinaryIO, *, tmp_dir: Path | None = None
) -> None:
    """Write the searchable PDF of `result`, an OCR result of the file `source`, to `out`."""
    pages: list[dict[str, Any]] = list(result.get("pages") or [])
    dpi = int(result.get("dpi") or DEFAULT_DPI)
    chars = {ch for page in pages if needs_text(page) for run in runs(page) for ch in run.text}
    font = text_font(chars) if chars else None
    if content_type == sniff.PDF:
        _TextLayer(source, [int(page["index"]) for page in pages], font).write(pages, dpi, out)
        return
    with tempfile.TemporaryFile(dir=tmp_dir) as base:
        written = write_image_pdf(source, [int(page["index"]) for page in pages], base, dpi)
        base.seek(0)
        originals = [(float(p.width_px), float(p.height_px)) for p in written]
        _TextLayer(base, list(range(len(pages))), font, originals_px=originals).write(pages, dpi, out)


class _TextLayer:
    """A PDF (a path or an open file) with the text layer added to the pages `indexes`, in that order."""

    def __init__(
        self,
        source: Path | BinaryIO,
        indexes: list[int],
        font: bytes | None,
        *,
        originals_px: list[tuple[float, float]] | None = None,
    ) -> None:
        self.source = source
        self.indexes = indexes
        self.font_data = font
        self.originals_px = originals_px

    def write(self, pages: list[dict[str, Any]], dpi: int, out: BinaryIO) -> None:
        import pypdfium2 as pdfium
        import pypdfium2.raw as pdfium_c

        with LOCK:
            doc = pdfium.PdfDocument(str(self.source) if isinstance(self.source, Path) else self.source)
            font = None
            try:
                if self.indexes != list(range(len(doc))):
                    subset = pdfium.PdfDocument.new()
                    try:
                        subset.import_pages(doc, self.indexes)
                    except BaseException:
                        subset.close()  # here, under the lock: its finalizer would close it without
                        raise
                    doc.close()
                    doc = subset
                if self.font_data is not None:
                    data = (ctypes.c_uint8 * len(self.font_data)).from_buffer_copy(self.font_data)
                    font = pdfium_c.FPDFText_LoadFont(doc, data, len(self.font_data), pdfium_c.FPDF_FONT_TRUETYPE, True)
                    if not font:
                        raise RuntimeError("pdfium refused the text layer's font")
            except BaseException:
                doc.close()
                raise
        try:
            for position, page in enumerate(pages):
                if font is not None and needs_text(page):
                    with LOCK:
                        self._add_text(doc, font, position, page, dpi)
            with LOCK:
                doc.save(out)
        finally:
            with LOCK:
                if font is not None:
                    pdfium_c.FPDFFont_Close(font)
                doc.close()

    def _add_text(self, doc: Any, font: Any, position: int, page: dict[str, Any], dpi: int) -> None:
        import pypdfium2.raw as pdfium_c

        pdf_page = doc[position]
        try:
            original_px = self._original_px(pdf_page, position, page, dpi)
            to_page = uncorrect(page, original_px).then(_to_page(pdf_page, original_px))
            points_per_px = math.sqrt(abs(to_page.a * to_page.d - to_page.b * to_page.c))
            added = 0
            for run in runs(page):
                x0, y0, x1, y1 = run.bbox
                height_px = y1 - y0
                size_pt = max(height_px * points_per_px, 0.01)
                em_px = height_px / size_pt  # pixels per text-space unit, up the box
                stretch = (x1 - x0) / (run.fit * ADVANCE / UNITS_PER_EM * size_pt)
                baseline_px = y1 + DESCENT / UNITS_PER_EM * height_px
                matrix = Affine(stretch, 0, 0, -em_px, x0, baseline_px).then(to_page)
                obj = pdfium_c.FPDFPageObj_CreateTextObj(doc, font, ctypes.c_float(size_pt))
                text = ctypes.create_string_buffer((run.text + "\0").encode("utf-16-le"))
                if not pdfium_c.FPDFText_SetText(obj, ctypes.cast(text, pdfium_c.FPDF_WIDESTRING)):
                    pdfium_c.FPDFPageObj_Destroy(obj)
                    continue
                pdfium_c.FPDFTextObj_SetTextRenderMode(obj, pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE)
                pdfium_c.FPDFPageObj_Transform(obj, *matrix)
                pdfium_c.FPDFPage_InsertObject(pdf_page, obj)
                added += 1
            if added and not pdfium_c.FPDFPage_GenerateContent(pdf_page):
                raise RuntimeError(f"pdfium could not write the text layer of page {position + 1}")
        finally:
            pdf_page.close()

    def _original_px(self, pdf_page: Any, position: int, page: dict[str, Any], dpi: int) -> tuple[float, float]:
        """The page's size in pixels as the OCR job rasterized it, before any correction."""
        rotation = int(page.get("rotation_deg") or 0) % 360
        if not page.get("deskew_deg"):  # the result's own size, turned back: exactly what was read
            width, height = float(page["width"]), float(page["height"])
            return (height, width) if rotation in (90, 270) else (width, height)
        if self.originals_px is not None:
            return self.originals_px[position]
        width_pt, height_pt = pdf_page.get_size()  # as pypdfium2 renders it: ceil(points · scale)
        scale = dpi / POINTS_PER_INCH
        return float(math.ceil(width_pt * scale)), float(math.ceil(height_pt * scale))


def _to_page(pdf_page: Any, size_px: tuple[float, float]) -> Affine:
    """Pixels of the page rendered `size_px` large (origin top-left) → the page's own coordinates."""
    import pypdfium2.raw as pdfium_c

    width, height = size_px
    size_x, size_y = max(1, round(width)), max(1, round(height))

    def point(x: int, y: int) -> tuple[float, float]:
        page_x, page_y = ctypes.c_double(), ctypes.c_double()
        pdfium_c.FPDF_DeviceToPage(pdf_page, 0, 0, size_x, size_y, 0, x, y, ctypes.byref(page_x), ctypes.byref(page_y))
        return page_x.value, page_y.value

    (ox, oy), (rx, ry), (dx, dy) = point(0, 0), point(size_x, 0), point(0, size_y)
    return Affine((rx - ox) / size_x, (ry - oy) / size_x, (dx - ox) / size_y, (dy - oy) / size_y, ox, oy)
