"""The text layer's runs merged into lines: the same lines as comparing every run with every line, in
O(n log n)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from inferline.ocr.pdf import Segment, merge_lines

pytestmark = pytest.mark.unit


def every_line_merge(segments: list[Segment], scale: float, height_pt: float) -> list[dict[str, Any]]:
    """The reference: each run compared with every line so far (O(n^2))."""
    lines: list[list[Segment]] = []
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
        left, bottom = min(s[0] for s in line), min(s[1] for s in line)
        right, top = max(s[2] for s in line), max(s[3] for s in line)
        bbox = [
            round(left * scale),
            round((height_pt - top) * scale),
            round(right * scale),
            round((height_pt - bottom) * scale),
        ]
        out.append({"text": " ".join(s[4] for s in line), "confidence": 1.0, "bbox": bbox})
    return out


def page(rng: random.Random) -> list[Segment]:
    """A page as pdfium reports one: one or two columns of lines, runs of a few sizes on each line
    (bold, italics, a footnote mark raised a little), with the jitter real PDFs have."""
    segments: list[Segment] = []
    columns = rng.choice([[(40.0, 300.0)], [(40.0, 280.0), (310.0, 560.0)]])
    for left_edge, right_edge in columns:
        y = 800.0
        while y > 60:
            size = rng.choice([9.0, 10.0, 12.0, 18.0])
            x = left_edge
            while x < right_edge:
                width = rng.uniform(10, 80)
                run_size = size * rng.choice([1.0, 1.0, 1.0, 0.7])
                raise_pt = rng.choice([0.0, 0.0, 0.0, size * 0.3]) + rng.uniform(-0.3, 0.3)
                bottom = y - size + raise_pt
                segments.append((x, bottom, x + width, bottom + run_size, f"w{len(segments)}"))
                x += width + rng.uniform(2, 6)
            y -= size * rng.uniform(1.15, 1.6)
    rng.shuffle(segments)
    return segments


def test_lines_are_those_of_comparing_every_run_with_every_line() -> None:
    rng = random.Random(15)
    for _ in range(200):
        segments = page(rng)
        assert merge_lines(segments, 300 / 72, 842.0) == every_line_merge(segments, 300 / 72, 842.0)


def test_thousands_of_runs_on_one_page_merge_in_a_fraction_of_a_second() -> None:
    # 6,000 runs each on a line of its own: the every-line merge made 18 million comparisons (26 s).
    segments = [(10.0, 800.0 - i * 0.13, 20.0, 800.0 - i * 0.13 + 0.1, f"r{i}") for i in range(6000)]
    segments.append((50.0, 400.0, 60.0, 400.0, "flat"))  # no height: a line of its own
    started = time.perf_counter()
    lines = merge_lines(segments, 1.0, 842.0)
    assert time.perf_counter() - started < 2.0  # a guard: ~0.05 s here
    assert len(lines) == 6001 and lines[0]["text"] == "r0"
    assert merge_lines(segments[:300], 1.0, 842.0) == every_line_merge(segments[:300], 1.0, 842.0)
