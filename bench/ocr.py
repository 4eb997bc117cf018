"""OCR benchmark: a 40-page scanned PDF through the API vs the engine page by page in a loop.

- baseline: in this process, each page rasterized with pdfium at 300 dpi and read by one Tesseract
  (`kor+eng`, PSM 6), one page after the other: what a hand-made worker does;
- inferline: `serve --workers 1` (SQLite), `POST /api/v1/ocr` with the PDF, until the job succeeds.
  The server's engine processes are warmed by a 1-page job first, as the baseline's engine is loaded
  before its clock starts.
Both report pages/s and the mean CER against the ground truth, so speed is never bought with accuracy.
Then the batcher's overhead (bench/batcher.py): 64 concurrent single callers vs direct full batches.

Pages: the shared test set's 20 A4 pages (English, Korean, mixed; clean and degraded), twice.
Run: `./dev bench ocr [--pages N]`. Target: >= 1.5x the baseline on 2 cores with the same CER.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from PIL import Image

from inferline.jobs.model import TERMINAL_STATUSES
from inferline.ocr.documents import Document, Limits, PageMode
from inferline.ocr.quality import cer
from inferline.ocr.tesseract import OcrInput, TesseractModel
from serving import serve  # bench/ is on sys.path: these files run as scripts

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ocr"
LIMITS = Limits(max_pages=1000, max_page_pixels=100_000_000)


def make_pdf(pages: int) -> tuple[bytes, list[str]]:
    names = sorted(p.name for p in DATA.glob("*.png"))
    chosen = [names[i % len(names)] for i in range(pages)]
    images = [Image.open(DATA / name).convert("L") for name in chosen]
    truths = [(DATA / name).with_suffix("").with_suffix(".gt.txt").read_text() for name in chosen]
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", resolution=300, save_all=True, append_images=images[1:])
    return buffer.getvalue(), truths


def baseline(pdf: Path, truths: list[str]) -> tuple[float, float]:
    model = TesseractModel()
    model.setup("cpu")
    texts = []
    started = time.perf_counter()
    with Document(pdf, "application/pdf") as document:
        for index in range(document.page_count):
            page = document.load(index, PageMode.AUTO, 300, LIMITS)
            assert page.image is not None
            [output] = model.predict_batch([OcrInput(page.image)])
            assert isinstance(output, dict)
            texts.append(output["text"])
    elapsed = time.perf_counter() - started
    model.close()
    return len(texts) / elapsed, statistics.mean(cer(t, g) for t, g in zip(texts, truths, strict=True))


async def through_api(pdf: bytes, truths: list[str], data_dir: Path) -> tuple[float, float, int]:
    async with (
        serve(data_dir, "--workers", "1") as (port, key),
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=600
        ) as client,
    ):
        warm = await client.post(
            "/api/v1/ocr", files={"file": ("w.pdf", pdf)}, data={"pages": "1"}, headers={"Prefer": "wait=120"}
        )
        assert warm.json()["status"] == "succeeded", warm.text
        started = time.perf_counter()
        response = await client.post("/api/v1/ocr", files={"file": ("doc.pdf", pdf)})
        job = response.json()
        while job["status"] not in TERMINAL_STATUSES:
            await asyncio.sleep(0.05)
            job = (await client.get(f"/api/v1/jobs/{job['id']}")).json()
        elapsed = time.perf_counter() - started
        assert job["status"] == "succeeded", job["error"]
        models = (await client.get("/api/v1/models")).json()["items"]
    texts = [page["text"] for page in job["result"]["pages"]]
    processes = next(m["processes"] for m in models if m["name"] == "tesseract")
    return len(texts) / elapsed, statistics.mean(cer(t, g) for t, g in zip(texts, truths, strict=True)), processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=40)
    args = parser.parse_args()
    pdf, truths = make_pdf(args.pages)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.pdf"
        path.write_bytes(pdf)
        base_rate, base_cer = baseline(path, truths)
        api_rate, api_cer, processes = asyncio.run(through_api(pdf, truths, Path(tmp) / "data"))
    sys.path.insert(0, str(ROOT / "bench"))
    from batcher import FixedCost, direct, through_batcher

    model = FixedCost(5.0)
    direct_rate = direct(model, 6400)
    batched_rate = asyncio.run(through_batcher(FixedCost(5.0), 6400, 64))
    print(
        f"OCR benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; a {args.pages}-page scanned PDF (300 dpi A4)\n"
    )
    print("| measure | pages/s | mean CER |")
    print("|---|---|---|")
    print(f"| page-by-page loop, one Tesseract (baseline) | {base_rate:.2f} | {base_cer:.2%} |")
    print(f"| POST /api/v1/ocr, {processes} engine processes | {api_rate:.2f} | {api_cer:.2%} |")
    print(f"| ratio | {api_rate / base_rate:.2f}x | |")
    print()
    print("| batcher: fixed 5 ms per batch of up to 64 | items/s |")
    print("|---|---|")
    print(f"| direct, full batches (baseline) | {direct_rate:,.0f} |")
    print(f"| 64 concurrent single callers through the batcher | {batched_rate:,.0f} |")
    print(f"| ratio | {batched_rate / direct_rate:.2f} |")


if __name__ == "__main__":
    main()
