"""`serve`, `worker` and `db upgrade`: the processes and the schema they run on."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import signal
from typing import Annotated, Any

import typer

from inferline import db, logs
from inferline.cli.common import DatabaseUrl, DataDir, console, load_settings
from inferline.config import Settings
from inferline.private_paths import make_private_dir

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def serve(
    host: Annotated[str | None, typer.Option(help="[default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="[default: 8000]")] = None,
    workers: Annotated[int | None, typer.Option(help="in-process job slots, per API process [default: 4]")] = None,
    api_processes: Annotated[
        int | None, typer.Option(help="API processes sharing the port (more cores, more requests/s) [default: 1]")
    ] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="also serve the gRPC record stream on this port [default: off]")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the API and in-process workers (SQLite under --data-dir unless a database URL is given)."""
    import uvicorn

    from inferline.api.app import create_app

    settings = load_settings(
        host=host,
        port=port,
        workers=workers,
        api_processes=api_processes,
        grpc_port=grpc_port,
        data_dir=data_dir,
        database_url=database_url,
    )
    logs.configure(settings.log_level, json=settings.log_json)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 15,
    }
    if settings.api_processes == 1:
        uvicorn.run(create_app(settings, freeze_heap=True), **options)
        return
    # Several processes: migrate and make the first key here, once, then start them.
    from inferline.api import processes

    _prepare_data(settings)
    raise typer.Exit(processes.run(settings, settings.api_processes))


def _prepare_data(settings: Settings) -> None:
    from inferline.api.app import ensure_admin_key
    from inferline.bootstrap import build_services

    async def run() -> None:
        services = build_services(settings)
        try:
            await ensure_admin_key(services)
        finally:
            await services.aclose()

    make_private_dir(settings.data_dir)
    db.upgrade(settings.resolved_database_url)
    asyncio.run(run())


def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="job slots in this process")] = 4,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics on this port")] = None,
) -> None:
    """Run workers only, against the same database as the server (any number, on any machines)."""
    settings = load_settings(data_dir=data_dir, database_url=database_url, metrics_port=metrics_port)
    logs.configure(settings.log_level, json=settings.log_json)
    asyncio.run(_run_worker(settings, concurrency))


async def _run_worker(settings: Settings, concurrency: int) -> None:
    from prometheus_client import start_http_server

    from inferline import plugins
    from inferline.bootstrap import Background, build_services

    make_private_dir(settings.data_dir)
    db.upgrade(settings.resolved_database_url)
    services = build_services(settings)
    await plugins.create_tables(services.engine, services.plugins)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=services.metrics.registry)
    background = Background(services, concurrency)
    # What is loaded by now lives as long as the process (~156k objects): frozen, full collections stop
    # rescanning it, as in the API process (`create_app(freeze_heap=True)`). A drain promotes the jobs it
    # holds to the oldest generation fast enough for a full collection every second, ~100 ms each over
    # this heap unfrozen, ~3 ms frozen: a no-op job's CPU went from ~95 to ~79 µs (docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    # A job's objects live from its claim to its outcome's write, past 700 allocations (the default): the
    # youngest generation was collected ~40 times a second, each job's objects scanned and promoted several
    # times (~5 µs of a no-op job's CPU). Cycles are rare here; 10,000 objects wait for a collection at most.
    gc.set_threshold(10_000, 10, 10)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await background.start()
    try:
        await stop.wait()
    finally:
        await background.stop()
        await services.aclose()


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply schema migrations (serve and worker also do this at start)."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    make_private_dir(settings.data_dir)
    db.upgrade(settings.resolved_database_url)
    console.print(f"database at revision {db.head_revision()}")
