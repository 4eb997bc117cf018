"""Tesseract 5 through tesserocr's C API (no subprocess per page), the default engine and the only
one for Korean. Page segmentation mode 6 (one uniform block): the default mode 3 broke Korean
paragraphs apart (32-41% CER in the founders' measurement, 4-5% with 4 or 6).

Language data comes from Debian's `tesseract-ocr-kor`/`-eng` (installed by `./dev`), found in
`tessdata_dir`, `$TESSDATA_PREFIX` or Debian's standard folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from inferline.errors import BadDocument, InvalidInput, NonRetryable
from inferline.inference.model import PER_CORE, Model
from inferline.ocr.documents import PageRef
from inferline.ocr.orientation import Correction, Orienter

TESSDATA_CANDIDATES = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
)


@dataclass(frozen=True)
class OcrInput:
    """An image, or a page of a file that the engine rasterizes itself (`PageRef`)."""

    image: Image.Image | None
    lang: str = "kor+eng"
    page: PageRef | None = None
    rotate: bool = False  # turn the page upright first (Tesseract's orientation detection)
    deskew: bool = False  # level its lines first

    def load_image(self) -> Image.Image:
        if self.image is not None:
            return self.image
        if self.page is None:
            raise InvalidInput("an OCR input needs an image or a page", field="image")
        return self.page.load_image()

    def upright_image(self, orienter: Orienter) -> tuple[Image.Image, Correction]:
        """The image as the engine should read it; boxes it finds refer to this image."""
        image = self.load_image()
        if not (self.rotate or self.deskew):
            return image, Correction()
        return orienter.correct(image, rotate=self.rotate, deskew=self.deskew)


def find_tessdata(configured: str | None = None) -> str:
    for candidate in (configured, os.environ.get("TESSDATA_PREFIX"), *TESSDATA_CANDIDATES):
        if candidate and Path(candidate, "eng.traineddata").exists():
            return str(candidate)
    raise NonRetryable(
        "no Tesseract language data found; install it with `sudo apt-get install tesseract-ocr-kor "
        "tesseract-ocr-eng` (./dev does this) or set TESSDATA_PREFIX"
    )


def available_languages(tessdata: str) -> set[str]:
    return {path.stem for path in Path(tessdata).glob("*.traineddata")} - {"osd"}


class TesseractModel(Model[OcrInput, dict[str, Any]]):
    """One page image in, `{width, height, text, lines: [{text, confidence, bbox}]}` out."""

    name: ClassVar[str] = "tesseract"
    max_batch_size: ClassVar[int] = 1  # Tesseract has no batch API; parallel processes scale it instead
    processes: ClassVar[int] = PER_CORE  # +70% from two processes on 2 cores (the OCR issue's measurement)

    def __init__(self, tessdata: str | None = None, psm: int = 6) -> None:
        self.tessdata_setting = tessdata
        self.psm = psm
        self._apis: dict[str, Any] = {}
        self.orienter: Orienter | None = None

    def setup(self, device: str) -> None:
        # One thread per engine: Tesseract's own OpenMP threads would oversubscribe 2 cores.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        self.tessdata = find_tessdata(self.tessdata_setting)
        self.languages = available_languages(self.tessdata)
        self.orienter = Orienter(self.tessdata)

    def check_lang(self, lang: str) -> str:
        wanted = [part for part in lang.split("+") if part]
        unknown = [part for part in wanted if part not in self.languages]
        if not wanted or unknown:
            raise InvalidInput(
                f"OCR language {lang!r}: {', '.join(unknown) or 'empty'} not installed "
                f"(available: {'+'.join(sorted(self.languages))})",
                field="lang",
            )
        return "+".join(wanted)

    def _api(self, lang: str) -> Any:
        import tesserocr

        api = self._apis.get(lang)
        if api is None:
            api = tesserocr.PyTessBaseAPI(path=self.tessdata, lang=lang, psm=self.psm)
            self._apis[lang] = api
        return api

    def predict_batch(self, inputs: list[OcrInput]) -> list[dict[str, Any] | BaseException]:
        outputs: list[dict[str, Any] | BaseException] = []
        for item in inputs:
            try:
                outputs.append(self._recognize(item))
            except (InvalidInput, BadDocument, RuntimeError) as exc:
                outputs.append(exc)
        return outputs

    def _recognize(self, item: OcrInput) -> dict[str, Any]:
        import tesserocr

        api = self._api(self.check_lang(item.lang))
        assert self.orienter is not None, "setup() runs before predict_batch()"
        image, correction = item.upright_image(self.orienter)
        api.SetImage(image)
        api.Recognize()
        level = tesserocr.RIL.TEXTLINE
        lines = []
        for line in tesserocr.iterate_level(api.GetIterator(), level):
            if line.Empty(level):  # a page with no text has one empty line, whose text raises
                continue
            text = (line.GetUTF8Text(level) or "").strip()
            box = line.BoundingBox(level)
            if text and box is not None:
                lines.append({"text": text, "confidence": round(line.Confidence(level) / 100, 4), "bbox": list(box)})
        width, height = image.size
        return {
            "width": width,
            "height": height,
            "text": api.GetUTF8Text().strip(),
            "lines": lines,
            "rotation_deg": correction.rotation_deg,
            "deskew_deg": correction.deskew_deg,
        }

    def close(self) -> None:
        for api in self._apis.values():
            api.End()
        self._apis.clear()
        if self.orienter is not None:
            self.orienter.close()
