"""What the OCR workload needs, built once by `bootstrap.py` (`OcrDeps.from_settings`) and kept on
`Services.ocr`."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.config import Settings
from inferline.errors import Overloaded
from inferline.files.blobs import BlobStore
from inferline.inference.runtime import ModelRuntime
from inferline.ocr.documents import Limits
from inferline.ocr.pagetree import MODEL_NAME as PAGE_TREE_MODEL
from inferline.ocr.pagetree import PAGE_TREE_TIMEOUT_S, PageTreeModel

log = structlog.get_logger(__name__)
ENGINES = ("tesseract", "rapidocr")  # the models `ocr.options.pick_engine` may choose, as registered


@dataclass(frozen=True)
class OcrDeps:
    engine: AsyncEngine
    blobs: BlobStore
    models: ModelRuntime
    limits: Limits
    default_dpi: int
    pdf_builds: PdfBuilds = field(default_factory=lambda: PdfBuilds())

    def __post_init__(self) -> None:
        # Part of reading any PDF, not a model a caller picks: registered with the OCR workload itself.
        if not self.models.is_registered(PAGE_TREE_MODEL):
            self.models.register(PAGE_TREE_MODEL, PageTreeModel, item_timeout_s=PAGE_TREE_TIMEOUT_S)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, engine: AsyncEngine, blobs: BlobStore, models: ModelRuntime
    ) -> OcrDeps:
        deps = cls(
            engine=engine,
            blobs=blobs,
            models=models,
            limits=Limits(
                max_pages=settings.ocr_max_pages,
                max_page_pixels=settings.ocr_max_page_pixels,
                page_memory_bytes=settings.ocr_page_memory_mb * 2**20,
            ),
            default_dpi=settings.ocr_default_dpi,
        )
        on_threads = sorted(name for name in (*ENGINES, PAGE_TREE_MODEL) if models.processes_of(name) == 0)
        if on_threads:  # said once at start: an operator's choice, with a cost docs/ocr.md describes
            log.warning(
                "ocr_pdf_pages_unbounded",
                engines=on_threads,
                why="an OCR engine on a thread (model_processes 0) loads PDF pages in this process, and pdf-pages "
                "there walks their page trees, where neither ocr_page_memory_mb nor a time limit can bound them: run "
                "them in processes where files come from untrusted users",
            )
        return deps


class PdfBuilds:
    """Searchable PDFs being built for this API process: a few at once, one per tenant. A build is a
    process of its own (`ocr.searchable_build`) doing seconds of pdfium work; asked for in a loop, it
    would take the cores every other tenant's requests need."""

    def __init__(self, at_once: int = 2) -> None:
        self.at_once = at_once
        self.tenants: set[str] = set()

    def start(self, tenant: str) -> None:
        if tenant in self.tenants:
            raise Overloaded(
                "a searchable PDF of this tenant is being built: ask again once it is sent", retry_after_s=5
            )
        if len(self.tenants) >= self.at_once:
            raise Overloaded("searchable PDFs are being built for others: ask again shortly", retry_after_s=5)
        self.tenants.add(tenant)

    def end(self, tenant: str) -> None:
        self.tenants.discard(tenant)
