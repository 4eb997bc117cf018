"""OCR quality: CER per page set for each layout, against Tesseract's own defaults, in one run.

Two groups of pages:
- the shared test pages (`../shared/data/ocr`: 20 A4 pages, English, Korean and mixed, clean and degraded);
- layout sets rendered by `bench/ocr_pages.py` from text no one here wrote (licenses, Korean gettext
  catalogs, the package database): one column, an introduction over two columns, justified Korean,
  mixed Korean/English columns, ruled and unruled tables, a sidebar.

Modes, each reading the same page images (`kor+eng`, one thread):
- `auto`: inferline's layout step, then each block as one block (the service's default);
- `single_column`: the whole page as one block (PSM 6), with the service's Korean spacing;
- `psm6` and `psm4`: the fixed single-block modes as the service used them before (PSM 6 was its mode),
  Tesseract's text as it comes;
- `tesseract`: Tesseract's own default (PSM 3, its layout analysis), as its command line runs it;
- `sparse` (PSM 11).

Run: `./dev bench ocr_quality [--pages-per-set N] [--modes auto,tesseract,...] [--sets two_column,...]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from inferline.ocr.quality import cer
from inferline.ocr.tesseract import OcrInput, OcrLayout, TesseractModel, find_tessdata
from ocr_pages import SETS, page_sets  # bench/ is the script's folder, on sys.path first

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ocr"
MODES = ("auto", "single_column", "psm6", "psm4", "tesseract", "sparse")


def shared_pages() -> Iterator[tuple[str, str, Image.Image, str]]:
    for path in sorted(SHARED.glob("*.png")):
        with Image.open(path) as image:
            image.load()
        truth = path.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8")
        group = {"en": "shared_en", "ko": "shared_ko", "mix": "shared_mixed"}[path.name.split("_")[0]]
        yield group, path.stem, image, truth


def readers() -> dict[str, Callable[[Image.Image], str]]:
    import tesserocr

    model = TesseractModel()
    model.setup("cpu")
    plain = {
        psm: tesserocr.PyTessBaseAPI(path=find_tessdata(), lang="kor+eng", psm=psm)
        for psm in (tesserocr.PSM.AUTO, tesserocr.PSM.SINGLE_COLUMN, tesserocr.PSM.SINGLE_BLOCK)
    }

    def service(layout: OcrLayout) -> Callable[[Image.Image], str]:
        def read(image: Image.Image) -> str:
            [result] = model.predict_batch([OcrInput(image, "kor+eng", layout=layout)])
            assert isinstance(result, dict), result
            return str(result["text"])

        return read

    def fixed(psm: int) -> Callable[[Image.Image], str]:
        def read(image: Image.Image) -> str:
            api = plain[psm]
            api.SetImage(image)
            return str(api.GetUTF8Text())

        return read

    return {
        "auto": service(OcrLayout.AUTO),
        "single_column": service(OcrLayout.SINGLE_COLUMN),
        "psm6": fixed(tesserocr.PSM.SINGLE_BLOCK),
        "psm4": fixed(tesserocr.PSM.SINGLE_COLUMN),
        "tesseract": fixed(tesserocr.PSM.AUTO),
        "sparse": service(OcrLayout.SPARSE),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages-per-set", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--sets", default=",".join(SETS), help="layout sets; `none` for the shared pages only")
    parser.add_argument("--no-shared", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    modes = [mode for mode in args.modes.split(",") if mode]
    read = readers()
    errors: dict[tuple[str, str], list[float]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    pages: list[tuple[str, str, Image.Image, str]] = [] if args.no_shared else list(shared_pages())
    chosen = tuple(name for name in args.sets.split(",") if name in SETS)
    pages += [(group, page.name, page.image, page.truth) for group, page in page_sets(args.pages_per_set, sets=chosen)]
    started = datetime.now(UTC)
    for group, name, image, truth in pages:
        row = []
        for mode in modes:
            began = time.perf_counter()
            text = read[mode](image)
            seconds[mode].append(time.perf_counter() - began)
            errors[(group, mode)].append(cer(text, truth))
            row.append(f"{mode} {errors[(group, mode)][-1] * 100:.1f}%")
        print(f"{name}: {', '.join(row)}", flush=True)
    groups = list(dict.fromkeys(group for group, *_ in pages))
    print(f"\nOCR quality, {started:%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, kor+eng")
    print("| set (pages) | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for group in groups:
        count = len(errors[(group, modes[0])])
        cells = [f"{statistics.mean(errors[(group, mode)]) * 100:.2f}%" for mode in modes]
        print(f"| {group} ({count}) | " + " | ".join(cells) + " |")
    print("| s/page | " + " | ".join(f"{statistics.mean(seconds[mode]):.2f}" for mode in modes) + " |")


if __name__ == "__main__":
    main()
