"""The `ocr` job kind: a stored file in, the OCR result JSON out (see `results.py`), page by page.

Each finished page is checkpointed, so a job that lost its worker resumes after its last finished page.
The stage reads "page 3/40" (pages finished / pages asked for). Its result renders as JSON, `text` and
`hocr` (`GET /jobs/{id}/result?format=`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from inferline.errors import InvalidInput, NonRetryable
from inferline.files.refs import FileId
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry, ResultRenderer
from inferline.ocr.deps import OcrDeps
from inferline.ocr.options import OcrOptions
from inferline.ocr.pages import read_pages
from inferline.ocr.results import document_text, to_hocr, to_text

KIND = "ocr"
RENDERERS = {
    "text": ResultRenderer("text/plain; charset=utf-8", to_text),
    "hocr": ResultRenderer("text/html; charset=utf-8", to_hocr),
}


class OcrJobInput(OcrOptions):
    file_id: FileId = Field(min_length=1, max_length=36)


async def run_ocr(deps: OcrDeps, ctx: JobContext, data: OcrJobInput) -> dict[str, Any]:
    done: dict[int, dict[str, Any]] = {
        int(key): page for key, page in ((ctx.last_checkpoint or {}).get("pages") or {}).items()
    }

    async def report(finished: int, total: int) -> None:
        await ctx.stage(f"page {finished}/{total}")
        await ctx.checkpoint({"pages": {str(i): done[i] for i in sorted(done)}}, progress=100 * finished / total)

    await ctx.stage("open")
    try:
        pages, model, dpi = await read_pages(deps, ctx, data.file_id, data, done, report)
    except InvalidInput as exc:  # a bad option found only now (a page range past the end, a language)
        raise NonRetryable(str(exc)) from exc
    return {"pages": pages, "text": document_text(pages), "engine": model, "dpi": dpi}


def register(registry: KindRegistry, deps: OcrDeps) -> None:
    async def ocr(ctx: JobContext, data: OcrJobInput) -> dict[str, Any]:
        return await run_ocr(deps, ctx, data)

    registry.kind(KIND, input_model=OcrJobInput, renderers=RENDERERS)(ocr)
