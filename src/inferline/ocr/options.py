"""What a caller may ask of OCR: the options of a job (and of ingest's page reading), and the engine
they choose."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from inferline.errors import InvalidInput
from inferline.ocr.documents import PageMode
from inferline.ocr.rapid import RapidOcrModel
from inferline.ocr.tesseract import OcrLayout

ENGINES = ("auto", "tesseract", "rapidocr")


class OcrOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: str = Field(default="auto", pattern="^(auto|tesseract|rapidocr)$")
    lang: str = Field(default="kor+eng", min_length=1, max_length=100, pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")
    pages: str | None = Field(default=None, max_length=1000, description='1-based, e.g. "1-3,5"; default all')
    page_mode: PageMode = PageMode.AUTO
    dpi: int | None = Field(default=None, ge=36, le=1200, description="PDF rasterization; default from settings")
    rotate_pages: bool = Field(default=False, description="turn pages upright first (OCR'd pages; ~0.35 s each)")
    deskew: bool = Field(default=False, description="level skewed pages first (OCR'd pages; ~0.03 s each)")
    layout: OcrLayout = Field(
        default=OcrLayout.AUTO,
        description="auto: find columns, blocks and reading order first; single_column: read the page as one "
        "block; sparse: as much text as can be found, in no particular order (Tesseract)",
    )


def pick_engine(engine: str, lang: str, device: str) -> str:
    """`auto`: Tesseract, the only engine that reads Korean; RapidOCR for non-Korean pages on a GPU."""
    if engine != "auto":
        if engine == "rapidocr":
            RapidOcrModel.check_lang(lang)
        return engine
    if device == "cuda" and "kor" not in lang.split("+"):
        try:
            RapidOcrModel.check_lang(lang)
        except InvalidInput:
            return "tesseract"
        return "rapidocr"
    return "tesseract"
