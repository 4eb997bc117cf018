"""A searchable PDF built by a process of its own, its memory and time bounded.

Laying the text over a PDF's pages loads each page with pdfium (`ocr.searchable`), and what loading a
page takes has no bound pdfium knows of (`ocr.pdf`): in the API process it would take that memory, and
hold the process's pdfium lock that every tenant's upload check waits for. So each build runs in a
spawned process with its data limit (`RLIMIT_DATA`) at what it holds plus `INFERLINE_OCR_PAGE_MEMORY_MB`
and a deadline; the PDF comes back as a file in the data directory's temporary folder, unlinked once
opened here.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

from inferline import memory
from inferline.errors import InvalidInput
from inferline.ocr.searchable import write_searchable_pdf
from inferline.private_paths import make_private_dir

BUILD_TIMEOUT_S = 600.0  # a thousand pages of a few hundred ms each, with room
_FILE_GONE = 3  # the child's exit status when the source file went away meanwhile


async def build_apart(
    source: Path,
    content_type: str,
    result: dict[str, Any],
    tmp_dir: Path,
    *,
    budget_bytes: int | None,
    timeout_s: float = BUILD_TIMEOUT_S,
) -> BinaryIO:
    """The searchable PDF of `result` (an OCR result of `source`), open at its start. FileNotFoundError
    when `source` is gone; InvalidInput (422, `format`) when the build needs more than `budget_bytes` or
    `timeout_s`."""
    make_private_dir(tmp_dir)
    fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".pdf.part")
    os.close(fd)
    try:
        context = multiprocessing.get_context("spawn")  # forking a process with threads and a loop is unsafe
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_build,
            args=(writer, str(source), content_type, result, name, str(tmp_dir), budget_bytes),
            name="searchable-pdf",
            daemon=True,
        )
        try:
            await asyncio.to_thread(process.start)  # spawning a Python: not on the event loop
            writer.close()
            await asyncio.wait_for(asyncio.to_thread(process.join), timeout_s)
            why = None
            if process.exitcode != 0:
                with contextlib.suppress(EOFError, OSError):  # EOF: it ended without a word
                    why = reader.recv() if reader.poll() else None
        except TimeoutError:
            raise InvalidInput(
                f"the searchable PDF took over {timeout_s:.0f} s to build; the job's other formats are available",
                field="format",
            ) from None
        finally:
            if process.is_alive():  # a deadline, or the caller went away
                process.kill()
                await asyncio.to_thread(process.join, 5)
            writer.close()
            reader.close()
        _raise_for(process.exitcode, why, budget_bytes)
        return await asyncio.to_thread(_open, name)
    finally:
        os.unlink(name)  # an open file stays readable: nothing is left behind


def _open(name: str) -> BinaryIO:
    return open(name, "rb")  # the caller sends and closes it


def _raise_for(exitcode: int | None, why: str | None, budget_bytes: int | None) -> None:
    if exitcode == 0:
        return
    if exitcode == _FILE_GONE:
        raise FileNotFoundError("the OCR job's input file is gone")
    if exitcode == -signal.SIGABRT:  # pdfium gives up on an allocation past the budget
        budget = f" within {budget_bytes // 2**20} MB (INFERLINE_OCR_PAGE_MEMORY_MB)" if budget_bytes else ""
        raise InvalidInput(
            f"the searchable PDF could not be built{budget}: a page of the file takes more to load "
            "(a decompression bomb, or forms nested to billions of objects); the job's other formats are available",
            field="format",
        )
    raise RuntimeError(f"the searchable PDF's build failed: {why or f'its process ended with {exitcode}'}")


def _build(
    why: Connection,
    source: str,
    content_type: str,
    result: dict[str, Any],
    out_path: str,
    tmp_dir: str,
    budget_bytes: int | None,
) -> None:
    """The spawned process's whole life: this build, then exit (status `_FILE_GONE` when the file went)."""
    memory.allow_budgets()  # this process does nothing else: its whole data is what the budget bounds
    try:
        with memory.budget(budget_bytes), open(out_path, "wb") as out:
            write_searchable_pdf(Path(source), content_type, result, out, tmp_dir=Path(tmp_dir))
    except FileNotFoundError:
        os._exit(_FILE_GONE)
    except Exception as exc:
        with contextlib.suppress(OSError):
            why.send(f"{type(exc).__name__}: {exc}")
        os._exit(1)
