"""The ASGI application: `create_app(settings)` builds services in its lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import APIRouter, FastAPI

from inferline import __version__, db, plugins
from inferline.api import problems
from inferline.api.admission import Admission
from inferline.api.graphql import endpoint as graphql
from inferline.api.middleware import RequestContext
from inferline.api.routes import (
    batches,
    collections,
    engine_only,
    events,
    files,
    health,
    jobs,
    media,
    models,
    monitor,
    ocr,
    schedules,
    webhooks,
)
from inferline.bootstrap import Background, MonitorLoops, Services, build_services
from inferline.config import Settings
from inferline.private_paths import make_private_dir
from inferline.search import query as search_query
from inferline.tenants import count_keys, create_key

log = structlog.get_logger(__name__)


async def ensure_admin_key(services: Services) -> str | None:
    """On first start, make a key for tenant `default`, print it once and keep it in `admin.key`."""
    if await count_keys(services.engine):
        return None
    _, plain = await create_key(services.engine, "default")
    path = make_private_dir(Path(services.settings.data_dir)) / "admin.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(plain + "\n")
    # stderr: a command that prints results on stdout (`inferline ocr`) may be the one starting the app.
    print(f"Created API key for tenant 'default' (saved in {path}):\n  {plain}", file=sys.stderr, flush=True)
    return plain


async def _start_grpc(services: Services) -> Callable[[], Awaitable[None]]:
    """The gRPC record stream on `grpc_port`, when set (grpc is imported only then); returns its stop."""
    settings = services.settings
    if settings.grpc_port is None:
        return _nothing
    from inferline.records.grpc import ServerLimits, ServerTls, start_server

    limits = ServerLimits(max_message_bytes=settings.grpc_max_message_bytes, max_streams=settings.grpc_max_streams)
    try:
        tls = None
        if settings.grpc_tls_cert_file is not None and settings.grpc_tls_key_file is not None:
            tls = ServerTls(settings.grpc_tls_cert_file.read_bytes(), settings.grpc_tls_key_file.read_bytes())
        server, _ = await start_server(
            services.records, services.auth, limits, settings.host, settings.grpc_port, tls=tls
        )
    except BaseException:  # the port is taken: the start ends here, its services closed
        await services.aclose()
        raise

    async def stop() -> None:
        await server.stop(grace=5)  # streams get 5 s to finish their commit and send its acks

    return stop


async def _start_loops(services: Services, slots: int) -> Callable[[], Awaitable[None]]:
    """The background loops of `slots` worker slots; without slots, the monitor's alone (Background runs
    it otherwise). Returns their stop."""
    if slots > 0:
        background = Background(services, slots)
        await background.start()
        return background.stop
    if services.settings.monitor_enabled:
        monitoring = MonitorLoops(services.monitor)
        await monitoring.start()
        return monitoring.stop
    return _nothing


async def _nothing() -> None:
    return None


def _api_routers(settings: Settings) -> list[APIRouter]:
    """The routes under /api/v1, the plugins' last. On MariaDB/MySQL, the workloads' routes are replaced
    by the router that refuses them (`routes/engine_only.py`).

    Routes are tried in order, each at a cost (~2 µs), so the cheapest and most frequent requests come
    first: a cached search (~0.4 ms of CPU), then job submissions and reads (~0.6 ms)."""
    core = [schedules.router, models.router, webhooks.router]
    if settings.is_mysql:
        first, workloads = [], [engine_only.router]
    else:
        first, workloads = [collections.router], [area.router for area in (files, ocr, media, batches)]
        core.append(monitor.router)
    plugin_routers = plugins.routers(plugins.load(settings.plugins))
    return [*first, jobs.router, *workloads, *core, events.router, *plugin_routers]


def _graphql_router(settings: Settings) -> APIRouter:
    if settings.is_mysql:
        return engine_only.graphql_router
    return graphql.router(ide=settings.graphql_ide, max_body_bytes=settings.max_request_bytes)


def create_app(settings: Settings | None = None, *, workers: int | None = None, freeze_heap: bool = False) -> FastAPI:
    """The API, plus `workers` in-process job slots (default: `settings.workers`). `freeze_heap`: for a
    process that serves this one app (`inferline serve`), not for tests that build many."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        make_private_dir(settings.data_dir)
        if settings.migrate_on_start:
            db.upgrade(settings.resolved_database_url)
        services = build_services(settings)
        app.state.services = services
        if settings.migrate_on_start:
            await plugins.create_tables(services.engine, services.plugins)
        await ensure_admin_key(services)
        stop_grpc = await _start_grpc(services)  # first: a port in use stops the start before any loop runs
        slots = settings.workers if workers is None else workers
        stop_loops = await _start_loops(services, slots)
        log.info("started", database=services.engine.dialect.name, workers=slots)
        warming = asyncio.create_task(search_query.warm_up(services.search))
        # What is loaded by now lives as long as the process; frozen, the collector stops rescanning it on
        # every full collection (measured at 100k chunks: 75-93 ms per full collection, one of every ~200
        # searches waiting for it; 6.5 ms frozen).
        if freeze_heap:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await warming
            await stop_grpc()
            await stop_loops()
            await services.aclose()

    app = FastAPI(
        title="inferline",
        version=__version__,
        lifespan=lifespan,
        description="AI inference as durable jobs. Authenticate with `Authorization: Bearer <key>`.",
        # Requests get their spans, metrics and logs from `RequestContext`, on the tracer `tracing.py`
        # configures. FastAPI's own would add a second set wherever a global OpenTelemetry provider is
        # installed, and checks for one on every request (~3% of a job submission's CPU).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    problems.install(app)
    # Each router is included at the top, not inside one /api/v1 router: FastAPI tries a nested router's
    # routes again when it hands it the request, so nesting matched every route ahead of the chosen one
    # twice (134 µs of a job submission's ~670 µs of CPU, measured; 71 µs flat).
    for router in _api_routers(settings):
        app.include_router(router, prefix="/api/v1")
    app.include_router(_graphql_router(settings))
    app.include_router(health.router)
    app.add_middleware(Admission, max_body_bytes=settings.max_request_bytes, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestContext)  # the outer one: its logs and metrics see what Admission refuses
    return app
