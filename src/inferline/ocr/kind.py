"""The `ocr` job kind: a stored file in, the OCR result JSON out (see `results.py`), page by page.

Each finished page is checkpointed, so a job that lost its worker resumes after its last finished page.
The stage reads "page 3/40" (pages finished / pages asked for). Its result renders as JSON, `text`,
`hocr` and `pdf` (`GET /jobs/{id}/result?format=`): the searchable PDF, made from the job's input file
when asked for (`ocr.searchable`).
"""

from __future__ import annotations

from typing import Any, BinaryIO

from pydantic import Field

from inferline.errors import Conflict, InvalidInput, NonRetryable, NotFound
from inferline.files.refs import FileId
from inferline.files.service import blob_path, get_file
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry, ResultRenderer
from inferline.jobs.model import Job
from inferline.ocr.deps import OcrDeps
from inferline.ocr.options import OcrOptions
from inferline.ocr.pages import read_pages
from inferline.ocr.results import document_text, to_hocr, to_text
from inferline.ocr.searchable_build import build_apart

KIND = "ocr"
RENDERERS = {
    "text": ResultRenderer("text/plain; charset=utf-8", to_text),
    "hocr": ResultRenderer("text/html; charset=utf-8", to_hocr),
}
PDF = "application/pdf"


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


async def searchable_pdf(deps: OcrDeps, job: Job) -> BinaryIO:
    """The succeeded OCR `job`'s searchable PDF, in a temporary file: built page by page by a process of
    its own (`ocr.searchable_build`)."""
    file_id = str(job.input["file_id"])
    try:
        info = await get_file(deps.engine, tenant=job.tenant, file_id=file_id)
        path = blob_path(deps.blobs, info)
    except NotFound:
        raise _file_gone(file_id) from None
    assert job.result is not None
    deps.pdf_builds.start(job.tenant)
    try:
        return await build_apart(
            path, info.content_type, job.result, deps.blobs.tmp_dir, budget_bytes=deps.limits.page_memory_bytes
        )
    except FileNotFoundError:  # the blob went between the look-up and the read
        raise _file_gone(file_id) from None
    finally:
        deps.pdf_builds.end(job.tenant)


def _file_gone(file_id: str) -> Conflict:
    return Conflict(
        f"the searchable PDF is made from the job's input file {file_id}, which has been deleted since; "
        "upload the file and OCR it again"
    )


def register(registry: KindRegistry, deps: OcrDeps) -> None:
    async def ocr(ctx: JobContext, data: OcrJobInput) -> dict[str, Any]:
        return await run_ocr(deps, ctx, data)

    async def pdf(job: Job) -> BinaryIO:
        return await searchable_pdf(deps, job)

    renderers = RENDERERS | {"pdf": ResultRenderer(PDF, render_job=pdf)}
    registry.kind(KIND, input_model=OcrJobInput, renderers=renderers)(ocr)
