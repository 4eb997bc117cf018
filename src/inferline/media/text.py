"""Text on a clip (captions, the closing card's title): cleaned, wrapped to the frame with the font's real
widths, written to files in the work directory and drawn with `drawtext=textfile=...`.

A tenant's text never enters a filter graph: ffmpeg reads it from a file, with `expansion=none` so a `%{...}`
in it is shown, not evaluated. Only paths we made (escaped) and numbers are in the graph.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from inferline.errors import NonRetryable
from inferline.media.ffmpeg import escape_filter_value

FONT_FOLDER = Path("/usr/share/fonts/truetype/nanum")
REGULAR = "NanumGothic.ttf"  # Hangul and Latin in one face
BOLD = "NanumGothicBold.ttf"
LINE_SPACING = 1.35  # line height over font size
ELLIPSIS = "…"


@dataclass(frozen=True)
class TextBlock:
    """Lines of one size and face, centered across the frame."""

    lines: list[str]
    size_px: int
    bold: bool = False
    boxed: bool = False  # on a translucent box (over a photo) rather than a shadow

    @property
    def height_px(self) -> int:
        return round(len(self.lines) * self.size_px * LINE_SPACING)


def font_path(bold: bool = False) -> Path:
    """The Korean font (Debian's `fonts-nanum`), or an error saying how to install it."""
    wanted = FONT_FOLDER / (BOLD if bold else REGULAR)
    if wanted.is_file():
        return wanted
    if bold and (FONT_FOLDER / REGULAR).is_file():
        return FONT_FOLDER / REGULAR
    raise NonRetryable("the Korean font is missing; install it with `sudo apt-get install fonts-nanum` (./dev does)")


def clean(text: str) -> str:
    """One line of printable text: control and format characters (newlines, bidi overrides) become spaces."""
    kept = [" " if unicodedata.category(char).startswith("C") else char for char in text]
    return " ".join("".join(kept).split())


def wrap(text: str, *, size_px: int, width_px: int, max_lines: int, bold: bool = False) -> list[str]:
    """`text` cleaned and broken into at most `max_lines` lines no wider than `width_px` at `size_px`;
    at spaces where it can, inside a word where one is too wide; cut with an ellipsis past the last line."""
    font = _font(font_path(bold), size_px)
    lines: list[str] = []
    current = ""
    for word in clean(text).split(" "):
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width_px:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while font.getlength(current) > width_px and len(current) > 1:
            cut = _fitting_prefix(font, current, width_px)
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], _with_ellipsis(font, lines[max_lines - 1], width_px)]
    return lines


@lru_cache(maxsize=32)
def _font(path: Path, size_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size_px)


def _fitting_prefix(font: ImageFont.FreeTypeFont, word: str, width_px: int) -> int:
    cut = len(word) - 1
    while cut > 1 and font.getlength(word[:cut]) > width_px:
        cut -= 1
    return cut


def _with_ellipsis(font: ImageFont.FreeTypeFont, line: str, width_px: int) -> str:
    while line and font.getlength(line + ELLIPSIS) > width_px:
        line = line[:-1]
    return line.rstrip() + ELLIPSIS


def drawtext_filters(block: TextBlock, *, top_px: int, folder: Path, name: str) -> list[str]:
    """One `drawtext` per line of `block` (each line centered on its own), the first line's top at `top_px`.
    Each line is written to `<folder>/<name>.<n>.txt`; `name` is the caller's, never a tenant's."""
    font = escape_filter_value(str(font_path(block.bold)))
    look = _boxed_look(block.size_px) if block.boxed else _shadowed_look(block.size_px)
    filters = []
    for number, line in enumerate(block.lines):
        text_file = folder / f"{name}.{number}.txt"
        text_file.write_text(line, encoding="utf-8")
        top = top_px + round(number * block.size_px * LINE_SPACING)
        filters.append(
            f"drawtext=fontfile={font}:textfile={escape_filter_value(str(text_file))}:expansion=none"
            f":fontsize={block.size_px}:fontcolor=white:x=(w-text_w)/2:y={top}:{look}"
        )
    return filters


def _boxed_look(size_px: int) -> str:
    return f"box=1:boxcolor=black@0.45:boxborderw={max(2, size_px // 4)}"


def _shadowed_look(size_px: int) -> str:
    offset = max(1, size_px // 20)
    return f"shadowcolor=black@0.6:shadowx={offset}:shadowy={offset}"
