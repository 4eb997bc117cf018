"""A bound on the memory one call may take, for native code that cannot be told its own (pdfium).

A PDF page of a few kilobytes can make pdfium allocate without end: a form drawing another form twice,
forty forms deep, parses into 2**40 objects; a one-pixel image's soft mask 40,000 pixels square is 1.6 GB.
Nothing in pdfium's API bounds either, so the page is read where the process's data limit
(`RLIMIT_DATA`, which counts every private writable mapping, malloc's and mmap's alike) can be lowered
for the call: past it pdfium leaves an image out, or aborts the process (a failed allocation while it
parses). That is only safe where nothing else allocates meanwhile: a model's own process
(`inference.runners`), which answers one batch at a time on one thread. Elsewhere (the API process,
a model on a thread) `budget` does nothing.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager

_allowed = False


def allow_budgets() -> None:
    """Called once by a model's process as it starts: from now on `budget` bounds this process."""
    global _allowed
    _allowed = True


def budgets_allowed() -> bool:
    return _allowed


def data_bytes() -> int | None:
    """The process's data size now (VmData), or None where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextmanager
def budget(extra_bytes: int | None) -> Iterator[None]:
    """While inside, the process may map at most `extra_bytes` more data than on entry (its soft limit,
    restored on exit; never above the hard limit). Nothing where budgets are not allowed or
    `extra_bytes` is None."""
    if not _allowed or extra_bytes is None or (now := data_bytes()) is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = now + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
