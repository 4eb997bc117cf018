"""An app with its lifespan running, and clients for two tenants."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

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
        done = done or (lambda job: job["status"] in TERMINAL_STATUSES)
        deadline = time.monotonic() + 10
        while True:
            job: dict[str, Any] = (await self.client.get(f"/api/v1/jobs/{job_id}")).json()
            if done(job):
                return job
            assert time.monotonic() < deadline, f"job stuck: {job}"
            await asyncio.sleep(0.02)


async def start_api(settings: Settings, workers: int) -> AsyncGenerator[Api, None]:
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
async def api(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Api]:
    """API with two in-process job slots."""
    settings = make_settings(database_url=database_url, plugins=["tests.plugins.kinds"])
    async for value in start_api(settings, workers=2):
        yield value


@pytest.fixture
async def idle_api(make_settings: Callable[..., Settings], tmp_path: Any) -> AsyncIterator[Api]:
    """API on SQLite with no workers: jobs stay queued."""
    settings = make_settings(plugins=["tests.plugins.kinds"])
    async for value in start_api(settings, workers=0):
        yield value
