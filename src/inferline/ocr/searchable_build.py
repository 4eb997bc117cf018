"""A searchable PDF built by a process of its own, its memory and time bounded.

Laying the text over a PDF's pages loads each page with pdfium (`ocr.searchable`), and what loading a
page takes has no bound pdfium knows of (`ocr.pdf`): in the API process it would take that memory, and
hold the process's pdfium lock that every tenant's upload check waits for. So each build runs in a
spawned process with its data limit (`RLIMIT_DATA`) at what it holds plus `INFERLINE_OCR_PAGE_MEMORY_MB`
and a deadline. It writes the PDF into a file of the data directory's temporary folder that this process
opened first and reads back through its own descriptor (the name is unlinked at the end, and a sweep of
the folder meanwhile takes nothing this process holds).
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
from inferline.threads import to_thread

BUILD_TIMEOUT_S = 600.0  # a thousand pages of a few hundred ms each, with room
# The child's exit statuses besides 0: the source file went away meanwhile; an allocation refused.
_FILE_GONE = 3
_OUT_OF_BUDGET = 4
_MAX_WHY_CHARS = 2000  # a pipe's write of more could block the child while this process waits for it


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
    `timeout_s`. The build's process is stopped and reaped on every way out, a cancel included."""
    make_private_dir(tmp_dir)
    fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".pdf.part")
    out: BinaryIO = os.fdopen(fd, "rb")
    try:
        exitcode, why = await _run_child(source, content_type, result, name, tmp_dir, budget_bytes, timeout_s)
        _raise_for(exitcode, why, budget_bytes)
    except BaseException:
        out.close()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):  # this process's descriptor keeps the file readable
            os.unlink(name)
    return out


async def _run_child(
    source: Path,
    content_type: str,
    result: dict[str, Any],
    out_path: str,
    tmp_dir: Path,
    budget_bytes: int | None,
    timeout_s: float,
) -> tuple[int | None, str | None]:
    context = multiprocessing.get_context("spawn")  # forking a process with threads and a loop is unsafe
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_build,
        args=(writer, str(source), content_type, result, out_path, str(tmp_dir), budget_bytes),
        name="searchable-pdf",
        daemon=True,
    )
    # Spawning a Python is not for the event loop; a cancel must not leave the start half done (the
    # process running on, unseen by `is_alive`), so the start is waited for on every way out.
    start = asyncio.ensure_future(to_thread(process.start))
    try:
        await asyncio.shield(start)
        writer.close()
        try:
            await asyncio.wait_for(to_thread(process.join), timeout_s)
        except TimeoutError:
            raise InvalidInput(
                f"the searchable PDF took over {timeout_s:.0f} s to build; the job's other formats are available",
                field="format",
            ) from None
        why = None
        if process.exitcode != 0:
            with contextlib.suppress(EOFError, OSError):  # EOF: it ended without a word
                why = reader.recv() if reader.poll() else None
        return process.exitcode, why
    finally:
        with contextlib.suppress(BaseException):
            await asyncio.shield(start)
        writer.close()
        reader.close()
        if process.is_alive():  # a deadline, or the caller went away
            process.kill()
        if process.pid is not None:
            await asyncio.shield(to_thread(process.join, 5))


def _raise_for(exitcode: int | None, why: str | None, budget_bytes: int | None) -> None:
    if exitcode == 0:
        return
    if exitcode == _FILE_GONE:
        raise FileNotFoundError("the OCR job's input file is gone")
    if exitcode in (-signal.SIGABRT, _OUT_OF_BUDGET):  # pdfium gives up on an allocation past the budget
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
    """The spawned process's whole life: this build, then exit (`_FILE_GONE`, `_OUT_OF_BUDGET`, 1)."""
    memory.allow_budgets()  # this process does nothing else: its whole data is what the budget bounds
    try:
        with memory.budget(budget_bytes), open(out_path, "wb") as out:
            write_searchable_pdf(Path(source), content_type, result, out, tmp_dir=Path(tmp_dir))
    except FileNotFoundError as exc:
        if exc.filename is None or os.fspath(exc.filename) == source:  # pdfium's and Pillow's opening
            os._exit(_FILE_GONE)
        _tell(why, exc)
        os._exit(1)
    except MemoryError:
        os._exit(_OUT_OF_BUDGET)
    except Exception as exc:
        _tell(why, exc)
        os._exit(1)


def _tell(why: Connection, exc: BaseException) -> None:
    with contextlib.suppress(OSError):
        why.send(f"{type(exc).__name__}: {exc}"[:_MAX_WHY_CHARS])
