"""Text on clips: cleaned, wrapped with the Korean font's real widths, and never part of a filter graph."""

from __future__ import annotations

from pathlib import Path

from PIL import ImageFont

from inferline.media.ffmpeg import escape_filter_value
from inferline.media.text import TextBlock, clean, drawtext_filters, font_path, wrap


def width_px(text: str, size_px: int) -> float:
    return ImageFont.truetype(str(font_path()), size_px).getlength(text)


def test_control_and_format_characters_become_single_spaces() -> None:
    assert clean("  김영희\n\t1941\r\n\u2013\u202e2026\x00 ") == "김영희 1941 \u2013 2026"


def test_long_text_wraps_at_spaces_within_the_width() -> None:
    text = "사랑하는 어머니 김영희 님을 기억하며 함께한 모든 날들에 감사합니다"
    lines = wrap(text, size_px=20, width_px=200, max_lines=5)
    assert len(lines) > 1 and " ".join(lines) == text
    assert all(width_px(line, 20) <= 200 for line in lines)


def test_a_word_wider_than_the_line_is_broken_inside() -> None:
    lines = wrap("가" * 60, size_px=20, width_px=150, max_lines=10)
    assert "".join(lines) == "가" * 60 and all(width_px(line, 20) <= 150 for line in lines)


def test_text_past_the_last_line_ends_in_an_ellipsis() -> None:
    lines = wrap("one two three four five six seven eight nine ten", size_px=20, width_px=90, max_lines=2)
    assert len(lines) == 2 and lines[-1].endswith("…") and width_px(lines[-1], 20) <= 90


def test_the_text_goes_to_files_and_the_graph_holds_only_their_escaped_paths(tmp_path: Path) -> None:
    block = TextBlock(["%{pts} 'a': [b], c;", "둘째 줄"], 18, boxed=True)
    filters = drawtext_filters(block, top_px=100, folder=tmp_path, name="clip.caption")
    assert len(filters) == 2
    for number, drawtext in enumerate(filters):
        assert "expansion=none" in drawtext and "%{pts}" not in drawtext and "둘째" not in drawtext
        assert (tmp_path / f"clip.caption.{number}.txt").read_text() == block.lines[number]
    assert "y=100:" in filters[0] and f"y={100 + round(18 * 1.35)}:" in filters[1]


def test_filter_values_escape_option_and_graph_syntax() -> None:
    assert escape_filter_value("/a/b.txt") == "/a/b.txt"
    assert escape_filter_value("/it's:[x],y;") == "/it\\\\\\'s\\\\:\\[x\\]\\,y\\;"
