"""The `ocr` job kind: a stored file in, the OCR result JSON out (see `results.py`), page by page.

Pages are loaded one at a time (pdfium is not thread-safe) and recognized concurrently: the engine runs
in one process per core, so a window of pages in flight keeps every process busy. Each finished page is
checkpointed, so a job that lost its worker resumes after its last finished page. The stage reads
"page 3/40" (pages finished / pages asked for).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.errors import InvalidInput, NonRetryable, NotFound
from inferline.files.blobs import BlobStore
from inferline.files.service import blob_path, get_file
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.ocr.documents import Document, Limits, Page, PageMode, PageRef, parse_pages
from inferline.ocr.rapid import RapidOcrModel
from inferline.ocr.results import document_text
from inferline.ocr.tesseract import OcrInput

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


class OcrJobInput(OcrOptions):
    file_id: str = Field(min_length=1, max_length=36)


@dataclass(frozen=True)
class OcrConfig:
    engine: AsyncEngine
    blobs: BlobStore
    models: ModelRuntime
    limits: Limits
    default_dpi: int


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


def window_of(models: ModelRuntime, model: str) -> int:
    """Pages in flight: two per engine process, so a process never waits for the next page to load."""
    return 2 * max(1, models.processes_of(model))


async def run_ocr(config: OcrConfig, ctx: JobContext, data: OcrJobInput) -> dict[str, Any]:
    try:
        return await _run_ocr(config, ctx, data)
    except InvalidInput as exc:  # a bad option found only now (a page range past the end, a language)
        raise NonRetryable(str(exc)) from exc


async def _run_ocr(config: OcrConfig, ctx: JobContext, data: OcrJobInput) -> dict[str, Any]:
    done: dict[int, dict[str, Any]] = {
        int(key): page for key, page in ((ctx.last_checkpoint or {}).get("pages") or {}).items()
    }

    async def report(finished: int, total: int) -> None:
        await ctx.stage(f"page {finished}/{total}")
        await ctx.checkpoint({"pages": {str(i): done[i] for i in sorted(done)}}, progress=100 * finished / total)

    await ctx.stage("open")
    pages, model, dpi = await read_document(config, ctx, data, done, report)
    return {"pages": pages, "text": document_text(pages), "engine": model, "dpi": dpi}


Report = Callable[[int, int], Awaitable[None]]


async def read_document(
    config: OcrConfig, ctx: JobContext, data: OcrJobInput, done: dict[int, dict[str, Any]], report: Report
) -> tuple[list[dict[str, Any]], str, int]:
    """The asked pages of a stored file as OCR result pages (text layer or OCR), in order; `done` holds
    pages already read (from a checkpoint) and receives each page as it finishes, after which `report`
    is awaited with (pages finished, pages asked). Also used by document ingest (`search.ingest`)."""
    try:
        info = await get_file(config.engine, tenant=ctx.tenant, file_id=data.file_id)
        path = blob_path(config.blobs, info)
    except NotFound as exc:
        raise NonRetryable(str(exc)) from exc
    model = pick_engine(data.engine, data.lang, config.models.device)
    dpi = data.dpi or config.default_dpi
    document = await ctx.to_thread(Document, path, info.content_type)
    try:
        indexes = parse_pages(data.pages, document.page_count)
        if document.page_count > config.limits.max_pages:
            raise NonRetryable(
                f"the document has {document.page_count} pages, over the limit of {config.limits.max_pages}"
            )
        await _recognize_pages(config, ctx, document, indexes, done, model=model, options=data, dpi=dpi, report=report)
    finally:
        document.close()
    return [done[index] for index in indexes], model, dpi


async def _recognize_pages(
    config: OcrConfig,
    ctx: JobContext,
    document: Document,
    indexes: list[int],
    done: dict[int, dict[str, Any]],
    *,
    model: str,
    options: OcrOptions,
    dpi: int,
    report: Report,
) -> None:
    total = len(indexes)
    todo = [index for index in indexes if index not in done]
    load_lock = threading.Lock()  # one pdfium call at a time, whatever thread runs it
    save_lock = asyncio.Lock()
    window = asyncio.Semaphore(window_of(config.models, model))

    def text_page(index: int) -> Page | None:
        with load_lock:
            return document.text_page(index, options.page_mode, dpi)

    async def one(index: int) -> None:
        async with window:
            ctx.raise_if_canceled()
            page = await ctx.to_thread(text_page, index)
            if page is None:  # rasterized and read in the engine's process
                ref = PageRef(str(document.path), document.content_type, index, dpi, config.limits)
                item = OcrInput(None, options.lang, ref, rotate=options.rotate_pages, deskew=options.deskew)
                output = await ctx.predict(model, item)
                result = {
                    "index": index,
                    "width": output["width"],
                    "height": output["height"],
                    "source": "ocr",
                    "text": output["text"],
                    "lines": output["lines"],
                    "rotation_deg": output.get("rotation_deg", 0),
                    "deskew_deg": output.get("deskew_deg", 0.0),
                }
            else:
                result = {
                    "index": index,
                    "width": page.width,
                    "height": page.height,
                    "source": "text-layer",
                    "text": page.text or "",
                    "lines": page.lines,
                }
            async with save_lock:
                done[index] = result
                await report(sum(1 for i in indexes if i in done), total)

    try:
        async with asyncio.TaskGroup() as group:  # one page failing stops the others
            for index in todo:
                group.create_task(one(index))
    except BaseExceptionGroup as failed:  # the first page's error is the job's, with its own type
        raise failed.exceptions[0] from None


def register(registry: KindRegistry, config: OcrConfig) -> None:
    async def ocr(ctx: JobContext, data: OcrJobInput) -> dict[str, Any]:
        return await run_ocr(config, ctx, data)

    registry.kind("ocr", input_model=OcrJobInput)(ocr)
