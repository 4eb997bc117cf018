"""PDF pages that make pdfium allocate without end, read where their memory is bounded (`ocr.pdf`,
`memory.budget`): an engine's own process, never the API process."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import LogRecorder, sqlite_url
from tests.ocr_samples import pdf_of

from inferline import db, memory
from inferline.config import Settings
from inferline.errors import BadDocument, InvalidInput, TooLarge
from inferline.files import sniff
from inferline.files.blobs import BlobStore
from inferline.files.service import receive_file, record_file
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.testing import MemoryContext
from inferline.metrics import Metrics
from inferline.ocr.deps import OcrDeps
from inferline.ocr.documents import Document, Limits, PageMode
from inferline.ocr.kind import OcrJobInput, run_ocr
from inferline.ocr.options import OcrOptions
from inferline.ocr.pdf import Pdf
from inferline.ocr.rapid import RapidOcrModel
from inferline.ocr.searchable_build import build_apart
from inferline.ocr.tesseract import TesseractModel

MB = 2**20


def stream(entries: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (entries, len(data), data)


def grey_image(side_px: int, extra: bytes = b"") -> bytes:
    pixels = zlib.compress(bytes(side_px * side_px), 9)  # a few hundred kB for hundreds of megapixels
    return stream(
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 8 "
        b"/Filter /FlateDecode %s" % (side_px, side_px, extra),
        pixels,
    )


CATALOG = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"]
DRAW = b"q 72 0 0 72 0 0 cm /Im1 Do Q"


def stamp_drawing_an_image(side_px: int, *, in_a_form: bool = False) -> bytes:
    """A one-inch page with no content of its own and a stamp annotation whose appearance draws a
    `side_px` square image (inside a second form when `in_a_form`)."""
    appearance = b"/Type /XObject /Subtype /Form /BBox [0 0 72 72] /Resources << /XObject << /Im1 6 0 R >> >>"
    objects = [
        *CATALOG,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Annots [4 0 R] >>",
        b"<< /Type /Annot /Subtype /Stamp /Rect [0 0 72 72] /AP << /N 5 0 R >> >>",
    ]
    if in_a_form:
        objects += [  # the appearance draws a form (6) that draws the image (7)
            stream(appearance, b"/Im1 Do"),
            stream(appearance.replace(b"/Im1 6 0 R", b"/Im1 7 0 R"), DRAW),
            grey_image(side_px),
        ]
    else:
        objects += [stream(appearance, DRAW), grey_image(side_px)]
    return pdf_of(objects)


def soft_mask_of(side_px: int) -> bytes:
    """A one-inch page drawing a one-pixel image whose soft mask is `side_px` square."""
    return pdf_of(
        [
            *CATALOG,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Contents 4 0 R "
            b"/Resources << /XObject << /Im1 5 0 R >> >> >>",
            stream(b"", DRAW),
            stream(
                b"/Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray /BitsPerComponent 8 "
                b"/SMask 6 0 R",
                b"\x80",
            ),
            grey_image(side_px),
        ]
    )


def forms_doubling(depth: int) -> bytes:
    """A page drawing a form that draws the next form twice, `depth` deep: 2**depth rectangles parsed
    from a file of a few kB."""
    objects = [
        *CATALOG,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Contents 4 0 R "
        b"/Resources << /XObject << /F 5 0 R >> >> >>",
        stream(b"", b"/F Do"),
    ]
    for level in range(depth):
        number = 5 + level
        if level + 1 < depth:
            entries = b"/Type /XObject /Subtype /Form /BBox [0 0 72 72] /Resources << /XObject << /F %d 0 R >> >>"
            objects.append(stream(entries % (number + 1), b"/F Do /F Do"))
        else:
            objects.append(stream(b"/Type /XObject /Subtype /Form /BBox [0 0 72 72]", b"0 0 1 1 re f"))
    return pdf_of(objects)


def tiling_pattern(step_pt: float) -> bytes:
    """A letter page filled with a tiling pattern whose cell repeats every `step_pt`: (612 / step) x
    (792 / step) cells drawn one by one, from a file of 700 bytes in little memory (0.01: ~5 billion
    cells, minutes to render at 72 dpi and hours at 300)."""
    cell = b"0 0 0.5 0.5 re f"
    return pdf_of(
        [
            *CATALOG,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Pattern << /P1 5 0 R >> >> >>",
            stream(b"", b"/Pattern cs /P1 scn 0 0 612 792 re f"),
            stream(
                b"/Type /Pattern /PatternType 1 /PaintType 1 /TilingType 1 /BBox [0 0 1 1] /XStep %g /YStep %g "
                b"/Resources << >>" % (step_pt, step_pt),
                cell,
            ),
        ]
    )


def page_tree_listing_each_node_twice(depth: int) -> bytes:
    """One real page, after a branch of `depth` page-tree nodes each listing the next twice and ending
    in no pages: 2**depth nodes walked to count the pages (pdfium remembers no empty subtree's count)
    from a file of 2 kB."""
    first = 4
    nodes = [
        b"<< /Type /Pages /Kids [%d 0 R %d 0 R] >>" % (first + level + 1, first + level + 1)
        for level in range(depth - 1)
    ]
    return pdf_of(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%d 0 R %d 0 R 3 0 R] >>" % (first, first),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>",
            *nodes,
            b"<< /Type /Pages /Kids [] >>",
        ]
    )


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("in_a_form", [False, True])
def test_the_images_of_an_annotations_appearance_count_toward_the_pages_image_limit(
    tmp_path: Path, in_a_form: bool
) -> None:
    limits = Limits(max_pages=10, max_page_pixels=1_000_000)  # images up to twice that
    bomb = write(tmp_path, "stamp.pdf", stamp_drawing_an_image(1500, in_a_form=in_a_form))
    with Document(bomb, sniff.PDF) as document, pytest.raises(BadDocument, match="one is 1500x1500"):
        document.load(0, PageMode.FORCE, 300, limits)
    fine = write(tmp_path, "fine.pdf", stamp_drawing_an_image(1400, in_a_form=in_a_form))
    with Document(fine, sniff.PDF) as document:
        page = document.load(0, PageMode.FORCE, 300, limits)
    assert page.image is not None and page.image.size == (300, 300)
    # The stamp's image is drawn: its grey, not the page's white.
    assert page.image.getpixel((150, 150)) == 0


RENDER_IN_A_CHILD = """
import sys
from pathlib import Path
from inferline import memory
from inferline.files import sniff
from inferline.ocr.documents import Document, Limits, PageMode
budget = int(sys.argv[2])
if budget:
    memory.allow_budgets()  # as a model's process does
limits = Limits(max_pages=1, max_page_pixels=1_000_000, page_memory_bytes=budget or None)
with Document(Path(sys.argv[1]), sniff.PDF, page_memory_bytes=limits.page_memory_bytes) as document:
    page = document.load(0, PageMode.FORCE, 300, limits)
# VmHWM, not ru_maxrss: the latter keeps the peak of the process forked from (a large pytest) across exec
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(page.image.size, peak_kb // 1024)
"""


def render_in_a_child(path: Path, budget_bytes: int) -> tuple[int, str, int | None]:
    """(return code, output, peak memory in MB) of a process that renders the page, its page budget
    allowed as in a model's process when `budget_bytes`."""
    done = subprocess.run(
        [sys.executable, "-c", RENDER_IN_A_CHILD, str(path), str(budget_bytes)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    peak = int(done.stdout.split()[-1]) if done.returncode == 0 else None
    return done.returncode, done.stdout + done.stderr, peak


def test_a_soft_mask_past_the_page_budget_is_left_out_without_taking_the_memory(tmp_path: Path) -> None:
    # A one-pixel image's 16000x16000 soft mask: 256 MB decoded, 250 kB in the file. pdfium has no call
    # that reads a soft mask's size before decoding it, so only the budget bounds it.
    bomb = write(tmp_path, "mask.pdf", soft_mask_of(16_000))
    code, output, unbounded_mb = render_in_a_child(bomb, 0)
    assert code == 0, output
    assert unbounded_mb is not None and unbounded_mb > 256, "without a budget pdfium decodes the mask whole"
    code, output, bounded_mb = render_in_a_child(bomb, 96 * MB)
    assert code == 0, output
    assert "(300, 300)" in output
    assert bounded_mb is not None and bounded_mb < 200, output


def test_forms_nested_to_a_blow_up_stop_at_the_page_budget(tmp_path: Path) -> None:
    bomb = write(tmp_path, "forms.pdf", forms_doubling(17))  # 131,072 rectangles: ~180 MB to parse
    code, output, unbounded_mb = render_in_a_child(bomb, 0)
    assert code == 0 and unbounded_mb is not None and unbounded_mb > 150, output
    code, output, _ = render_in_a_child(bomb, 96 * MB)
    assert code == -signal.SIGABRT, f"pdfium gives up on a failed allocation while it parses: {code} {output}"


BUDGET_IN_A_CHILD = """
import resource
from inferline import memory
before = resource.getrlimit(resource.RLIMIT_DATA)
memory.allow_budgets()
try:
    with memory.budget(64 * 2**20):
        inside = resource.getrlimit(resource.RLIMIT_DATA)
        try:
            bytearray(256 * 2**20)
        except MemoryError:
            print("refused")
        raise KeyError("a failure inside")
except KeyError:
    pass
print(before == resource.getrlimit(resource.RLIMIT_DATA), 0 < inside[0] < 2**40, inside[1] == before[1])
bytearray(256 * 2**20)  # allowed again
print("after")
"""


def test_a_budget_bounds_the_call_and_is_restored_after_it_even_when_it_fails() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BUDGET_IN_A_CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused", "True", "True", "True", "after"]


def test_a_budget_does_nothing_where_not_allowed() -> None:
    before = resource.getrlimit(resource.RLIMIT_DATA)
    with memory.budget(64 * MB):  # not allowed in this process (many threads): nothing changes
        assert resource.getrlimit(resource.RLIMIT_DATA) == before
        bytearray(256 * MB)
    assert not memory.budgets_allowed()


@contextlib.asynccontextmanager
async def tesseract_ocr(tmp_path: Path, *, page_timeout_s: float | None = None) -> AsyncIterator[OcrDeps]:
    """The OCR kind's dependencies with Tesseract in one process of its own, as `serve` runs it, and a
    page budget of 96 MB."""
    url = sqlite_url(tmp_path)
    db.upgrade(url)
    engine = db.create_engine(url)
    models = ModelRuntime(device="cpu", modes={}, queue_limit=100, metrics=Metrics(), processes={"tesseract": 1})
    models.register("tesseract", TesseractModel, item_timeout_s=page_timeout_s)
    limits = Limits(max_pages=10, max_page_pixels=1_000_000, page_memory_bytes=96 * MB)
    try:
        yield OcrDeps(engine, BlobStore(tmp_path / "blobs"), models, limits, default_dpi=72)
    finally:
        await models.aclose()
        await engine.dispose()


@pytest.fixture
async def ocr(tmp_path: Path) -> AsyncIterator[OcrDeps]:
    async with tesseract_ocr(tmp_path) as deps:
        yield deps


async def stored(deps: OcrDeps, path: Path) -> str:
    with path.open("rb") as source:
        info = await receive_file(deps.blobs, tenant="t", source=source, filename=path.name, max_bytes=10**8)
    await record_file(deps.engine, info)
    return info.id


async def test_an_ocr_job_on_such_a_page_fails_with_the_reason_and_the_next_job_is_read(
    ocr: OcrDeps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page is loaded in the engine's own process (its text layer read there too), never in this one;
    pdfium aborts there at the budget, the runner starts another process, and the job fails with the
    reason, not retried (it would end the same way). The next file is read by the new process."""

    def never_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("a PDF page was loaded in the API process")

    monkeypatch.setattr(Pdf, "_page", never_here)
    bomb = await stored(ocr, write(tmp_path, "forms.pdf", forms_doubling(18)))
    ctx = MemoryContext(tenant="t", models=ocr.models)
    with pytest.raises(BadDocument, match=r"page 1: the engine's process gave up reading it within .*96 MB"):
        await run_ocr(ocr, ctx, OcrJobInput(file_id=bomb, engine="tesseract", lang="eng"))
    fine = await stored(ocr, write(tmp_path, "fine.pdf", forms_doubling(4)))
    result = await run_ocr(
        ocr, MemoryContext(tenant="t", models=ocr.models), OcrJobInput(file_id=fine, engine="tesseract", lang="eng")
    )
    assert [(page["width"], page["height"], page["source"]) for page in result["pages"]] == [(72, 72, "ocr")]


@pytest.mark.allow_error_logs
async def test_a_page_that_renders_past_the_page_timeout_fails_its_job_and_frees_the_engine(tmp_path: Path) -> None:
    """Little memory, hours of rendering: the engine's process is killed at `item_timeout_s`
    (`ocr_page_timeout_s`), the job fails with the page's number and is not retried, and the engine's new
    process reads the next file at once."""
    async with tesseract_ocr(tmp_path, page_timeout_s=3.0) as ocr:
        models = ocr.models
        await models.batcher("tesseract").ensure_loaded()  # the allowance counts from the page's start
        patterned = await stored(ocr, write(tmp_path, "pattern.pdf", tiling_pattern(0.002)))
        started = time.monotonic()
        with pytest.raises(BadDocument, match=r"^page 1: the engine took over 3 s to read it and was stopped"):
            await run_ocr(
                ocr,
                MemoryContext(tenant="t", models=models),
                OcrJobInput(file_id=patterned, engine="tesseract", lang="eng"),
            )
        assert time.monotonic() - started < 20  # the page alone renders for ~30 minutes at 72 dpi
        fine = await stored(ocr, write(tmp_path, "fine.pdf", forms_doubling(4)))
        result = await run_ocr(
            ocr, MemoryContext(tenant="t", models=models), OcrJobInput(file_id=fine, engine="tesseract", lang="eng")
        )
        assert [page["source"] for page in result["pages"]] == ["ocr"]
    assert {row["name"]: row["item_timeout_s"] for row in models.describe()} == {"pdf-pages": 10.0, "tesseract": 3.0}


@pytest.mark.allow_error_logs
async def test_a_page_tree_that_takes_hours_to_walk_is_walked_apart_and_given_up_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting the pages of a 2 kB PDF whose page-tree nodes each list the next twice, 34 deep, takes
    pdfium hours. Neither the `/ocr` pre-check nor the job walks it in this process (whose pdfium lock
    every other PDF waits for): the `pdf-pages` model's process does and is killed at its time; the
    pre-check lets the file through, the job fails with the reason, and the next PDF is read at once."""
    import inferline.ocr.deps as ocr_deps
    from inferline.ocr.service import precheck

    monkeypatch.setattr(ocr_deps, "PAGE_TREE_TIMEOUT_S", 1.0)
    async with tesseract_ocr(tmp_path) as ocr:
        models, limits = ocr.models, ocr.limits
        await models.batcher("pdf-pages").ensure_loaded()
        tree = write(tmp_path, "tree.pdf", page_tree_listing_each_node_twice(34))
        monkeypatch.setattr(Pdf, "__init__", never_here)
        started = time.monotonic()
        await precheck(models, tree, sniff.PDF, OcrOptions(), limits, dpi=72, tenant="t")
        with pytest.raises(BadDocument, match=r"^its page tree took over 1 s to read"):
            await run_ocr(
                ocr,
                MemoryContext(tenant="t", models=models),
                OcrJobInput(file_id=await stored(ocr, tree), engine="tesseract", lang="eng"),
            )
        assert time.monotonic() - started < 20
        fine = write(tmp_path, "fine.pdf", forms_doubling(4))
        with pytest.raises(TooLarge, match="page 1 is 1440x1440 pixels at 1440 dpi"):
            await precheck(models, fine, sniff.PDF, OcrOptions(), limits, dpi=1440, tenant="t")
        monkeypatch.undo()
        result = await run_ocr(
            ocr,
            MemoryContext(tenant="t", models=models),
            OcrJobInput(file_id=await stored(ocr, fine), engine="tesseract", lang="eng"),
        )
        assert [page["source"] for page in result["pages"]] == ["ocr"]


def never_here(*args: object, **kwargs: object) -> None:
    raise AssertionError("a PDF was opened in the API process")


def ocr_result_of_one_page(width_px: int) -> dict[str, Any]:
    """An OCR result whose one page was read by OCR: the searchable PDF lays its text over that page."""
    line = {"text": "hello", "confidence": 0.9, "bbox": [2, 2, 40, 12]}
    page = {"index": 0, "width": width_px, "height": width_px, "source": "ocr", "text": "hello", "lines": [line]}
    return {"pages": [page], "text": "hello", "dpi": 72}


async def test_a_searchable_pdf_is_built_apart_within_the_page_budget(tmp_path: Path) -> None:
    """Laying the text loads the page: in a process of its own, never the API process's pdfium. A page
    over the budget is a 422 naming `format`; a fine page comes back as a PDF; nothing is left behind."""
    tmp_dir = tmp_path / "tmp"
    bomb = write(tmp_path, "forms.pdf", forms_doubling(17))
    with pytest.raises(InvalidInput, match=r"could not be built within 96 MB") as refused:
        await build_apart(bomb, sniff.PDF, ocr_result_of_one_page(72), tmp_dir, budget_bytes=96 * MB)
    assert refused.value.field == "format"
    fine = write(tmp_path, "fine.pdf", forms_doubling(4))
    with await build_apart(fine, sniff.PDF, ocr_result_of_one_page(72), tmp_dir, budget_bytes=96 * MB) as out:
        built = out.read()
    assert built.startswith(b"%PDF") and b"forms nested" not in built
    with pytest.raises(FileNotFoundError):
        await build_apart(tmp_path / "gone.pdf", sniff.PDF, ocr_result_of_one_page(72), tmp_dir, budget_bytes=None)
    assert list(tmp_dir.iterdir()) == []


async def test_a_searchable_pdf_past_its_deadline_is_stopped_and_so_is_one_its_caller_left(tmp_path: Path) -> None:
    tmp_dir = tmp_path / "tmp"
    slow = write(tmp_path, "forms.pdf", forms_doubling(21))  # ~11 s and ~3 GB to load whole
    with pytest.raises(InvalidInput, match=r"took over 2 s to build") as late:
        await build_apart(slow, sniff.PDF, ocr_result_of_one_page(72), tmp_dir, budget_bytes=2048 * MB, timeout_s=2)
    assert late.value.field == "format"
    assert multiprocessing.active_children() == [] and list(tmp_dir.iterdir()) == []
    left = asyncio.ensure_future(
        build_apart(slow, sniff.PDF, ocr_result_of_one_page(72), tmp_dir, budget_bytes=2048 * MB)
    )
    await asyncio.sleep(0.1)  # while the process starts
    left.cancel()
    with pytest.raises(asyncio.CancelledError):
        await left
    assert multiprocessing.active_children() == [] and list(tmp_dir.iterdir()) == []
    again = asyncio.ensure_future(
        build_apart(slow, sniff.PDF, ocr_result_of_one_page(72), tmp_dir, budget_bytes=2048 * MB)
    )
    await asyncio.sleep(1.5)  # while it loads the page
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again
    assert multiprocessing.active_children() == [] and list(tmp_dir.iterdir()) == []


async def test_an_ocr_engine_on_a_thread_is_said_at_start_to_leave_pdf_pages_unbounded(
    tmp_path: Path, log_records: LogRecorder
) -> None:
    def deps(processes: dict[str, int]) -> None:
        models = ModelRuntime(device="cpu", modes={}, queue_limit=10, metrics=Metrics(), processes=processes)
        models.register("tesseract", TesseractModel)
        models.register("rapidocr", RapidOcrModel)
        OcrDeps.from_settings(Settings(data_dir=tmp_path), engine=engine, blobs=BlobStore(tmp_path), models=models)

    engine = db.create_engine(sqlite_url(tmp_path))
    try:
        deps({})  # both in processes, one per core: their default
        assert not [event for event in log_records.events if event["event"] == "ocr_pdf_pages_unbounded"]
        deps({"tesseract": 0})
    finally:
        await engine.dispose()
    [warned] = [event for event in log_records.events if event["event"] == "ocr_pdf_pages_unbounded"]
    assert warned["level"] == "warning" and warned["engines"] == ["tesseract"]
