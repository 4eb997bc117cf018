"""Layout before recognition (`ocr/layout.py`): blocks and reading order found by whitespace, ruling
lines whitened; no OCR engine involved."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from tests.ocr_samples import ENGLISH, KOREAN, LEFT_COLUMN, RIGHT_COLUMN, font_path, render_columns, render_page

from inferline.ocr import layout
from inferline.ocr.layout import Box, _long_runs, analyze, join_continued


def _inside(inner: Box, outer: Box) -> bool:
    return outer.x0 <= inner.x0 and outer.y0 <= inner.y0 and inner.x1 <= outer.x1 and inner.y1 <= outer.y1


def test_an_introduction_over_two_columns_is_three_blocks_read_column_by_column() -> None:
    image = render_columns(ENGLISH[:2], LEFT_COLUMN, RIGHT_COLUMN)
    intro, left, right = analyze(image).blocks
    assert intro.y1 <= left.y0 and intro.width > left.width and intro.width > right.width
    assert left.x1 <= right.x0 and abs(left.y0 - right.y0) < 20  # side by side: left first
    assert all(_inside(b, Box(0, 0, *image.size)) for b in (intro, left, right))


def test_one_column_of_justified_text_stays_one_block() -> None:
    """Wide word gaps of justified lines are not gutters: no gap crosses every line."""
    font = ImageFont.truetype(str(font_path("latin")), 30)
    image = Image.new("L", (1300, 700), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(LEFT_COLUMN + RIGHT_COLUMN[:4]):
        words = line.split()
        gap = (1100 - sum(font.getlength(w) for w in words)) / (len(words) - 1)
        x = 80.0
        for word in words:
            draw.text((round(x), 60 + i * 55), word, font=font, fill=0)
            x += font.getlength(word) + gap
    assert len(analyze(image).blocks) == 1


def _table(ruled: bool) -> Image.Image:
    font = ImageFont.truetype(str(font_path("latin")), 30)
    rows = [("Package", "Version", "Size", "Section")] + [
        (f"lib{name}", f"1.{i}.{i * 3}-2", str(40 * i + 7), section)
        for i, (name, section) in enumerate(
            [("ssl3", "libs"), ("xml2", "libs"), ("pq5", "database"), ("z1", "libs")] * 2
        )
    ]
    image = Image.new("L", (1300, 80 + 60 * len(rows) + 80), 255)
    draw = ImageDraw.Draw(image)
    xs = [80, 400, 700, 950]
    for r, row in enumerate(rows):
        for x, cell in zip(xs, row, strict=True):
            draw.text((x + 15, 90 + r * 60), cell, font=font, fill=0)
        if ruled:
            draw.line([(80, 80 + r * 60), (1220, 80 + r * 60)], fill=0, width=3)
    if ruled:
        bottom = 80 + 60 * len(rows)
        draw.line([(80, bottom), (1220, bottom)], fill=0, width=3)
        for x in [*xs, 1220]:
            draw.line([(x, 80), (x, bottom)], fill=0, width=3)
    return image


def test_a_table_is_one_block_read_row_by_row_and_its_rules_are_whitened() -> None:
    plain = analyze(_table(ruled=False))
    assert len(plain.blocks) == 1 and plain.rules_removed == 0  # short cells: not columns of text
    ruled = analyze(_table(ruled=True))
    assert len(ruled.blocks) == 1 and ruled.rules_removed > 0
    pixels = np.asarray(ruled.image)
    assert pixels[80 + 60 * 3, 200:1100].min() > 200  # a row's rule is gone
    assert pixels[:, 400][100:500].min() > 200  # so is a column's
    assert (pixels < 128).sum() > 1000  # the text is not


def test_a_column_continuing_below_a_sidebar_is_read_whole_before_the_sidebar() -> None:
    main_top, sidebar, main_bottom, title = (
        Box(50, 100, 600, 500),
        Box(700, 120, 900, 400),
        Box(50, 530, 600, 900),
        Box(50, 20, 900, 60),
    )
    assert join_continued([title, main_top, sidebar, main_bottom], tolerance_px=10) == [
        title,
        Box(50, 100, 600, 900),
        sidebar,
    ]
    # Two columns under a full-width heading: joining a column across the heading would cover it.
    left, right, heading, left2 = (
        Box(50, 100, 300, 400),
        Box(350, 100, 600, 400),
        Box(50, 420, 600, 450),
        Box(50, 470, 300, 800),
    )
    assert join_continued([left, right, heading, left2], tolerance_px=10) == [left, right, heading, left2]


def test_long_runs_are_found_in_one_pass_per_row() -> None:
    ink = np.array([[1, 1, 1, 0, 1, 1], [0, 1, 1, 1, 1, 0], [1, 1, 0, 1, 1, 1]], dtype=bool)
    assert _long_runs(ink, 3).astype(int).tolist() == [[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]]
    assert not _long_runs(ink, 7).any()


def test_a_blank_page_has_no_blocks() -> None:
    assert analyze(Image.new("L", (800, 600), 255)).blocks == []


def test_the_strokes_of_large_letters_on_a_small_image_are_not_rules() -> None:
    """Rules are measured in text lines, not in page size: a 40 px font on a 550 px high image has
    vertical strokes of 5% of the page."""
    image = render_page(KOREAN + ENGLISH, "korean")
    layout = analyze(image)
    assert layout.rules_removed == 0 and layout.image is image and len(layout.blocks) == 1


def test_a_bilevel_image_has_its_ink_found() -> None:
    """Two grey levels only: Otsu's threshold is the ink's own level, which is ink."""
    gray = render_page(ENGLISH[:2], width=600).point(lambda v: 0 if v < 128 else 255)
    for image in (gray, gray.convert("1")):
        assert len(analyze(image).blocks) == 1


def _mosaic(sections: int) -> Image.Image:
    """Sections of word-like blobs, each under the last, two columns and one in turn: a layout of many
    regions."""
    pixels = np.full((sections * 120, 700), 255, dtype=np.uint8)
    for section in range(sections):
        for line in range(3):
            y = section * 120 + 20 + line * 25
            # Words shorter than three lines' height (not rules); a gutter in every second section.
            xs = [x for x in range(20, 660, 36) if section % 2 or not 300 < x < 400]
            for x in xs:
                pixels[y : y + 12, x : x + 26] = 0
    return Image.fromarray(pixels)


def test_a_page_of_too_many_regions_is_read_as_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(analyze(_mosaic(4)).blocks) == 6  # 2 + 1 + 2 + 1
    monkeypatch.setattr(layout, "MAX_REGIONS", 5)  # a page this size needs more regions than that
    [whole] = analyze(_mosaic(4)).blocks
    assert whole.height > 400 and whole.width > 600
