"""Orientation (Tesseract OSD) and skew (projection profile) correction on pages the tests render."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from PIL import Image
from tests.ocr_samples import ENGLISH, KOREAN, render_page

from inferline.ocr.orientation import MIN_SKEW_DEG, Orienter, skew_deg
from inferline.ocr.quality import cer
from inferline.ocr.tesseract import OcrInput, TesseractModel, find_tessdata

# OSD needs a page's worth of text: a few lines give it too few characters to decide.
ENGLISH_PAGE = ENGLISH * 5
KOREAN_PAGE = KOREAN * 5


@pytest.fixture(scope="module")
def model() -> Iterator[TesseractModel]:
    try:
        find_tessdata()
    except Exception as exc:
        if os.environ.get("INFERLINE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Tesseract language data is required: {exc}")
        pytest.skip(str(exc))
    engine = TesseractModel()
    engine.setup("cpu")
    yield engine
    engine.close()


def turned(image: Image.Image, angle_deg: float) -> Image.Image:
    """The page turned counter-clockwise, as a scanner would deliver it."""
    return image.rotate(angle_deg, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)


@pytest.mark.parametrize("angle_deg", [-7.0, -3.0, 2.5, 6.0, 12.0])
def test_skew_is_measured_to_a_fraction_of_a_degree(angle_deg: float) -> None:
    page = render_page(ENGLISH_PAGE)
    assert skew_deg(turned(page, angle_deg)) == pytest.approx(-angle_deg, abs=0.3)


def test_level_blank_and_barely_skewed_pages_are_left_alone() -> None:
    page = render_page(KOREAN_PAGE, "korean")
    assert skew_deg(page) == 0.0
    assert skew_deg(turned(page, MIN_SKEW_DEG / 2)) == 0.0  # Tesseract reads these as well as level ones
    assert skew_deg(Image.new("L", (800, 1000), 255)) == 0.0
    assert skew_deg(Image.new("RGB", (800, 1000), (250, 250, 250))) == 0.0


@pytest.mark.parametrize(("lines", "script"), [(ENGLISH_PAGE, "latin"), (KOREAN_PAGE, "korean")])
@pytest.mark.parametrize("quarter_deg", [0, 90, 180, 270])
def test_quarter_turns_are_detected_for_english_and_korean(
    model: TesseractModel, lines: list[str], script: str, quarter_deg: int
) -> None:
    orienter = Orienter(model.tessdata)
    page = turned(render_page(lines, script), quarter_deg)
    assert orienter.rotation_deg(page) == (360 - quarter_deg) % 360
    orienter.close()


def test_a_blank_page_is_not_turned(model: TesseractModel) -> None:
    orienter = Orienter(model.tessdata)
    assert orienter.rotation_deg(Image.new("L", (1200, 1600), 255)) == 0
    orienter.close()


def test_a_turned_and_skewed_korean_page_reads_well_only_when_corrected(model: TesseractModel) -> None:
    page = turned(turned(render_page(KOREAN_PAGE, "korean"), 180), 5.0)
    truth = "\n".join(KOREAN_PAGE)
    [plain, fixed] = model.predict_batch([OcrInput(page), OcrInput(page, rotate=True, deskew=True)])
    assert isinstance(plain, dict) and isinstance(fixed, dict)
    assert cer(plain["text"], truth) > 0.5 and plain["rotation_deg"] == 0 and plain["deskew_deg"] == 0.0
    assert cer(fixed["text"], truth) < 0.05
    assert fixed["rotation_deg"] == 180 and fixed["deskew_deg"] == pytest.approx(-5.0, abs=0.3)
    for line in fixed["lines"]:  # boxes refer to the corrected image, whose size is reported
        x0, y0, x1, y1 = line["bbox"]
        assert 0 <= x0 < x1 <= fixed["width"] and 0 <= y0 < y1 <= fixed["height"]
