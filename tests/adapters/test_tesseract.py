"""Real Tesseract (Debian's language data, installed by ./dev) on the shared OCR test pages."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from inferline.errors import InvalidInput
from inferline.inference.batching import Batcher
from inferline.inference.model import ProcessingMode
from inferline.metrics import Metrics
from inferline.ocr.quality import cer
from inferline.ocr.tesseract import OcrInput, TesseractModel, find_tessdata

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ocr"
REQUIRE = os.environ.get("INFERLINE_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="module")
def model() -> TesseractModel:
    try:
        find_tessdata()
    except Exception as exc:
        if REQUIRE:
            pytest.fail(f"Tesseract language data is required: {exc}")
        pytest.skip(str(exc))
    engine = TesseractModel()
    engine.setup("cpu")
    return engine


def page(name: str) -> tuple[Image.Image, str]:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"shared test data missing: {path}")
    with Image.open(path) as image:
        image.load()  # read now, so the file is closed before the test goes on
    return image, path.with_suffix("").with_suffix(".gt.txt").read_text()


@pytest.mark.parametrize(
    ("name", "max_cer"),
    [("en_01_clean.png", 0.01), ("ko_01_clean.png", 0.06), ("mix_01_clean.png", 0.06), ("ko_06_scan.png", 0.10)],
)
def test_pages_are_read_within_the_error_budget(model: TesseractModel, name: str, max_cer: float) -> None:
    image, truth = page(name)
    [result] = model.predict_batch([OcrInput(image)])
    assert isinstance(result, dict)
    assert cer(result["text"], truth) <= max_cer


def test_lines_carry_text_confidence_and_a_box_inside_the_page(model: TesseractModel) -> None:
    image, truth = page("en_02_clean.png")
    [result] = model.predict_batch([OcrInput(image, lang="eng")])
    assert isinstance(result, dict)
    assert (result["width"], result["height"]) == image.size
    assert len(result["lines"]) >= 5
    for line in result["lines"]:
        x0, y0, x1, y1 = line["bbox"]
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        assert 0 <= line["confidence"] <= 1 and line["text"]
    assert cer(" ".join(line["text"] for line in result["lines"]), truth) < 0.02


def test_text_rendered_by_the_test_itself_is_read(model: TesseractModel) -> None:
    font_path = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    font = ImageFont.truetype(str(font_path), 48) if font_path.exists() else ImageFont.load_default(48)
    image = Image.new("L", (1400, 200), 255)
    ImageDraw.Draw(image).text((40, 60), "Invoice 2026-11 total 4,310 KRW", fill=0, font=font)
    [result] = model.predict_batch([OcrInput(image, lang="eng")])
    assert isinstance(result, dict)
    assert cer(result["text"], "Invoice 2026-11 total 4,310 KRW") < 0.05


def test_an_unknown_language_is_refused_naming_what_is_installed(model: TesseractModel) -> None:
    image, _ = page("en_01_clean.png")
    [result] = model.predict_batch([OcrInput(image, lang="kor+xxx")])
    assert isinstance(result, InvalidInput) and result.field == "lang"
    assert "xxx" in str(result) and "eng" in str(result) and "kor" in str(result)


async def test_the_engine_runs_behind_the_batcher() -> None:
    image, truth = page("en_03_rot.png")
    batcher = Batcher(TesseractModel(), mode=ProcessingMode.STANDARD, device="cpu", queue_limit=8, metrics=Metrics())
    try:
        result = await asyncio.wait_for(batcher.predict(OcrInput(image, lang="eng")), timeout=60)
    finally:
        await batcher.aclose()
    assert cer(result["text"], truth) < 0.05


def test_cer_is_levenshtein_over_the_reference_after_normalizing() -> None:
    assert cer("abc", "abc") == 0
    assert cer("a  b\nc", "a b c") == 0
    assert cer("abd", "abc") == pytest.approx(1 / 3)
    assert cer("", "abcd") == 1
