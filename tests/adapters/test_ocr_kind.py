"""The `ocr` kind run with an in-memory job context: no worker, no job row; its file is a real stored
file (SQLite) and its pages come from real documents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import sqlite_url

from inferline import db
from inferline.errors import NonRetryable
from inferline.files.blobs import BlobStore
from inferline.files.service import FileInfo, receive_file, record_file
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.testing import MemoryContext
from inferline.metrics import Metrics
from inferline.ocr.deps import OcrDeps
from inferline.ocr.documents import Limits
from inferline.ocr.kind import OcrJobInput, run_ocr
from inferline.ocr.tesseract import OcrInput, text_layer_result

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ocr"


@pytest.fixture
async def deps(tmp_path: Path) -> AsyncIterator[OcrDeps]:
    url = sqlite_url(tmp_path)
    db.upgrade(url)
    engine = db.create_engine(url)
    models = ModelRuntime(device="cpu", modes={}, queue_limit=100, metrics=Metrics())
    yield OcrDeps(
        engine, BlobStore(tmp_path / "blobs"), models, Limits(max_pages=10, max_page_pixels=50_000_000), default_dpi=150
    )
    await models.aclose()
    await engine.dispose()


async def stored(deps: OcrDeps, path: Path, tenant: str = "t") -> FileInfo:
    with path.open("rb") as source:
        info = await receive_file(deps.blobs, tenant=tenant, source=source, filename=path.name, max_bytes=10**8)
    await record_file(deps.engine, info)
    return info


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data missing: {path}")
    return path


def text_layer_only(item: OcrInput) -> dict[str, Any]:
    """An engine for pages with a text layer: the engine's process reads each page (`ocr.pages`), a
    page it would OCR fails the test."""
    page = item.read()
    assert page.image is None, "a page with a text layer went to OCR"
    return text_layer_result(page)


TEXT_LAYER_ONLY = {"tesseract": text_layer_only}


async def test_a_text_layer_pdf_is_read_page_by_page_with_a_checkpoint_after_each(deps: OcrDeps) -> None:
    pdf = await stored(deps, needs(DATA / "doc_text_layer.pdf"))
    ctx = MemoryContext(tenant="t", models=TEXT_LAYER_ONLY)
    result = await run_ocr(deps, ctx, OcrJobInput(file_id=pdf.id))
    assert ctx.stages == ["open", "page 1/3", "page 2/3", "page 3/3"]
    # Two pages are read at once, so which one finishes first varies: each checkpoint adds one page.
    saved = [set(c["pages"]) for c in ctx.checkpoints]
    assert [len(pages) for pages in saved] == [1, 2, 3] and saved[0] < saved[1] < saved[2] == {"0", "1", "2"}
    assert [page["source"] for page in result["pages"]] == ["text-layer"] * 3
    truth = (DATA / "doc_text_layer.gt.txt").read_text().split()
    assert result["text"].split()[:5] == truth[:5]
    assert sorted(item.page.index for _, item in ctx.predictions) == [0, 1, 2]


async def test_a_retry_reads_only_the_pages_after_its_checkpoint(deps: OcrDeps) -> None:
    pdf = await stored(deps, needs(DATA / "doc_text_layer.pdf"))
    first = MemoryContext(tenant="t", models=TEXT_LAYER_ONLY)
    whole = await run_ocr(deps, first, OcrJobInput(file_id=pdf.id))
    retry = MemoryContext(tenant="t", attempt=2, last_checkpoint=first.checkpoints[1], models=TEXT_LAYER_ONLY)
    resumed = await run_ocr(deps, retry, OcrJobInput(file_id=pdf.id))
    assert retry.stages == ["open", "page 3/3"] and resumed["text"] == whole["text"]
    assert len(retry.predictions) == 1


async def test_an_image_goes_to_the_engine_with_the_asked_language(deps: OcrDeps) -> None:
    image = await stored(deps, needs(DATA / "en_01_clean.png"))

    def tesseract(item: OcrInput) -> dict[str, Any]:
        return {"width": 10, "height": 20, "text": f"read in {item.lang}", "lines": []}

    ctx = MemoryContext(tenant="t", models={"tesseract": tesseract})
    result = await run_ocr(deps, ctx, OcrJobInput(file_id=image.id, lang="eng"))
    [(model, item)] = ctx.predictions
    assert model == "tesseract" and item.lang == "eng" and item.page is not None and item.page.index == 0
    assert result["text"] == "read in eng" and result["pages"][0]["source"] == "ocr"


async def test_another_tenants_file_fails_the_job_without_a_retry(deps: OcrDeps) -> None:
    pdf = await stored(deps, needs(DATA / "doc_text_layer.pdf"), tenant="owner")
    with pytest.raises(NonRetryable, match="not found"):
        await run_ocr(deps, MemoryContext(tenant="thief", models={}), OcrJobInput(file_id=pdf.id))


async def test_a_page_range_past_the_end_fails_the_job_without_a_retry(deps: OcrDeps) -> None:
    pdf = await stored(deps, needs(DATA / "doc_text_layer.pdf"))
    with pytest.raises(NonRetryable):
        await run_ocr(deps, MemoryContext(tenant="t", models={}), OcrJobInput(file_id=pdf.id, pages="2-9"))
