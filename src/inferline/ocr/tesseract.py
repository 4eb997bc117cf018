"""Tesseract 5 through tesserocr's C API (no subprocess per page), the default engine and the only
one for Korean.

Layouts (`OcrLayout`): `auto` finds the page's text blocks and reading order first (`layout.py`) and
reads each block with mode 6 (one uniform block), which keeps Korean paragraphs whole where Tesseract's
own mode 3 broke them apart (32-41% CER in the founders' measurement, 4-5% with 4 or 6); mode 6 over a
whole page joins side-by-side columns, so it is `single_column`, for pages known to be one column.
`sparse` is mode 11: as much text as can be found, in no particular order (labels, forms, signs).

Language data comes from Debian's `tesseract-ocr-kor`/`-eng` (installed by `./dev`), found in
`tessdata_dir`, `$TESSDATA_PREFIX` or Debian's standard folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from inferline.errors import BadDocument, InvalidInput, NonRetryable
from inferline.inference.model import PER_CORE, Model
from inferline.ocr.documents import Page, PageRef
from inferline.ocr.layout import Box, analyze
from inferline.ocr.orientation import Correction, Orienter
from inferline.ocr.results import union_bbox

TESSDATA_CANDIDATES = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
)


class OcrLayout(StrEnum):
    AUTO = "auto"
    SINGLE_COLUMN = "single_column"
    SPARSE = "sparse"


PSM_SINGLE_BLOCK = 6
PSM_SPARSE = 11


@dataclass(frozen=True)
class OcrInput:
    """An image, or a page of a file that the engine rasterizes itself (`PageRef`)."""

    image: Image.Image | None
    lang: str = "kor+eng"
    page: PageRef | None = None
    rotate: bool = False  # turn the page upright first (Tesseract's orientation detection)
    deskew: bool = False  # level its lines first
    layout: OcrLayout = OcrLayout.AUTO

    def read(self) -> Page:
        """The page to recognize: the image given, or the file's page (`PageRef.read`), whose `image` is
        None where its text layer was read instead (`text_layer_result` is then the engine's result)."""
        if self.image is not None:
            return Page(index=0, width=self.image.width, height=self.image.height, image=self.image)
        if self.page is None:
            raise InvalidInput("an OCR input needs an image or a page", field="image")
        return self.page.read()

    def upright(self, image: Image.Image, orienter: Orienter) -> tuple[Image.Image, Correction]:
        """The image as the engine should read it; boxes it finds refer to this image."""
        if not (self.rotate or self.deskew):
            return image, Correction()
        return orienter.correct(image, rotate=self.rotate, deskew=self.deskew)


def text_layer_result(page: Page) -> dict[str, Any]:
    """A page read from its text layer, as every engine gives it back (`source`: text-layer)."""
    return {
        "width": page.width,
        "height": page.height,
        "source": "text-layer",
        "text": page.text or "",
        "lines": page.lines,
    }


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
    """One page image in, `{width, height, text, lines, blocks}` out (`results.py` describes them)."""

    name: ClassVar[str] = "tesseract"
    max_batch_size: ClassVar[int] = 1  # Tesseract has no batch API; parallel processes scale it instead
    processes: ClassVar[int] = PER_CORE  # +70% from two processes on 2 cores (the OCR issue's measurement)

    def __init__(self, tessdata: str | None = None) -> None:
        self.tessdata_setting = tessdata
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
            api = tesserocr.PyTessBaseAPI(path=self.tessdata, lang=lang, psm=PSM_SINGLE_BLOCK)
            # Tesseract splits Korean into one "word" per syllable; only with this does its text keep the
            # spaces of the page (사본을 이메일로, not 사 본 을 이 메 일 로).
            api.SetVariable("preserve_interword_spaces", "1")
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
        given = item.read()
        if given.image is None:
            return text_layer_result(given)
        api = self._api(self.check_lang(item.lang))
        assert self.orienter is not None, "setup() runs before predict_batch()"
        image, correction = item.upright(given.image, self.orienter)
        page = _PageText()
        layout = analyze(image) if item.layout is OcrLayout.AUTO else None
        if layout is not None and layout.blocks:
            api.SetPageSegMode(PSM_SINGLE_BLOCK)
            api.SetImage(layout.image)
            for block in layout.blocks:
                # One block is a one-column page: read whole, exactly as `single_column` reads it (Tesseract
                # thresholds a rectangle on its own, which moved CER by ±1 point either way on such pages).
                if len(layout.blocks) > 1:
                    api.SetRectangle(block.x0, block.y0, block.width, block.height)
                api.Recognize()
                page.read(api, within=block)
        else:  # no text found by layout is read whole all the same: Tesseract may see what it did not
            api.SetPageSegMode(PSM_SPARSE if item.layout is OcrLayout.SPARSE else PSM_SINGLE_BLOCK)
            api.SetImage(image)
            api.Recognize()
            page.read(api)
        width, height = image.size
        return {
            "width": width,
            "height": height,
            "text": page.text(),
            "lines": page.lines,
            "blocks": page.blocks,
            "rotation_deg": correction.rotation_deg,
            "deskew_deg": correction.deskew_deg,
        }

    def close(self) -> None:
        for api in self._apis.values():
            api.End()
        self._apis.clear()
        if self.orienter is not None:
            self.orienter.close()


def _bbox(box: tuple[int, int, int, int] | None) -> list[int]:
    return list(box) if box is not None else [0, 0, 0, 0]


class _PageText:
    """Words, lines, paragraphs and blocks of a page as Tesseract's result iterator walks them, read
    once per recognized region: `lines` flat in reading order (each with its `words`), `blocks` with
    their paragraphs naming lines by index."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.blocks: list[dict[str, Any]] = []

    def read(self, api: Any, within: Box | None = None) -> None:
        """One recognized region; its blocks are one block when `within` is the block layout found."""
        from tesserocr import RIL, iterate_level

        line: dict[str, Any] | None = None
        started, first_line = len(self.blocks), len(self.lines)
        for item in iterate_level(api.GetIterator(), RIL.WORD):
            if item.Empty(RIL.WORD):  # a region without text has one empty word, whose text raises
                continue
            # A region layout found is one block, even where Tesseract sees several inside it.
            if len(self.blocks) == started or (within is None and item.IsAtBeginningOf(RIL.BLOCK)):
                box = within.as_list() if within is not None else _bbox(item.BoundingBox(RIL.BLOCK))
                self.blocks.append({"bbox": box, "paragraphs": []})
            paragraphs = self.blocks[-1]["paragraphs"]
            if item.IsAtBeginningOf(RIL.PARA) or not paragraphs:
                paragraphs.append({"bbox": _bbox(item.BoundingBox(RIL.PARA)), "lines": []})
            if item.IsAtBeginningOf(RIL.TEXTLINE) or line is None:
                line = {
                    "text": (item.GetUTF8Text(RIL.TEXTLINE) or "").strip(),
                    "confidence": round(item.Confidence(RIL.TEXTLINE) / 100, 4),
                    "bbox": _bbox(item.BoundingBox(RIL.TEXTLINE)),
                    "words": [],
                }
                paragraphs[-1]["lines"].append(len(self.lines))
                self.lines.append(line)
            text = (item.GetUTF8Text(RIL.WORD) or "").strip()
            if text:
                confidence = round(item.Confidence(RIL.WORD) / 100, 4)
                line["words"].append(
                    {"text": text, "confidence": confidence, "bbox": _bbox(item.BoundingBox(RIL.WORD))}
                )
        self._respace(self.lines[first_line:], api.GetUTF8Text())
        self._drop_empty()

    @staticmethod
    def _respace(lines: list[dict[str, Any]], region_text: str) -> None:
        """Line texts from the region's text, where spaces are the page's (the iterator's line text puts
        one between every two "words", syllables of Korean included), and Korean syllables joined into
        the words they form. Left as they are if the two disagree on the lines."""
        texts = [text.strip() for text in region_text.split("\n") if text.strip()]
        if len(texts) != len([line for line in lines if line["text"]]):
            return
        for line, text in zip((line for line in lines if line["text"]), texts, strict=True):
            words = _join_words(line["words"], text)
            if words is not None:
                line["text"], line["words"] = text, words

    def _drop_empty(self) -> None:
        keep = [i for i, line in enumerate(self.lines) if line["text"]]
        if len(keep) == len(self.lines):
            self._fit_blocks()
            return
        renumber = {old: new for new, old in enumerate(keep)}
        self.lines = [self.lines[i] for i in keep]
        for block in self.blocks:
            for paragraph in block["paragraphs"]:
                paragraph["lines"] = [renumber[i] for i in paragraph["lines"] if i in renumber]
            block["paragraphs"] = [p for p in block["paragraphs"] if p["lines"]]
        self.blocks = [block for block in self.blocks if block["paragraphs"]]
        self._fit_blocks()

    def _fit_blocks(self) -> None:
        """A block's box is its lines' union (a region found by layout has margins)."""
        for block in self.blocks:
            boxes = [self.lines[i]["bbox"] for p in block["paragraphs"] for i in p["lines"]]
            if boxes:
                block["bbox"] = union_bbox(boxes)

    def text(self) -> str:
        """Lines of a paragraph on their own lines; paragraphs and blocks apart by a blank line."""
        return "\n\n".join(
            "\n".join(self.lines[i]["text"] for i in paragraph["lines"])
            for block in self.blocks
            for paragraph in block["paragraphs"]
        )


def _join_words(words: list[dict[str, Any]], text: str) -> list[dict[str, Any]] | None:
    """Words as `text` spaces them: consecutive words with no space between them in `text` are one,
    with their union box and their lowest confidence. None when a word is not where `text` has it."""
    joined: list[dict[str, Any]] = []
    position = 0
    for word in words:
        found = text.find(word["text"], position)
        if found < 0 or text[position:found].strip():
            return None
        if joined and found == position:
            last = joined[-1]
            last["text"] += word["text"]
            last["bbox"] = union_bbox([last["bbox"], word["bbox"]])
            last["confidence"] = min(last["confidence"], word["confidence"])
        else:
            joined.append(dict(word))
        position = found + len(word["text"])
    return joined
