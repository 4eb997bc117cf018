"""Use case: OCR a stored file as a job, refusing at once what can be refused from headers alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.errors import BadDocument, InvalidInput, ModelError, Overloaded
from inferline.files import sniff
from inferline.files.service import FileInfo, blob_path
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.model import Job
from inferline.jobs.service import get_job
from inferline.jobs.submission import JobRequest, Submitter
from inferline.ocr.deps import OcrDeps
from inferline.ocr.documents import Document, Limits, check_type, parse_pages
from inferline.ocr.kind import KIND, OcrJobInput
from inferline.ocr.options import OcrOptions, pick_engine
from inferline.ocr.pagetree import MODEL_NAME as PAGE_TREE_MODEL
from inferline.ocr.pagetree import PageTree, PageTreeQuestion
from inferline.ocr.tesseract import available_languages, find_tessdata
from inferline.threads import to_thread

WAIT_POLL_S = 0.1
# How long a request waits for the pdf-pages process to read a PDF's page tree for its pre-check (each
# tree is given 10 s there; others' trees may be queued ahead): past it the file is let through.
PRECHECK_WAIT_S = 15.0
MAX_WAIT_S = 300.0


async def precheck(
    models: ModelRuntime, path: Path, content_type: str, options: OcrOptions, limits: Limits, dpi: int, tenant: str
) -> None:
    """415 for a type we cannot read, 413 over the limits, 422 for pages past the end. A file too broken
    to inspect is let through: its job fails with the reason, which is where users look for it. A PDF's
    page tree is read by the `pdf-pages` model's process, within its time (`ocr.pagetree`), never here."""
    check_type(content_type)
    if content_type != sniff.PDF:
        await to_thread(image_precheck, path, content_type, options, limits, dpi)
        return
    question = PageTreeQuestion(str(path), limits.max_pages)
    try:
        tree: PageTree = await asyncio.wait_for(models.predict(PAGE_TREE_MODEL, question, tenant), PRECHECK_WAIT_S)
    except (BadDocument, ModelError, Overloaded, TimeoutError):  # its job reads it again, and says why not
        return
    tree.check_limits(limits, dpi, [])  # the count first, then pages
    tree.check_limits(limits, dpi, parse_pages(options.pages, tree.page_count))


def image_precheck(path: Path, content_type: str, options: OcrOptions, limits: Limits, dpi: int) -> None:
    """`precheck` of an image (blocking)."""
    try:
        with Document(path, content_type, max_pages=limits.max_pages) as document:
            document.check_limits(limits, dpi, [])  # the page count first: past the limit, pages are not counted
            pages = parse_pages(options.pages, document.page_count)
            document.check_limits(limits, dpi, pages)
    except BadDocument:
        return


def check_lang(options: OcrOptions, device: str) -> None:
    engine = pick_engine(options.engine, options.lang, device)
    if engine == "tesseract":
        installed = available_languages(find_tessdata())
        unknown = [part for part in options.lang.split("+") if part not in installed]
        if unknown:
            raise InvalidInput(
                f"lang: {'+'.join(unknown)} not installed for Tesseract (installed: {'+'.join(sorted(installed))})",
                field="lang",
            )


async def submit_ocr(
    deps: OcrDeps, submitter: Submitter, *, tenant: str, file: FileInfo, options: OcrOptions, priority: int = 3
) -> Job:
    check_lang(options, deps.models.device)
    dpi = options.dpi or deps.default_dpi
    await precheck(deps.models, blob_path(deps.blobs, file), file.content_type, options, deps.limits, dpi, tenant)
    data = OcrJobInput(file_id=file.id, **options.model_dump())
    job, _ = await submitter.submit(
        JobRequest(kind=KIND, input=data.model_dump(mode="json"), priority=priority), tenant=tenant
    )
    return job


async def wait_for(engine: AsyncEngine, job: Job, wait_s: float) -> Job:
    """The job once it has finished, or as it is after `wait_s` seconds (RFC 7240 `Prefer: wait`)."""
    deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
    while not job.status.is_terminal and time.monotonic() < deadline:
        await asyncio.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))
        job = await get_job(engine, tenant=job.tenant, job_id=job.id)
    return job
