"""What the OCR workload needs, built once by `bootstrap.py` and kept on `Services.ocr`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.files.blobs import BlobStore
from inferline.inference.runtime import ModelRuntime
from inferline.ocr.documents import Limits


@dataclass(frozen=True)
class OcrDeps:
    engine: AsyncEngine
    blobs: BlobStore
    models: ModelRuntime
    limits: Limits
    default_dpi: int
