"""An app with its lifespan running, and clients for two tenants."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.helpers import eventually

from inferline.api.app import create_app
from inferline.bootstrap import Services
from inferline.config import Settings
from inferline.jobs.model import TERMINAL_STATUSES
from inferline.tenants import create_key


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient  # tenant "default" (the key made on first start)
    other: httpx.AsyncClient  # tenant "other"
    anonymous: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def submit(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/api/v1/jobs", json={"kind": "echo"} | body)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    async def wait(self, job_id: str, done: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        async def current() -> dict[str, Any]:
            job: dict[str, Any] = (await self.client.get(f"/api/v1/jobs/{job_id}")).json()
            return job

        until = done or (lambda job: job["status"] in TERMINAL_STATUSES)
        # A bound that catches a stuck job, not a speed check: on 2 cores busy with the whole suite,
        # Tesseract's processes and the database, one step of a job took over 10 s (a run on 2026-12-03).
        return await eventually(current, until, timeout_s=30, interval_s=0.02, describe=lambda job: f"job stuck: {job}")


MakeApi = Callable[..., AbstractAsyncContextManager[Api]]


@asynccontextmanager
async def _serve(settings: Settings, workers: int) -> AsyncIterator[Api]:
    app = create_app(settings, workers=workers)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        admin_key = (settings.data_dir / "admin.key").read_text().strip()
        _, other_key = await create_key(services.engine, "other")
        transport = httpx.ASGITransport(app=app)

        def client(key: str | None) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)

        async with client(admin_key) as admin, client(other_key) as other, client(None) as anonymous:
            yield Api(app, admin, other, anonymous)


@pytest.fixture
def make_api(make_settings: Callable[..., Settings]) -> MakeApi:
    """`async with make_api(workers=2, **settings) as api`: the app running on `make_settings(**settings)`
    with `workers` in-process job slots, stopped when the block ends. Started again with the same
    settings, it is the same server restarted (same data dir and database)."""

    def make(*, workers: int = 2, **settings: Any) -> AbstractAsyncContextManager[Api]:
        return _serve(make_settings(**settings), workers)

    return make


@pytest.fixture
async def api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    """API with two in-process job slots."""
    async with make_api(database_url=database_url, plugins=["tests.plugins.kinds"]) as started:
        yield started


@pytest.fixture
async def idle_api(make_api: MakeApi) -> AsyncIterator[Api]:
    """API on SQLite with no workers: jobs stay queued."""
    async with make_api(workers=0, plugins=["tests.plugins.kinds"]) as started:
        yield started
