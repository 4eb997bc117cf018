"""What a job's code returns, checkpoints or reports that PostgreSQL cannot store (U+0000, a lone UTF-16
surrogate, NaN, bytes) fails that job with the reason, or is shown with U+FFFD in its place (stages,
details, error texts); it never fails the batched write of every job's outcome or progress, nor leaves a
job stuck."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.api.conftest import Api, MakeApi

FFFD = "\ufffd"


@pytest.fixture
async def api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    async with make_api(database_url=database_url, workers=4, plugins=["tests.plugins.unstorable"]) as started:
        yield started


async def run(api: Api, what: str) -> dict[str, Any]:
    job = await api.submit(kind="unstorable", input={"what": what}, max_attempts=3)
    return await api.wait(job["id"])


@pytest.mark.parametrize(
    ("what", "where"),
    [
        ("result", "result.pages.0.text: holds the character U+0000 (NUL)"),
        ("key", "result: has a key with the character U+0000 (NUL)"),
        ("surrogate", "result.pages.0.text: holds a lone UTF-16 surrogate"),
        ("nan", "result: holds NaN or Infinity"),
        ("bytes", "result: not JSON"),
        ("checkpoint", "checkpoint.pages.1: holds the character U+0000 (NUL)"),
    ],
)
async def test_an_unstorable_result_or_checkpoint_fails_its_job_at_once_with_the_reason(
    api: Api, what: str, where: str
) -> None:
    done, neighbour = await asyncio.gather(run(api, what), run(api, "nothing"))
    assert done["status"] == "failed" and len(done["error"]["attempts"]) == 1, done
    assert where in done["error"]["message"]
    assert done["result"] is None
    assert neighbour["status"] == "succeeded" and neighbour["result"] == {"ok": True}


async def test_stages_details_and_error_texts_keep_going_with_the_nul_replaced(api: Api) -> None:
    detailed, failed = await asyncio.gather(run(api, "detail"), run(api, "error"))
    assert detailed["status"] == "succeeded" and detailed["result"] == {"ok": True}
    assert detailed["stage"] == f"read{FFFD}" and detailed["detail"] == f"half{FFFD}"
    assert failed["status"] == "failed" and failed["error"]["message"] == f"the file holds a NUL: {FFFD}"
    assert failed["detail"] == f"the file holds a NUL: {FFFD}"


async def test_stages_details_and_error_texts_keep_going_with_a_lone_surrogate_replaced(api: Api) -> None:
    detailed, failed = await asyncio.gather(run(api, "surrogate_detail"), run(api, "surrogate_error"))
    assert detailed["status"] == "succeeded" and detailed["result"] == {"ok": True}
    assert detailed["stage"] == f"read{FFFD}" and detailed["detail"] == f"half{FFFD}"
    assert failed["status"] == "failed" and failed["error"]["message"] == f"the file holds a surrogate: {FFFD}"


@pytest.mark.mariadb_too
async def test_stages_details_and_error_texts_longer_than_their_columns_are_cut_to_fit(api: Api) -> None:
    """A stage over the 200 characters of its column, a detail or an error text over the 64 KiB MariaDB's
    TEXT holds: written whole, they were refused, and the job (with every job written with it) stayed
    running."""
    detailed, failed, neighbour = await asyncio.gather(run(api, "long"), run(api, "long_error"), run(api, "nothing"))
    assert detailed["status"] == "succeeded" and detailed["stage"] == "s" * 199 + "…"
    assert detailed["detail"] == "\U0001f600" * 9_999 + "…"
    assert failed["status"] == "failed" and failed["error"]["message"] == "e" * 9_999 + "…" == failed["detail"]
    assert neighbour["status"] == "succeeded"
