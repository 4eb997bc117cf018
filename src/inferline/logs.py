"""Structured logs: JSON lines with request_id, job_id and tenant bound from context variables, and the
trace_id and span_id of the span they are written in (tracing.py)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog

from inferline.tracing import trace_ids

# What each line carries of where it was written: the bound ids (request_id, job_id, tenant), the trace.
CONTEXT: list[structlog.typing.Processor] = [structlog.contextvars.merge_contextvars, trace_ids]


class _Stderr:
    """The process's stderr as it is when a line is written. Loggers are cached on first use: one made
    while a CLI ran inside another program (a test's runner, which closes the stream it lent) would
    otherwise keep writing to that closed stream ever after."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", *, json: bool = True) -> None:
    processors: list[structlog.typing.Processor] = [
        *CONTEXT,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Stderr())),
        cache_logger_on_first_use=True,
    )
