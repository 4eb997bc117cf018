"""Tesseract (kor+eng, PSM 6) on the shared OCR test pages: CER per page and per language, seconds per page.

Run: `./dev bench ocr_quality`. The throughput benchmark of issue 3 (a 40-page PDF through the API against
a page-by-page loop) comes with the OCR job kind.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from inferline.ocr.quality import cer
from inferline.ocr.tesseract import OcrInput, TesseractModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ocr"


def main() -> None:
    model = TesseractModel()
    model.setup("cpu")
    rows = []
    for path in sorted(DATA.glob("*.png")):
        with Image.open(path) as image:
            image.load()
        started = time.perf_counter()
        [result] = model.predict_batch([OcrInput(image)])
        assert isinstance(result, dict), result
        truth = path.with_suffix("").with_suffix(".gt.txt").read_text()
        rows.append((path.name, cer(result["text"], truth), time.perf_counter() - started))
    print(f"OCR quality, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores")
    print("| page | CER | s |\n|---|---|---|")
    for name, error, seconds in rows:
        print(f"| {name} | {error * 100:.2f}% | {seconds:.2f} |")
    for lang in ("en", "ko", "mix"):
        errors = [error for name, error, _ in rows if name.startswith(lang + "_")]
        print(f"| **{lang} mean** | {statistics.mean(errors) * 100:.2f}% | |")
    print(f"| **mean s/page** | | {statistics.mean(seconds for *_, seconds in rows):.2f} |")


if __name__ == "__main__":
    main()
