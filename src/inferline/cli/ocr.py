"""`ocr`: files in, text, JSON, hOCR or a searchable PDF out, with a progress bar per file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from inferline.cli.common import (
    DataDir,
    JobView,
    Key,
    ServerOrEmbedded,
    api_client,
    call,
    err,
    follow_jobs,
    progress_bars,
    show_job_progress,
)

SUFFIXES = {"text": "txt", "json": "json", "hocr": "hocr", "pdf": "pdf"}
BINARY = {"pdf"}
RENDER_TIMEOUT_S = 600


def ocr(
    files: Annotated[list[Path], typer.Argument(help="images (PNG, JPEG, TIFF, WebP, BMP) or PDFs", exists=True)],
    server: ServerOrEmbedded = None,
    key: Key = None,
    fmt: Annotated[
        str, typer.Option("--format", help="text, json, hocr or pdf (the pages with their text searchable)")
    ] = "text",
    out: Annotated[
        Path | None, typer.Option("--out", help="write <name>.<txt|json|hocr|pdf> here [default: stdout]")
    ] = None,
    lang: Annotated[str, typer.Option(help="Tesseract languages")] = "kor+eng",
    engine: Annotated[str, typer.Option(help="auto, tesseract or rapidocr")] = "auto",
    pages: Annotated[str | None, typer.Option(help='1-based pages, e.g. "1-3,5"')] = None,
    page_mode: Annotated[str, typer.Option(help="PDFs: auto, force or text-only")] = "auto",
    rotate_pages: Annotated[bool, typer.Option("--rotate-pages", help="turn pages upright before OCR")] = False,
    deskew: Annotated[bool, typer.Option("--deskew", help="level skewed pages before OCR")] = False,
    layout: Annotated[str, typer.Option(help="auto (columns and reading order), single_column or sparse")] = "auto",
    data_dir: DataDir = None,
) -> None:
    """OCR files through a server, or in-process on the embedded default (SQLite under --data-dir), with a
    progress bar per file and page. Exits 1 if any file failed."""
    if fmt not in SUFFIXES:
        err.print(f"--format must be text, json, hocr or pdf, not {fmt!r}")
        raise typer.Exit(2)
    files = list(dict.fromkeys(files))
    if fmt in BINARY and out is None and (sys.stdout.isatty() or len(files) > 1):
        why = "stdout is a terminal" if sys.stdout.isatty() else "one file per input"
        err.print(f"--format {fmt} is binary: pass --out DIR ({why})")
        raise typer.Exit(2)
    options = {"lang": lang, "engine": engine, "page_mode": page_mode, "layout": layout}
    options |= {"pages": pages} if pages else {}
    options |= {"rotate_pages": "true"} if rotate_pages else {}
    options |= {"deskew": "true"} if deskew else {}
    with api_client(server, key, data_dir) as client:
        failed = _ocr_files(client, files, options, fmt, out)
    if failed:
        raise typer.Exit(1)


def _ocr_files(client: httpx.Client, files: list[Path], options: dict[str, str], fmt: str, out: Path | None) -> int:
    """Submits every file, follows the jobs together, then prints or writes each result; returns how many
    files failed."""
    submitted: list[JobView] = []
    for path in files:
        with path.open("rb") as handle:
            submitted.append(call(client, "POST", "/api/v1/ocr", files={"file": (path.name, handle)}, data=options))
    with progress_bars() as progress:
        tasks = [progress.add_task(path.name, total=100) for path in files]
        jobs = follow_jobs(
            client,
            [job["id"] for job in submitted],
            lambda index, job: show_job_progress(progress, tasks[index], files[index].name, job),
        )
    failed = 0
    for path, job in zip(files, jobs, strict=True):
        if job.get("status") != "succeeded":
            failed += 1
            reason = (job.get("error") or {}).get("message") or job.get("status")
            err.print(f"{path}: {job.get('status')}: {reason}")
            continue
        _write_result(client, path, job, fmt, out)
    return failed


def _write_result(client: httpx.Client, path: Path, job: JobView, fmt: str, out: Path | None) -> None:
    """On stdout (text ending with a newline), or in `<out>/<name>.<suffix>`."""
    # A searchable PDF is made when asked for: a long document takes a while before its first byte.
    timeout = httpx.Timeout(30, read=RENDER_TIMEOUT_S) if fmt in BINARY else httpx.USE_CLIENT_DEFAULT
    response = client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": fmt}, timeout=timeout)
    response.raise_for_status()
    if out is None:
        if fmt in BINARY:
            sys.stdout.buffer.write(response.content)
            sys.stdout.flush()
        else:
            sys.stdout.write(response.text + ("\n" if not response.text.endswith("\n") else ""))
        return
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{path.stem}.{SUFFIXES[fmt]}"
    if fmt in BINARY:
        target.write_bytes(response.content)
    else:
        target.write_text(response.text, encoding="utf-8")
    err.print(f"{path} -> {target}")
