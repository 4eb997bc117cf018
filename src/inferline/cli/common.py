"""What every command group shares: consoles, option types, settings, the HTTP client of a server (or of the
app embedded in this process), tables, progress bars and following jobs on their event streams."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from inferline import logs
from inferline.config import Settings

console = Console()
err = Console(stderr=True)

DEFAULT_SERVER = "http://127.0.0.1:8000"

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="SQLite file, blobs and keys [default: ./data]")]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="e.g. postgresql://user@host/db [default: SQLite]")
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
# Typer takes a default only from the parameter (`server: Server = DEFAULT_SERVER`), never from Annotated.
Server = Annotated[str, typer.Option("--server", envvar="INFERLINE_SERVER", help="server base URL")]
ServerOrEmbedded = Annotated[
    str | None,
    typer.Option("--server", envvar="INFERLINE_SERVER", help="a running server [default: in-process, embedded]"),
]
Key = Annotated[
    str | None,
    typer.Option("--key", envvar="INFERLINE_API_KEY", help="API key [default: <data-dir>/admin.key]"),
]

JobView = dict[str, Any]


def load_settings(**overrides: Any) -> Settings:
    """Environment first, flags on top (only the flags the user gave)."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def print_rows(rows: list[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*[str(row.get(column) if row.get(column) is not None else "") for column in columns])
    console.print(table)


# -- HTTP -----------------------------------------------------------------------------------------


def api_key(key: str | None, data_dir: Path | None = None) -> str:
    """`key`, or the one `serve` saved in the data dir; exits 2 without either."""
    if key is not None:
        return key
    path = (data_dir or load_settings().data_dir) / "admin.key"
    if not path.exists():
        err.print(f"no API key: pass --key, set INFERLINE_API_KEY, or run `serve` once to create {path}")
        raise typer.Exit(2)
    return path.read_text().strip()


def open_client(server: str, key: str | None, data_dir: Path | None = None) -> httpx.Client:
    key = api_key(key, data_dir)
    return httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=30)


def call(client: httpx.Client, method: str, url: str, **kwargs: Any) -> Any:
    """The response's JSON; an unreachable server or an error status is printed and exits 1."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        err.print(f"cannot reach {client.base_url}: {exc}")
        raise typer.Exit(1) from exc
    if response.is_error:
        err.print(f"error {response.status_code}: {error_detail(response)}")
        raise typer.Exit(1)
    return response.json()


def error_detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


@contextlib.contextmanager
def api_client(server: str | None, key: str | None, data_dir: Path | None) -> Iterator[httpx.Client]:
    """A client of the given server, or of the app started in-process on the embedded default."""
    if server is not None:
        with open_client(server, key, data_dir) as client:
            yield client
        return
    settings = load_settings(data_dir=data_dir)
    logs.configure("warning", json=settings.log_json)
    with _embedded_server(settings) as url, open_client(url, key, settings.data_dir) as client:
        yield client


@contextlib.contextmanager
def _embedded_server(settings: Settings) -> Iterator[str]:
    """The app on a free local port, on a thread of this process, for commands that run in-process;
    yields its base URL."""
    import uvicorn

    from inferline.api.app import create_app

    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="embedded-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                err.print("the embedded server did not start (see the log above)")
                raise typer.Exit(1)
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def ctrl_c_remembered() -> Iterator[threading.Event]:
    """An event set when Python drops a Ctrl-C. Its KeyboardInterrupt is raised wherever the main thread is
    when the signal comes; where nothing can take an exception (a weakref callback, a `__del__`: an import's
    module lock, an object collected), it is printed as "ignored" and the command runs on as if Ctrl-C had
    not been pressed (seen once in the suite: a video's run never canceled). Code that must not miss it
    checks the event at its safe points; the Ctrl-C that raises as it should is handled as before."""
    pressed = threading.Event()
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            pressed.set()
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield pressed
    finally:
        sys.unraisablehook = previous


# -- progress and jobs ----------------------------------------------------------------------------


def progress_bars(transient: bool = False) -> Progress:
    """Bars on stderr, so that stdout holds only the command's output."""
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn()]
    return Progress(*columns, console=err, transient=transient)


def show_job_progress(progress: Progress, task: TaskID, name: str, job: JobView) -> None:
    """The bar at the job's progress, named `name · stage`."""
    stage = f" · {job['stage']}" if job.get("stage") else ""
    progress.update(task, completed=job["progress"], description=f"{name}{stage}")


def follow_jobs(
    client: httpx.Client, job_ids: Sequence[str], on_event: Callable[[int, JobView], None]
) -> list[JobView]:
    """Follows the jobs on their event streams, all at once, until each ends, calling `on_event(index, job)`
    with the whole job at every event. Returns each job as last seen (ended, unless it was deleted).
    A stream that cannot be opened is printed and exits 1."""
    return asyncio.run(_follow_all(client, job_ids, on_event))


async def _follow_all(
    client: httpx.Client, job_ids: Sequence[str], on_event: Callable[[int, JobView], None]
) -> list[JobView]:
    # The streams share one event loop on this thread, so Ctrl-C cancels each and closes its connection
    # (a thread blocked in a read would keep it open, and the embedded server would wait for it at exit).
    # A stream is silent while its job's stage lasts, so reads never time out; streams beyond the pool's
    # connections wait for one of them to end.
    timeout = httpx.Timeout(30, read=None, pool=None)
    async with httpx.AsyncClient(base_url=client.base_url, headers=client.headers, timeout=timeout) as events:
        tasks = [
            asyncio.create_task(_follow(events, job_id, functools.partial(on_event, index)))
            for index, job_id in enumerate(job_ids)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _follow(events: httpx.AsyncClient, job_id: str, on_event: Callable[[JobView], None]) -> JobView:
    """Reconnects, from the last event's id, when the server ends a stream before the job ends (its
    lifetime) or has no stream slot for now (429: after its Retry-After)."""
    job: JobView = {}
    last_id: str | None = None
    try:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            async with events.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers) as response:
                if response.status_code == 429:
                    await asyncio.sleep(_retry_after_s(response))
                    continue
                if response.is_error:
                    await response.aread()
                    err.print(f"error {response.status_code}: {error_detail(response)}")
                    raise typer.Exit(1)
                ended = False
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        last_id = line[4:]
                    elif line.startswith("data: "):
                        job = json.loads(line[6:])
                        on_event(job)
                    elif line.startswith("retry: "):
                        ended = True  # the lifetime passed; the job has not ended
            if not ended:
                return job
    except httpx.HTTPError as exc:
        err.print(f"cannot reach {events.base_url}: {exc}")
        raise typer.Exit(1) from exc


def _retry_after_s(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.1), 60.0)
    except ValueError:
        return 1.0
