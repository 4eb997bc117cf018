"""Page layout before recognition: where the text blocks are, in which order to read them, and ruling
lines taken out of the way.

Tesseract reads a page best with one of two kinds of page segmentation: its single-block modes (4/6)
keep Korean paragraphs whole, where its automatic mode (3) breaks them apart (22% vs 8% CER on a page of
a Korean manual), but a single block joins the lines of side-by-side columns into one line (38% CER on a
two-column brochure). So the layout is found here, by whitespace, and each block is then read with a
single-block mode:

- a recursive X-Y cut (Nagy & Seth, 1984) on a ~75 dpi ink mask: a region splits into columns where a
  vertical gutter crosses all of it, else into bands where a horizontal gap does, and bands split again;
  consecutive bands without columns are read as one block (Tesseract reads a single column best whole),
  and bands whose gutters line up are joined first, so paragraph gaps that happen to meet across two
  columns do not make the page read left-right-left-right;
- a gutter only separates columns of running text: each side has lines of several words. The cells of
  a table are short, and a table is read row by row, as one block;
- long horizontal and vertical ruling lines (table grids, boxes, underlines) are whitened first: a
  ruled table made Tesseract drop most of its rows in every mode.

Everything here is numpy over a downscaled image: a few tens of milliseconds for a US Letter page at
300 dpi, against seconds of recognition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray
from PIL import Image

# The ink mask is analysed at about this width, and this many pixels at most (a US Letter page at 300 dpi:
# 1/4 scale, ~75 dpi); a long strip of a page is scaled by its area.
ANALYSIS_WIDTH_PX = 700
ANALYSIS_MAX_PX = 700 * 910
# Past this many regions looked at, the page is no layout we can order (a mosaic, a hostile image): it
# is read as one block. A text page needs a few dozen.
MAX_REGIONS = 400
MIN_WORDS_PER_LINE = 3  # median words per line on both sides of a gutter; table cells have fewer
MIN_LINES_PER_COLUMN = 2
RULE_MIN_LINES = 3.0  # a ruling line is at least this many text lines long; no letter's stroke is
STRIPS = 8  # text lines are measured in vertical strips: a column, not across columns or a table's grid


def text_line_px(ink: Bool2D) -> float:
    """The typical height of a text line: the median height of runs of inked rows, measured in narrow
    vertical strips, so that the offset lines of two columns, or a table grid's vertical rules, do not
    merge lines into one tall run everywhere."""
    width = ink.shape[1]
    heights: list[int] = []
    for left in range(0, width, max(1, width // STRIPS)):
        strip = ink[:, left : left + max(1, width // STRIPS)]
        heights += [end - start for start, end in _runs(_any(strip, 1)) if end - start >= 2]
    return float(np.median(heights)) if heights else 8.0


Bool2D = NDArray[np.bool_]


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def scaled(self, factor: float, width: int, height: int, pad: int = 0) -> Box:
        return Box(
            max(0, math.floor(self.x0 * factor) - pad),
            max(0, math.floor(self.y0 * factor) - pad),
            min(width, math.ceil(self.x1 * factor) + pad),
            min(height, math.ceil(self.y1 * factor) + pad),
        )

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class Layout:
    """The image to recognize (ruling lines whitened) and its text blocks in reading order, in pixels
    of the image. One block covering the text means a single-column page."""

    image: Image.Image
    blocks: list[Box]
    rules_removed: int = 0


def otsu_threshold(gray: NDArray[np.uint8]) -> int:
    histogram = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = histogram.sum()
    if total == 0:
        return 128
    levels = np.arange(256, dtype=np.float64)
    weight_dark = np.cumsum(histogram)
    mean_dark = np.cumsum(histogram * levels)
    weight_light = total - weight_dark
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_dark[-1] * weight_dark - mean_dark * total) ** 2 / (weight_dark * weight_light)
    between[~np.isfinite(between)] = 0
    return int(np.argmax(between))


def _any(area: Bool2D, axis: int) -> NDArray[np.bool_]:
    found: NDArray[np.bool_] = np.asarray(area.any(axis=axis), dtype=np.bool_)
    return found


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _long_runs(ink: Bool2D, length: int) -> Bool2D:
    """Pixels inside a horizontal run of ink at least `length` long, in one linear pass (the rows are
    laid end to end with a blank pixel between them, so no run crosses a row)."""
    height, width = ink.shape
    padded = np.zeros((height, width + 1), dtype=np.int8)  # int8 throughout: runs never nest
    padded[:, :width] = ink
    steps = np.diff(padded.ravel(), prepend=np.int8(0))
    starts, ends = np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)
    long = (ends - starts) >= length
    marks = np.zeros(padded.size, dtype=np.int8)
    marks[starts[long]] = 1  # every start and every end is a distinct pixel
    marks[ends[long]] = -1
    covered: Bool2D = (np.cumsum(marks, dtype=np.int8) > 0).reshape(height, width + 1)[:, :width]
    return covered


class _TooComplex(Exception):
    pass


class _Analysis:
    def __init__(self, ink: Bool2D) -> None:
        self.ink = ink
        self.regions_left = MAX_REGIONS
        rows = _any(ink, 1)
        self.line_px = text_line_px(ink)  # in analysis pixels; gaps are measured in it
        self.min_gutter_px = max(3, round(1.0 * self.line_px))
        gaps = [b[0] - a[1] for a, b in pairwise(_runs(rows))]
        self.min_band_gap_px = max(2, round(max(0.6 * self.line_px, 1.6 * float(np.median(gaps)) if gaps else 0)))

    def tighten(self, box: Box) -> Box | None:
        area = self.ink[box.y0 : box.y1, box.x0 : box.x1]
        rows, cols = np.flatnonzero(_any(area, 1)), np.flatnonzero(_any(area, 0))
        if rows.size == 0:
            return None
        return Box(box.x0 + int(cols[0]), box.y0 + int(rows[0]), box.x0 + int(cols[-1]) + 1, box.y0 + int(rows[-1]) + 1)

    def _gaps(self, profile: NDArray[np.bool_], min_px: int) -> list[tuple[int, int]]:
        """Internal runs of empty positions at least `min_px` long (the box is tight: ends hold ink)."""
        return [(start, end) for start, end in _runs(~profile) if end - start >= min_px]

    def _line_count(self, box: Box) -> int:
        return len(_runs(_any(self.ink[box.y0 : box.y1, box.x0 : box.x1], 1)))

    def _words_per_line(self, box: Box) -> float:
        """Median words per text line: runs of ink separated by gaps wider than a letter's spacing."""
        area = self.ink[box.y0 : box.y1, box.x0 : box.x1]
        word_gap_px = max(2, round(0.35 * self.line_px))
        counts = []
        for start, end in _runs(_any(area, 1)):
            profile = _any(area[start:end], 0)
            gaps = sum(1 for a, b in _runs(~profile) if b - a >= word_gap_px and a > 0 and b < profile.size)
            counts.append(gaps + 1)
        return float(np.median(counts)) if counts else 0.0

    def columns(self, box: Box) -> list[Box] | None:
        """The box split at gutters into columns of running text, or None."""
        gaps = self._gaps(_any(self.ink[box.y0 : box.y1, box.x0 : box.x1], 0), self.min_gutter_px)
        if not gaps:
            return None
        edges = [box.x0, *(box.x0 + (a + b) // 2 for a, b in gaps), box.x1]
        parts = [self.tighten(Box(left, box.y0, right, box.y1)) for left, right in pairwise(edges)]
        if any(part is None for part in parts):
            return None
        columns = [part for part in parts if part is not None]
        for part in columns:
            if self._line_count(part) < MIN_LINES_PER_COLUMN or self._words_per_line(part) < MIN_WORDS_PER_LINE:
                return None
        return columns

    def bands(self, box: Box) -> list[Box]:
        gaps = self._gaps(_any(self.ink[box.y0 : box.y1, box.x0 : box.x1], 1), self.min_band_gap_px)
        edges = [box.y0, *(box.y0 + (a + b) // 2 for a, b in gaps), box.y1]
        found = [self.tighten(Box(box.x0, top, box.x1, bottom)) for top, bottom in pairwise(edges)]
        return [band for band in found if band is not None]

    def segment(self, box: Box, depth: int = 0) -> list[Box]:
        """Blocks of the box in reading order."""
        self.regions_left -= 1
        if self.regions_left < 0:
            raise _TooComplex
        tight = self.tighten(box)
        if tight is None:
            return []
        if depth > 12:  # each level halves something; a page never needs this many
            return [tight]
        columns = self.columns(tight)
        if columns is not None:
            return [block for column in columns for block in self.segment(column, depth + 1)]
        bands = self.bands(tight)
        if len(bands) <= 1:
            return [tight]
        blocks: list[Box] = []
        run: Box | None = None  # consecutive single-column bands, read as one block
        for band, split in self._sections(bands):
            if split:
                if run is not None:
                    blocks.append(run)
                    run = None
                blocks.extend(self.segment(band, depth + 1))
            else:
                run = band if run is None else Box(min(run.x0, band.x0), run.y0, max(run.x1, band.x1), band.y1)
        if run is not None:
            blocks.append(run)
        return blocks

    def _sections(self, bands: list[Box]) -> list[tuple[Box, bool]]:
        """Bands with whether they have columns; bands whose columns line up are joined (paragraph
        gaps that meet by chance across columns)."""
        sections: list[tuple[Box, bool]] = []
        for band in bands:
            split = self.columns(band) is not None
            if sections and split and sections[-1][1]:
                last = sections[-1][0]
                joined = Box(min(last.x0, band.x0), last.y0, max(last.x1, band.x1), band.y1)
                if self.columns(joined) is not None:
                    sections[-1] = (joined, True)
                    continue
            sections.append((band, split))
        return sections


def _overlaps(a: Box, b: Box) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def join_continued(blocks: list[Box], tolerance_px: int) -> list[Box]:
    """A column that continues below a block beside it (a sidebar, a figure) is one block: the cut
    made it two, and reading order put the sidebar between them. A block joins an earlier one directly
    above it with the same left edge and no wider, when their union overlaps no other block."""
    joined: list[Box] = []
    members: list[set[int]] = []
    for index, block in enumerate(blocks):
        for i, above in enumerate(joined):
            aligned = abs(above.x0 - block.x0) <= tolerance_px and block.x1 <= above.x1 + tolerance_px
            if not aligned or block.y0 < above.y1 or block.width < above.width // 2:
                continue
            union = Box(min(above.x0, block.x0), above.y0, max(above.x1, block.x1), block.y1)
            others = (other for j, other in enumerate(blocks) if j != index and j not in members[i])
            if any(_overlaps(union, other) for other in others):
                continue
            joined[i] = union
            members[i].add(index)
            break
        else:
            joined.append(block)
            members.append({index})
    return joined


def analyze(image: Image.Image) -> Layout:
    """The page's blocks in reading order (pixels of `image`), and the image with its ruling lines
    whitened."""
    gray = image.convert("L")
    width, height = gray.size
    factor = max(1, math.ceil(width / ANALYSIS_WIDTH_PX), math.ceil(math.sqrt(width * height / ANALYSIS_MAX_PX)))
    small = np.asarray(gray.reduce(factor) if factor > 1 else gray, dtype=np.uint8)
    threshold = otsu_threshold(small)
    ink = small <= threshold  # Otsu's dark class holds the threshold's own level (all of a bilevel image's ink)
    gray, removed, ink = _without_rules(gray, threshold, factor, ink, text_line_px(ink) * factor)
    analysis = _Analysis(ink)
    full = Box(0, 0, ink.shape[1], ink.shape[0])
    try:
        blocks = join_continued(analysis.segment(full), tolerance_px=round(2 * analysis.line_px))
    except _TooComplex:
        whole = analysis.tighten(full)
        blocks = [whole] if whole is not None else []
    pad = max(2, round(0.4 * analysis.line_px * factor))
    scaled = [block.scaled(factor, width, height, pad) for block in blocks]
    return Layout(gray if removed else image, scaled, removed)


def _without_rules(
    gray: Image.Image, threshold: int, factor: int, ink_small: Bool2D, line_px: float
) -> tuple[Image.Image, int, Bool2D]:
    """Whitens long horizontal and vertical runs of ink (full resolution), and returns the new image,
    how many rule pixels went, and the analysis mask without them."""
    pixels = np.asarray(gray, dtype=np.uint8)
    ink = pixels <= threshold
    length = max(20, round(RULE_MIN_LINES * line_px))
    rules = _long_runs(ink, length) | _long_runs(np.ascontiguousarray(ink.T), length).T
    count = int(rules.sum())
    if count == 0:
        return gray, 0, ink_small
    # Anti-aliased edges of a rule are lighter than the threshold: grow the mask by a pixel.
    grown = rules.copy()
    grown[1:, :] |= rules[:-1, :]
    grown[:-1, :] |= rules[1:, :]
    grown[:, 1:] |= rules[:, :-1]
    grown[:, :-1] |= rules[:, 1:]
    cleaned = pixels.copy()
    cleaned[grown] = 255
    image = Image.fromarray(cleaned)
    small = np.asarray(image.reduce(factor) if factor > 1 else image, dtype=np.uint8)
    return image, count, small <= threshold
