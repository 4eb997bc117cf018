"""Log lines go to the process's stderr as it is when they are written."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from inferline import logs


def test_a_logger_cached_while_stderr_was_lent_writes_to_the_stderr_of_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI run inside another program (a test's runner) configures the logs while its stderr is lent,
    then closes that stream: a module's logger cached meanwhile wrote to the closed stream ever after
    (`ValueError: I/O operation on closed file` in a later job's warning)."""
    lent, later = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", lent)
    logs.configure("info", json=True)
    log = structlog.get_logger("tests.cached")
    log.info("while_lent")
    lent.close()
    monkeypatch.setattr(sys, "stderr", later)
    log.warning("after")
    assert '"event": "after"' in later.getvalue()
