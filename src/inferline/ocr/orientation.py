"""Page orientation and skew, corrected before recognition (options `rotate_pages` and `deskew`, named
after OCRmyPDF's and, like there, off by default: they cost time on every page).

- Orientation (0/90/180/270°) comes from Tesseract's orientation and script detection (`osd.traineddata`,
  shipped with Debian's `tesseract-ocr`). Measured on the shared test pages turned by each quarter: right
  every time for English, Korean and mixed pages, ~0.35 s per A4 page at 300 dpi. At half resolution it
  missed Korean pages, so it runs on the full page.
- Skew: Tesseract's own deskew angle (`AnalyseLayout().Orientation()`) read 0 for pages turned 6-10° and
  -9° for a page turned +10°, so skew is measured here instead, by the projection-profile method: the angle
  at which the rows of dark pixels give the sharpest horizontal profile. Text lines are straight, so their
  profile peaks when they are level. Korean pages turned 6° read at ~10% CER uncorrected (2% level).

Both run in the engine's process, on the page it has just rasterized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from inferline.errors import NonRetryable

# OSD's confidence that the best orientation beats the others. Upright pages read 5-16; turned ones
# 5-18 for the right answer. Below this the page stays as it is: a wrong turn costs far more than none.
ROTATE_MIN_CONFIDENCE = 2.0
MAX_SKEW_DEG = 15.0  # beyond this a page is turned, not skewed (and line profiles alias)
SKEW_WORK_WIDTH_PX = 1000  # profiles are computed on a copy this wide: fast, and still < 0.1° precise
MIN_INK_PIXELS = 200  # fewer dark pixels than this: a blank page, nothing to measure
# Tesseract reads pages within ~1° of level as well as level ones, and turning them anyway resamples the
# glyphs a second time: a Korean page at -0.8° went from 1.7% to 4.4% CER when "corrected".
MIN_SKEW_DEG = 1.0


@dataclass(frozen=True)
class Correction:
    """What was done to a page image before recognition; boxes refer to the corrected image."""

    rotation_deg: int = 0  # turned counter-clockwise by this much to stand upright
    deskew_deg: float = 0.0  # then turned counter-clockwise by this much to level its lines


class Orienter:
    """Holds one Tesseract OSD engine per process (loading it costs ~50 ms)."""

    def __init__(self, tessdata: str) -> None:
        self.tessdata = tessdata
        self._api: Any = None

    def _osd(self) -> Any:
        import tesserocr

        if self._api is None:
            try:
                self._api = tesserocr.PyTessBaseAPI(path=self.tessdata, lang="osd", psm=tesserocr.PSM.OSD_ONLY)
            except RuntimeError as exc:
                raise NonRetryable(
                    f"rotate_pages needs Tesseract's osd.traineddata in {self.tessdata} "
                    "(Debian package tesseract-ocr-osd)"
                ) from exc
        return self._api

    def rotation_deg(self, image: Image.Image) -> int:
        """Counter-clockwise degrees that make the page upright (0 when unsure or when there is no text)."""
        api = self._osd()
        api.SetImage(image)
        try:
            found = api.DetectOrientationScript()
        except RuntimeError:  # "too few characters": a blank or picture page
            return 0
        if not found or found["orient_conf"] < ROTATE_MIN_CONFIDENCE:
            return 0
        return int(found["orient_deg"]) % 360

    def correct(self, image: Image.Image, *, rotate: bool, deskew: bool) -> tuple[Image.Image, Correction]:
        rotation = self.rotation_deg(image) if rotate else 0
        if rotation:
            image = image.rotate(rotation, expand=True)
        skew = skew_deg(image) if deskew else 0.0
        if skew:
            fill = 255 if image.mode in ("L", "1") else (255,) * len(image.getbands())
            image = image.rotate(skew, expand=True, resample=Image.Resampling.BICUBIC, fillcolor=fill)
        return image, Correction(rotation, skew)

    def close(self) -> None:
        if self._api is not None:
            self._api.End()
            self._api = None


def skew_deg(image: Image.Image, max_deg: float = MAX_SKEW_DEG) -> float:
    """Counter-clockwise degrees that level the page's text lines; 0.0 when level or nothing to measure."""
    gray = ImageOps.grayscale(image)
    if gray.width > SKEW_WORK_WIDTH_PX:
        gray = gray.resize(
            (SKEW_WORK_WIDTH_PX, max(1, round(gray.height * SKEW_WORK_WIDTH_PX / gray.width))),
            Image.Resampling.BOX,
        )
    pixels = np.asarray(gray, dtype=np.uint8)
    threshold = min(128, int(pixels.mean()) - 30)  # ink is well below the page's average brightness
    ys, xs = np.nonzero(pixels < threshold)
    if ys.size < MIN_INK_PIXELS:
        return 0.0
    xs_f = xs.astype(np.float64) - pixels.shape[1] / 2
    ys_f = ys.astype(np.float64)

    def sharpness(angle_deg: float) -> float:
        # Row of each ink pixel once the page is turned counter-clockwise by angle_deg (y grows down).
        theta = np.radians(angle_deg)
        rows = np.round(ys_f * np.cos(theta) - xs_f * np.sin(theta)).astype(np.int64)
        counts = np.bincount(rows - rows.min())
        return float(np.sum(counts.astype(np.float64) ** 2))

    best = max(np.arange(-max_deg, max_deg + 1e-9, 0.5), key=sharpness)
    best = max(np.arange(best - 0.5, best + 0.5 + 1e-9, 0.1), key=sharpness)
    angle = round(float(best), 1)
    return 0.0 if abs(angle) < MIN_SKEW_DEG else angle
