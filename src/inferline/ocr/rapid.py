"""RapidOCR (PP-OCR models in ONNX, shipped inside the `rapidocr` wheel): the second engine, for
Latin and Chinese pages and the GPU path. It has no Korean model in its wheel and drops Hangul
silently, so it refuses `kor`. Only the bundled models are used: any other is downloaded at run time,
which fails offline. The orientation classifier is off: it flipped clean document lines (CER up to 13%
in the founders' measurement).
"""

from __future__ import annotations

from typing import Any, ClassVar

from inferline.errors import BadDocument, InvalidInput
from inferline.inference.model import PER_CORE, Model
from inferline.ocr.orientation import Correction, Orienter
from inferline.ocr.tesseract import OcrInput, find_tessdata, text_layer_result

# What the bundled PP-OCR recognizer reads: Chinese and Latin script (Tesseract names).
LANGUAGES = frozenset({"eng", "chi_sim", "chi_tra"})


class RapidOcrModel(Model[OcrInput, dict[str, Any]]):
    name: ClassVar[str] = "rapidocr"
    max_batch_size: ClassVar[int] = 1  # on 2 CPU cores batching the recognizer was slower than batch 1
    processes: ClassVar[int] = PER_CORE

    def __init__(self) -> None:
        self._engine: Any = None
        self._orienter: Orienter | None = None

    def orienter(self) -> Orienter:
        if self._orienter is None:
            self._orienter = Orienter(find_tessdata())
        return self._orienter

    def setup(self, device: str) -> None:
        import os

        from rapidocr import RapidOCR

        threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
        params: dict[str, Any] = {
            "Global.use_cls": False,
            "Global.log_level": "warning",
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        if device == "cuda":
            params["EngineConfig.onnxruntime.use_cuda"] = True
        self._engine = RapidOCR(params=params)

    @staticmethod
    def check_lang(lang: str) -> None:
        wanted = {part for part in lang.split("+") if part}
        unknown = wanted - LANGUAGES
        if not wanted or unknown:
            raise InvalidInput(
                f"the rapidocr engine cannot read {'+'.join(sorted(unknown)) or 'an empty language'} "
                f"(it reads {'+'.join(sorted(LANGUAGES))}); use engine tesseract for Korean",
                field="lang",
            )

    def predict_batch(self, inputs: list[OcrInput]) -> list[dict[str, Any] | BaseException]:
        outputs: list[dict[str, Any] | BaseException] = []
        for item in inputs:
            try:
                outputs.append(self._recognize(item))
            except (InvalidInput, BadDocument, RuntimeError, ValueError) as exc:
                outputs.append(exc)
        return outputs

    def _recognize(self, item: OcrInput) -> dict[str, Any]:
        import numpy as np

        page = item.read()
        if page.image is None:
            return text_layer_result(page)
        self.check_lang(item.lang)
        # The orienter (Tesseract's data) is only needed, and looked for, when a job asks for it.
        wanted = item.rotate or item.deskew
        image, correction = item.upright(page.image, self.orienter()) if wanted else (page.image, Correction())
        width, height = image.size
        image = image.convert("RGB") if image.mode != "RGB" else image
        output = self._engine(np.asarray(image))
        lines = []
        boxes = output.boxes if output.boxes is not None else []
        texts = output.txts or ()
        scores = output.scores or ()
        for box, text, score in zip(boxes, texts, scores, strict=False):
            xs = [float(point[0]) for point in box]
            ys = [float(point[1]) for point in box]
            if text.strip():
                lines.append(
                    {
                        "text": text.strip(),
                        "confidence": round(float(score), 4),
                        "bbox": [round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))],
                    }
                )
        return {
            "width": width,
            "height": height,
            "text": "\n".join(line["text"] for line in lines),
            "lines": lines,
            "rotation_deg": correction.rotation_deg,
            "deskew_deg": correction.deskew_deg,
        }
