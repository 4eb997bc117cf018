"""The page reader both OCR and document ingest use: the asked pages of a stored file as OCR result
pages (the text layer where a PDF page has one, OCR elsewhere), in order.

Each page is read where the engine runs, in one process per core (its text layer, or its pixels then
OCR), a window of pages in flight so every process stays busy. There a PDF page is loaded within
`ocr_page_memory_mb` and `ocr_page_timeout_s` (`ocr.pdf`, `inference.runners`); a PDF's pages are
counted by the `pdf-pages` model's process (`ocr.pagetree`): this process never opens a PDF.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from inferline.errors import BadDocument, ModelError, ModelProcessDied, ModelTimedOut, NonRetryable, NotFound
from inferline.files import sniff
from inferline.files.service import blob_path, get_file
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.context import JobContext
from inferline.ocr.deps import OcrDeps
from inferline.ocr.documents import Document, PageRef, parse_pages
from inferline.ocr.options import OcrOptions, pick_engine
from inferline.ocr.pagetree import MODEL_NAME as PAGE_TREE_MODEL
from inferline.ocr.pagetree import PageTree, PageTreeQuestion, too_slow
from inferline.ocr.results import union_bbox
from inferline.ocr.tesseract import OcrInput

Report = Callable[[int, int], Awaitable[None]]


def window_of(models: ModelRuntime, model: str) -> int:
    """Pages in flight: two per engine process, so a process never waits for the next page to load."""
    return 2 * max(1, models.processes_of(model))


async def read_pages(
    deps: OcrDeps,
    ctx: JobContext,
    file_id: str,
    options: OcrOptions,
    done: dict[int, dict[str, Any]],
    report: Report,
) -> tuple[list[dict[str, Any]], str, int]:
    """The asked pages of the tenant's file `file_id`, with the engine and dpi used. `done` holds pages
    already read (from a checkpoint) and receives each page as it finishes, after which `report` is
    awaited with (pages finished, pages asked)."""
    try:
        info = await get_file(deps.engine, tenant=ctx.tenant, file_id=file_id)
        path = blob_path(deps.blobs, info)
    except NotFound as exc:
        raise NonRetryable(str(exc)) from exc
    model = pick_engine(options.engine, options.lang, deps.models.device)
    dpi = options.dpi or deps.default_dpi
    page_count = await count_pages(deps, ctx, path, info.content_type)
    indexes = parse_pages(options.pages, page_count)
    reader = _PageReader(deps, ctx, str(path), info.content_type, options, model=model, dpi=dpi)
    await reader.read(indexes, done, report)
    return [done[index] for index in indexes], model, dpi


async def count_pages(deps: OcrDeps, ctx: JobContext, path: Path, content_type: str) -> int:
    """The document's pages; `NonRetryable` past the limit (an image's frames are counted to one past it).
    A PDF's page tree is walked by the `pdf-pages` model's process within its time (`ocr.pagetree`), never
    in this one."""
    max_pages = deps.limits.max_pages
    if content_type == sniff.PDF:
        try:
            question = PageTreeQuestion(str(path), max_pages)
            tree: PageTree = await deps.models.predict(PAGE_TREE_MODEL, question, ctx.tenant)
        except ModelTimedOut as exc:  # as slow again on another attempt
            raise too_slow(exc) from exc
        too_many = tree.too_many_pages(max_pages)
        count = tree.page_count
    else:
        document = await ctx.to_thread(partial(Document, path, content_type, max_pages=max_pages))
        try:
            too_many, count = document.too_many_pages(max_pages), document.page_count
        finally:
            await ctx.to_thread(document.close)
    if too_many:
        raise NonRetryable(too_many)
    return count


class _PageReader:
    def __init__(
        self,
        deps: OcrDeps,
        ctx: JobContext,
        path: str,
        content_type: str,
        options: OcrOptions,
        *,
        model: str,
        dpi: int,
    ) -> None:
        self.deps = deps
        self.ctx = ctx
        self.path = path
        self.content_type = content_type
        self.options = options
        self.model = model
        self.dpi = dpi

    async def read(self, indexes: list[int], done: dict[int, dict[str, Any]], report: Report) -> None:
        save_lock = asyncio.Lock()
        window = asyncio.Semaphore(window_of(self.deps.models, self.model))

        async def one(index: int) -> None:
            async with window:
                self.ctx.raise_if_canceled()
                result = await self.page(index)
                async with save_lock:
                    done[index] = result
                    await report(sum(1 for i in indexes if i in done), len(indexes))

        try:
            async with asyncio.TaskGroup() as group:  # one page failing stops the others
                for index in indexes:
                    if index not in done:
                        group.create_task(one(index))
        except BaseExceptionGroup as failed:  # the first page's error is the job's, with its own type
            raise failed.exceptions[0] from None

    async def page(self, index: int) -> dict[str, Any]:
        # Read in the engine's process, its text layer or its pixels: a PDF page is never loaded here
        # (`ocr.pdf`: what loading one takes is bounded there).
        options = self.options
        ref = PageRef(self.path, self.content_type, index, self.dpi, self.deps.limits, options.page_mode)
        item = OcrInput(
            None, options.lang, ref, rotate=options.rotate_pages, deskew=options.deskew, layout=options.layout
        )
        try:
            output = await self.ctx.predict(self.model, item)
        except ModelTimedOut as exc:
            # As slow again on another attempt: retrying would hold the engine for every tenant once more.
            raise BadDocument(
                f"page {index + 1}: the engine took over {exc.limit_s:g} s to read it and was stopped "
                "(INFERLINE_OCR_PAGE_TIMEOUT_S): a page drawn with billions of objects or pattern cells, or one "
                "too large to read in that time"
            ) from exc
        except ModelProcessDied as exc:
            if exc.signal_name == "SIGABRT" and ref.content_type == sniff.PDF:
                # Deterministic for this page: another attempt would end the same way.
                raise BadDocument(self._aborted(index)) from exc
            raise ModelError(f"page {index + 1}: {exc}") from exc
        except ModelError as exc:
            raise ModelError(f"page {index + 1}: {exc}") from exc
        return {
            "index": index,
            "width": output["width"],
            "height": output["height"],
            "source": output.get("source", "ocr"),
            "text": output["text"],
            "lines": output["lines"],
            "blocks": output.get("blocks") or _one_block(output["lines"]),
            "rotation_deg": output.get("rotation_deg", 0),
            "deskew_deg": output.get("deskew_deg", 0.0),
        }

    def _aborted(self, index: int) -> str:
        budget = self.deps.limits.page_memory_bytes
        within = f" within its memory budget ({budget // 2**20} MB, INFERLINE_OCR_PAGE_MEMORY_MB)" if budget else ""
        return (
            f"page {index + 1}: the engine's process gave up reading it{within}: a decompression bomb, forms "
            "nested to billions of objects, or a page the engine cannot read"
        )


def _one_block(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pages read without layout (a text layer, RapidOCR) are one block of one paragraph."""
    if not lines:
        return []
    bbox = union_bbox([line["bbox"] for line in lines])
    return [{"bbox": bbox, "paragraphs": [{"bbox": bbox, "lines": list(range(len(lines)))}]}]
