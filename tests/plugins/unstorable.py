"""A job kind whose outputs PostgreSQL cannot store as they are (`tests.plugins.unstorable`): input `what`
picks which output holds U+0000 (NUL), a lone UTF-16 surrogate, NaN or bytes."""

from __future__ import annotations

from typing import Any

from inferline.errors import NonRetryable
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry

NUL = chr(0)
LONE = chr(0xD800)  # a lone UTF-16 surrogate, as a JSON escape or a careless decoder leaves in a str


async def unstorable(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    what = data["what"]
    if what == "detail":
        await ctx.stage("read" + NUL, detail="page" + NUL + "1")
        await ctx.progress(50, detail="half" + NUL)
    if what == "checkpoint":
        await ctx.checkpoint({"pages": ["one", "t" + NUL + "wo"]})
    if what == "surrogate_detail":
        await ctx.stage("read" + LONE)
        await ctx.progress(50, detail="half" + LONE)
    if what == "error":
        raise NonRetryable("the file holds a NUL: " + NUL)
    if what == "surrogate_error":
        raise NonRetryable("the file holds a surrogate: " + LONE)
    if what == "long":  # more than the columns hold: a stage of 200 characters, a detail of 64 KiB on MariaDB
        await ctx.stage("s" * 300, detail="d" * 20_000)
        await ctx.progress(50, detail="\U0001f600" * 20_000)
    if what == "long_error":
        raise NonRetryable("e" * 70_000)
    results: dict[str, Any] = {
        "result": {"pages": [{"text": "a" + NUL + "b"}]},
        "key": {"a" + NUL: 1},
        "surrogate": {"pages": [{"text": "a" + LONE + "b"}]},
        "nan": {"score": float("nan")},
        "bytes": {"raw": b"\x00"},
    }
    return results.get(what, {"ok": True})


def register(registry: KindRegistry) -> None:
    registry.kind("unstorable")(unstorable)
