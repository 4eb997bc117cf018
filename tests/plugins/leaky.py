"""Failures the way a library makes them: their text holds a path and SQL (`tests.plugins.leaky`).

- kind `leak` raises a RuntimeError with that text;
- `GET /api/v1/leaky/model` raises a ModelError wrapping it (an error of ours with no HTTP status);
- model `broken` fails to load: its weights are not at LEAKED_WEIGHTS.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from inferline.errors import ModelError
from inferline.inference.model import Model
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry

LEAKED_PATH = "/srv/inferline/data/inferline.db"
LEAKED_SQL = "SELECT webhook_secret FROM tenants WHERE name = 'default'"
LEAKED = f"{LEAKED_PATH}: {LEAKED_SQL}: database is locked"
LEAKED_WEIGHTS = "/srv/inferline/models/broken.onnx"

router = APIRouter(prefix="/leaky")


async def leak(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError(LEAKED)


@router.get("/model")
async def model_failure() -> dict[str, Any]:
    raise ModelError(f"model e5-small failed to load: OperationalError: {LEAKED}")


def register(registry: KindRegistry) -> None:
    registry.kind("leak")(leak)


class Broken(Model[int, int]):
    name = "broken"

    def setup(self, device: str) -> None:
        raise FileNotFoundError(2, "No such file or directory", LEAKED_WEIGHTS)


def register_models(runtime: ModelRuntime) -> None:
    runtime.register("broken", Broken)
