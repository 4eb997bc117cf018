"""Page sets for the OCR layout benchmark, rendered here from text no one on the project wrote.

Text: English from the licenses Debian installs (`/usr/share/common-licenses`), Korean from the Korean
gettext catalogs (`/usr/share/locale/ko/LC_MESSAGES/*.mo`: translators' sentences), table cells from
the package database (`dpkg-query`). Fonts: DejaVu (English) and Nanum (Korean), both Debian packages
`./dev` installs. US Letter at 300 dpi, half the pages lightly degraded (blur and noise, as a scan).

Each page comes with its ground truth in reading order: a column is read to its end before the next, a
table row by row, a sidebar after the main text beside it.
"""

from __future__ import annotations

import gettext
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DPI = 300
PAGE_PX = (2550, 3300)  # US Letter
MARGIN_PX = 225
FONTS = {
    "en": ["/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"],
    "ko": ["/usr/share/fonts/truetype/nanum/NanumMyeongjo.ttf", "/usr/share/fonts/truetype/nanum/NanumGothic.ttf"],
}
BOLD = {
    "en": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "ko": "/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf",
}
LICENSES = ("GPL-3", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "LGPL-2.1", "Artistic")
SETS = ("one_column", "two_column", "korean", "mixed", "table", "sidebar")


@dataclass(frozen=True)
class Page:
    name: str
    image: Image.Image
    truth: str


@cache
def english_paragraphs() -> list[str]:
    paragraphs = []
    for name in LICENSES:
        path = Path("/usr/share/common-licenses", name)
        if not path.exists():
            continue
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
            text = " ".join(block.split())
            if (
                200 <= len(text) <= 900
                and text.isascii()
                and max(map(len, text.split())) <= 24
                and sum(c.isupper() for c in text) < len(text) / 5
            ):
                paragraphs.append(text)
    return paragraphs


@cache
def korean_sentences() -> list[str]:
    """Translators' Korean messages: mostly Hangul, no markup, one line each."""
    found = set()
    for path in sorted(Path("/usr/share/locale/ko/LC_MESSAGES").glob("*.mo")):
        try:
            with path.open("rb") as handle:
                catalog = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
        except (OSError, UnicodeDecodeError):
            continue
        for value in catalog.values():
            if not isinstance(value, str):
                continue
            text = " ".join(value.split())
            hangul = sum("\uac00" <= c <= "\ud7a3" for c in text)
            if 25 <= len(text) <= 200 and hangul > len(text) * 0.5 and not re.search(r"[<>{}\\%$&|_=]", text):
                found.add(text)
    return sorted(found)


def korean_paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(rng.sample(korean_sentences(), sentences))


@cache
def packages() -> list[tuple[str, str, str, str]]:
    out = subprocess.run(
        ["/usr/bin/dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Installed-Size}\t${Section}\n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and all(parts) and len(parts[1]) < 24:
            rows.append((parts[0], parts[1], parts[2], parts[3]))
    return rows


class Canvas:
    def __init__(self) -> None:
        self.image = Image.new("L", PAGE_PX, 255)
        self.draw = ImageDraw.Draw(self.image)

    def wrap(self, text: str, font: ImageFont.FreeTypeFont, width_px: int) -> list[str]:
        lines: list[str] = []
        line = ""
        for word in text.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width_px or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
        if line:
            lines.append(line)
        return lines

    def text_line(self, x: int, y: int, line: str, font: ImageFont.FreeTypeFont, width_px: int, justify: bool) -> None:
        words = line.split()
        if not justify or len(words) < 2:
            self.draw.text((x, y), line, font=font, fill=0)
            return
        spare = width_px - sum(font.getlength(word) for word in words)
        gap = spare / (len(words) - 1)
        cursor = float(x)
        for word in words:
            self.draw.text((round(cursor), y), word, font=font, fill=0)
            cursor += font.getlength(word) + gap


def _font(path: str, pt: float) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, round(pt * DPI / 72))


def flow(
    canvas: Canvas,
    paragraphs: list[str],
    font: ImageFont.FreeTypeFont,
    columns: list[tuple[int, int]],
    top_px: int,
    bottom_px: int,
    *,
    justify: bool,
) -> list[str]:
    """Paragraphs poured into columns (x, width) from top to bottom; the text that fit, per column."""
    line_px = round(font.size * 1.45)
    written: list[list[str]] = [[] for _ in columns]
    column, y = 0, top_px
    for paragraph in paragraphs:
        words = paragraph.split()
        while words:
            if y + line_px > bottom_px:
                column += 1
                if column == len(columns):
                    return [" ".join(lines) for lines in written]
                y = top_px
            x, width = columns[column]
            count = 1
            while count < len(words) and font.getlength(" ".join(words[: count + 1])) <= width:
                count += 1
            line, words = " ".join(words[:count]), words[count:]
            canvas.text_line(x, y, line, font, width, justify and bool(words))
            written[column].append(line)
            y += line_px
        y += line_px // 2
    return [" ".join(lines) for lines in written]


def heading(canvas: Canvas, text: str, lang: str, y: int, pt: float = 16) -> tuple[str, int]:
    font = _font(BOLD[lang], pt)
    canvas.draw.text((MARGIN_PX, y), text, font=font, fill=0)
    return text, y + round(font.size * 2.0)


def _title(rng: random.Random, lang: str) -> str:
    if lang == "ko":
        return rng.choice(korean_sentences())[:30].rsplit(" ", 1)[0]
    words = rng.choice(english_paragraphs()).split()[:6]
    return " ".join(words)


def _one_column(
    rng: random.Random, lang: str, body: Callable[[], list[str]], justified_share: float
) -> tuple[Image.Image, str]:
    """A title over one column of `body()` (drawn after the font, in the order the sets' seeds expect)."""
    canvas = Canvas()
    title, y = heading(canvas, _title(rng, lang), lang, MARGIN_PX)
    font = _font(rng.choice(FONTS[lang]), rng.choice([10, 11, 12]))
    paragraphs = body()
    column = [(MARGIN_PX, PAGE_PX[0] - 2 * MARGIN_PX)]
    justify = rng.random() < justified_share
    [text] = flow(canvas, paragraphs, font, column, y, PAGE_PX[1] - MARGIN_PX, justify=justify)
    return canvas.image, f"{title}\n{text}"


def one_column(rng: random.Random) -> tuple[Image.Image, str]:
    return _one_column(rng, "en", lambda: rng.sample(english_paragraphs(), 8), 0.5)


def _two_columns(rng: random.Random, lang: str, body: list[str], font_paths: list[str]) -> tuple[Image.Image, str]:
    """A title, a one-column introduction, then two columns (the brochure layout)."""
    canvas = Canvas()
    title, y = heading(canvas, _title(rng, lang), lang, MARGIN_PX)
    intro_font = _font(rng.choice(font_paths), 12)
    width = PAGE_PX[0] - 2 * MARGIN_PX
    intro_lines = canvas.wrap(body[0], intro_font, width)[:5]
    [intro] = flow(canvas, [" ".join(intro_lines)], intro_font, [(MARGIN_PX, width)], y, PAGE_PX[1], justify=False)
    y += (len(intro_lines) + 1) * round(intro_font.size * 1.45)
    gutter = rng.choice([60, 75, 90, 120])
    column = (width - gutter) // 2
    font = _font(rng.choice(font_paths), rng.choice([9, 10, 11]))
    left, right = flow(
        canvas,
        body[1:],
        font,
        [(MARGIN_PX, column), (MARGIN_PX + column + gutter, column)],
        y,
        PAGE_PX[1] - MARGIN_PX,
        justify=rng.random() < 0.6,
    )
    return canvas.image, "\n".join([title, intro, left, right])


def two_column(rng: random.Random) -> tuple[Image.Image, str]:
    return _two_columns(rng, "en", rng.sample(english_paragraphs(), 12), FONTS["en"])


def korean(rng: random.Random) -> tuple[Image.Image, str]:
    """One Korean column, justified like a typeset manual (wide, uneven word gaps)."""
    return _one_column(rng, "ko", lambda: [korean_paragraph(rng, rng.randint(3, 6)) for _ in range(12)], 0.7)


def mixed(rng: random.Random) -> tuple[Image.Image, str]:
    """Korean and English paragraphs in turn, in two columns (Nanum draws both scripts)."""
    english = rng.sample(english_paragraphs(), 8)
    body = [english[i // 2] if i % 2 else korean_paragraph(rng, rng.randint(2, 4)) for i in range(14)]
    return _two_columns(rng, "ko", body, FONTS["ko"])


def table(rng: random.Random) -> tuple[Image.Image, str]:
    """A paragraph, a ruled or unruled table of installed packages, a paragraph."""
    canvas = Canvas()
    title, y = heading(canvas, _title(rng, "en"), "en", MARGIN_PX)
    width = PAGE_PX[0] - 2 * MARGIN_PX
    font = _font(FONTS["en"][1], rng.choice([10, 11]))
    line_px = round(font.size * 1.45)
    intro_lines = canvas.wrap(rng.choice(english_paragraphs()), font, width)[:4]
    [intro] = flow(canvas, [" ".join(intro_lines)], font, [(MARGIN_PX, width)], y, PAGE_PX[1], justify=False)
    y += (len(intro_lines) + 1) * line_px
    header = ("Package", "Version", "Size (KiB)", "Section")
    rows = [header, *rng.sample(packages(), rng.randint(14, 22))]
    widths = [max(font.getlength(row[i]) for row in rows) + 80 for i in range(4)]
    scale = min(1.0, width / sum(widths))
    xs = [MARGIN_PX + round(sum(widths[:i]) * scale) for i in range(4)]
    ruled = rng.random() < 0.5
    row_px = round(line_px * 1.3)
    truth = [title, intro]
    for r, row in enumerate(rows):
        row_font = _font(BOLD["en"], font.size * 72 / DPI) if r == 0 else font
        for x, cell in zip(xs, row, strict=True):
            canvas.draw.text((x + 20, y + 10), cell, font=row_font, fill=0)
        if ruled:
            canvas.draw.line([(MARGIN_PX, y), (MARGIN_PX + width, y)], fill=0, width=3)
        truth.append(" ".join(row))
        y += row_px
    if ruled:
        canvas.draw.line([(MARGIN_PX, y), (MARGIN_PX + width, y)], fill=0, width=3)
        for x in [*xs, MARGIN_PX + width]:
            canvas.draw.line([(x, y - row_px * len(rows)), (x, y)], fill=0, width=3)
    y += line_px
    [outro] = flow(
        canvas,
        rng.sample(english_paragraphs(), 2),
        font,
        [(MARGIN_PX, width)],
        y,
        PAGE_PX[1] - MARGIN_PX,
        justify=False,
    )
    truth.append(outro)
    return canvas.image, "\n".join(truth)


def sidebar(rng: random.Random) -> tuple[Image.Image, str]:
    """Main text with a boxed or shaded sidebar beside it, on the right or the left."""
    canvas = Canvas()
    lang = rng.choice(["en", "ko"])
    title, y = heading(canvas, _title(rng, lang), lang, MARGIN_PX)
    width = PAGE_PX[0] - 2 * MARGIN_PX
    side_px = round(width * rng.uniform(0.26, 0.32))
    gap_px = 110
    main_px = width - side_px - gap_px
    on_left = rng.random() < 0.3
    main_x = MARGIN_PX + (side_px + gap_px if on_left else 0)
    side_x = MARGIN_PX if on_left else MARGIN_PX + main_px + gap_px
    font = _font(rng.choice(FONTS[lang]), 11)
    body = rng.sample(english_paragraphs(), 8) if lang == "en" else [korean_paragraph(rng, 4) for _ in range(10)]
    side_font = _font(FONTS[lang][1], 9)
    side_text = rng.sample(english_paragraphs(), 2) if lang == "en" else [korean_paragraph(rng, 3) for _ in range(2)]
    side_top, side_bottom = y + 200, y + 200 + rng.randint(900, 1400)
    shaded = rng.random() < 0.5
    box = (side_x - 30, side_top - 40, side_x + side_px + 30, side_bottom + 30)
    if shaded:
        canvas.draw.rectangle(box, fill=225)
    else:
        canvas.draw.rectangle(box, outline=0, width=4)
    [side] = flow(canvas, side_text, side_font, [(side_x, side_px)], side_top, side_bottom, justify=False)
    [main] = flow(canvas, body, font, [(main_x, main_px)], y, PAGE_PX[1] - MARGIN_PX, justify=rng.random() < 0.5)
    parts = [title, side, main] if on_left else [title, main, side]
    return canvas.image, "\n".join(parts)


BUILDERS: dict[str, Callable[[random.Random], tuple[Image.Image, str]]] = {
    "one_column": one_column,
    "two_column": two_column,
    "korean": korean,
    "mixed": mixed,
    "table": table,
    "sidebar": sidebar,
}


def degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """A light scan: a little blur and sensor noise."""
    blurred = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.1)))
    pixels = np.asarray(blurred, dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def page_sets(pages_per_set: int = 3, seed: int = 16, sets: tuple[str, ...] = SETS) -> Iterator[tuple[str, Page]]:
    for name in sets:
        rng = random.Random(f"{seed}-{name}")
        for i in range(pages_per_set):
            image, truth = BUILDERS[name](rng)
            if i % 2:
                image = degrade(image, rng)
            image.info["dpi"] = (DPI, DPI)
            yield name, Page(f"{name}_{i + 1}", image, truth)


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ocr-pages")
    out.mkdir(parents=True, exist_ok=True)
    for _, page in page_sets():
        page.image.save(out / f"{page.name}.png", dpi=(DPI, DPI))
        (out / f"{page.name}.gt.txt").write_text(page.truth, encoding="utf-8")
        print(out / f"{page.name}.png")
