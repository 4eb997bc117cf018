"""The `inferline` command: thin calls into the server, the worker and the use cases."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from inferline import db, logs, tenants
from inferline.config import Settings

app = typer.Typer(help="inferline: AI inference as durable jobs.", no_args_is_help=True)
jobs_app = typer.Typer(help="Submit and follow jobs on a running server.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (talks to the database directly).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
console = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="SQLite file, blobs and keys [default: ./data]")]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="e.g. postgresql://user@host/db [default: SQLite]")
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
ServerOrEmbedded = Annotated[
    str | None,
    typer.Option("--server", envvar="INFERLINE_SERVER", help="a running server [default: in-process, embedded]"),
]


def _settings(**overrides: Any) -> Settings:
    """Environment first, flags on top (only the flags the user gave)."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="[default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="[default: 8000]")] = None,
    workers: Annotated[int | None, typer.Option(help="in-process job slots, per API process [default: 4]")] = None,
    api_processes: Annotated[
        int | None, typer.Option(help="API processes sharing the port (more cores, more requests/s) [default: 1]")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the API and in-process workers (SQLite under --data-dir unless a database URL is given)."""
    import uvicorn

    from inferline.api.app import create_app

    settings = _settings(
        host=host, port=port, workers=workers, api_processes=api_processes, data_dir=data_dir, database_url=database_url
    )
    logs.configure(settings.log_level, json=settings.log_json)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 15,
    }
    if settings.api_processes == 1:
        uvicorn.run(create_app(settings, freeze_heap=True), **common)
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

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db.upgrade(settings.resolved_database_url)
    asyncio.run(run())


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="job slots in this process")] = 4,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics on this port")] = None,
) -> None:
    """Run workers only, against the same database as the server (any number, on any machines)."""
    settings = _settings(data_dir=data_dir, database_url=database_url, metrics_port=metrics_port)
    logs.configure(settings.log_level, json=settings.log_json)
    asyncio.run(_run_worker(settings, concurrency))


async def _run_worker(settings: Settings, concurrency: int) -> None:
    from prometheus_client import start_http_server

    from inferline.bootstrap import Background, build_services

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db.upgrade(settings.resolved_database_url)
    services = build_services(settings)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, registry=services.metrics.registry)
    background = Background(services, concurrency)
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
    settings = _settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db.upgrade(settings.resolved_database_url)
    console.print(f"database at revision {db.head_revision()}")


# -- keys -------------------------------------------------------------------------------------


def _with_engine(settings: Settings, func: Any) -> Any:
    async def run() -> Any:
        engine = db.create_engine(settings.resolved_database_url, pool_size=1)
        try:
            return await func(engine)
        finally:
            await engine.dispose()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db.upgrade(settings.resolved_database_url)
    return asyncio.run(run())


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for (created if new)")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Create an API key; the key is printed once and stored only as a hash."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    key, plain = _with_engine(settings, lambda engine: tenants.create_key(engine, tenant))
    if as_json:
        console.print_json(json.dumps({"id": key.id, "tenant": key.tenant, "key": plain}))
    else:
        console.print(f"key {key.id} for tenant {key.tenant!r} (shown once):\n{plain}")


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """List keys (their prefixes, never the keys)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    keys = _with_engine(settings, lambda engine: tenants.list_keys(engine, tenant))
    rows = [
        {
            "id": k.id,
            "tenant": k.tenant,
            "prefix": k.prefix,
            "created_at": k.created_at.isoformat(),
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        }
        for k in keys
    ]
    _print_rows(rows, as_json, ["id", "tenant", "prefix", "created_at", "revoked_at"])


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a key by id (servers stop accepting it within `api_key_cache_s`)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _with_engine(settings, lambda engine: tenants.revoke_key(engine, key_id))
    console.print(f"revoked {key_id}")


def _print_rows(rows: list[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*[str(row.get(column) if row.get(column) is not None else "") for column in columns])
    console.print(table)


# -- jobs (HTTP client) -----------------------------------------------------------------------

Server = Annotated[str, typer.Option("--server", envvar="INFERLINE_SERVER", help="server base URL")]
Key = Annotated[
    str | None,
    typer.Option("--key", envvar="INFERLINE_API_KEY", help="API key [default: <data-dir>/admin.key]"),
]


def _client(server: str, key: str | None, data_dir: Path | None = None) -> httpx.Client:
    if key is None:
        path = (data_dir or _settings().data_dir) / "admin.key"
        if not path.exists():
            err.print(f"no API key: pass --key, set INFERLINE_API_KEY, or run `serve` once to create {path}")
            raise typer.Exit(2)
        key = path.read_text().strip()
    return httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _call(client: httpx.Client, method: str, url: str, **kwargs: Any) -> Any:
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        err.print(f"cannot reach {client.base_url}: {exc}")
        raise typer.Exit(1) from exc
    if response.is_error:
        err.print(f"error {response.status_code}: {_detail(response)}")
        raise typer.Exit(1)
    return response.json()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


def _show_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(job))
        return
    table = Table(show_header=False)
    for field in (
        "id",
        "kind",
        "status",
        "stage",
        "progress",
        "detail",
        "attempts",
        "priority",
        "created_at",
        "finished_at",
    ):
        table.add_row(field, str(job.get(field) if job.get(field) is not None else ""))
    for field in ("result", "error"):
        if job.get(field) is not None:
            table.add_row(field, json.dumps(job[field], ensure_ascii=False))
    console.print(table)


@jobs_app.command("submit")
def jobs_submit(
    kind: str,
    input_json: Annotated[str, typer.Option("--input", help="the input as a JSON object")] = "{}",
    priority: Annotated[int, typer.Option(min=1, max=5)] = 3,
    max_attempts: Annotated[int | None, typer.Option(min=1)] = None,
    deadline_s: Annotated[float | None, typer.Option(min=0)] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    watch: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    server: Server = "http://127.0.0.1:8000",
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Submit a job, e.g. `inferline jobs submit echo --input '{"message": "hi", "steps": 5}'`."""
    try:
        payload = json.loads(input_json)
    except json.JSONDecodeError as exc:
        err.print(f"--input is not valid JSON: {exc}")
        raise typer.Exit(2) from exc
    body = {
        "kind": kind,
        "input": payload,
        "priority": priority,
        "max_attempts": max_attempts,
        "deadline_s": deadline_s,
    }
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with _client(server, key) as client:
        job = _call(
            client,
            "POST",
            "/api/v1/jobs",
            json={k: v for k, v in body.items() if v is not None},
            headers=headers,
        )
        if watch:
            _watch(client, job["id"], as_json)
            return
    _show_job(job, as_json)


@jobs_app.command("get")
def jobs_get(job_id: str, server: Server = "http://127.0.0.1:8000", key: Key = None, as_json: AsJson = False) -> None:
    """Show one job."""
    with _client(server, key) as client:
        _show_job(_call(client, "GET", f"/api/v1/jobs/{job_id}"), as_json)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option()] = None,
    kind: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
    server: Server = "http://127.0.0.1:8000",
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """List jobs, newest first."""
    params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit, "cursor": cursor}.items() if v}
    with _client(server, key) as client:
        page = _call(client, "GET", "/api/v1/jobs", params=params)
    if as_json:
        console.print_json(json.dumps(page))
        return
    _print_rows(page["items"], False, ["id", "kind", "status", "stage", "progress", "created_at"])
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}")


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str, server: Server = "http://127.0.0.1:8000", key: Key = None, as_json: AsJson = False
) -> None:
    """Cancel a job (a running one stops at its next check)."""
    with _client(server, key) as client:
        _show_job(_call(client, "POST", f"/api/v1/jobs/{job_id}/cancel"), as_json)


@jobs_app.command("retry")
def jobs_retry(job_id: str, server: Server = "http://127.0.0.1:8000", key: Key = None, as_json: AsJson = False) -> None:
    """Re-queue a failed job."""
    with _client(server, key) as client:
        _show_job(_call(client, "POST", f"/api/v1/jobs/{job_id}/retry"), as_json)


@jobs_app.command("watch")
def jobs_watch(job_id: str, server: Server = "http://127.0.0.1:8000", key: Key = None, as_json: AsJson = False) -> None:
    """Follow a job live with a progress bar until it ends; exits 1 unless it succeeded."""
    with _client(server, key) as client:
        _watch(client, job_id, as_json)


def _watch(client: httpx.Client, job_id: str, as_json: bool) -> None:
    job: dict[str, Any] = {}
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=as_json) as progress:
        task = progress.add_task(job_id, total=100)
        for job in _stream(client, job_id):
            label = f"{job['status']}" + (f" · {job['stage']}" if job.get("stage") else "")
            progress.update(task, completed=job["progress"], description=label)
    _show_job(job, as_json)
    if job.get("status") != "succeeded":
        raise typer.Exit(1)


def _stream(client: httpx.Client, job_id: str) -> Any:
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=None) as response:
        if response.is_error:
            response.read()
            err.print(f"error {response.status_code}: {response.json().get('detail')}")
            raise typer.Exit(1)
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


# -- ocr ------------------------------------------------------------------------------------------


@app.command()
def ocr(
    files: Annotated[list[Path], typer.Argument(help="images (PNG, JPEG, TIFF, WebP, BMP) or PDFs", exists=True)],
    server: ServerOrEmbedded = None,
    key: Key = None,
    fmt: Annotated[str, typer.Option("--format", help="text, json or hocr")] = "text",
    out: Annotated[
        Path | None, typer.Option("--out", help="write <name>.<txt|json|hocr> here [default: stdout]")
    ] = None,
    lang: Annotated[str, typer.Option(help="Tesseract languages")] = "kor+eng",
    engine: Annotated[str, typer.Option(help="auto, tesseract or rapidocr")] = "auto",
    pages: Annotated[str | None, typer.Option(help='1-based pages, e.g. "1-3,5"')] = None,
    page_mode: Annotated[str, typer.Option(help="PDFs: auto, force or text-only")] = "auto",
    rotate_pages: Annotated[bool, typer.Option("--rotate-pages", help="turn pages upright before OCR")] = False,
    deskew: Annotated[bool, typer.Option("--deskew", help="level skewed pages before OCR")] = False,
    data_dir: DataDir = None,
) -> None:
    """OCR files through a server, or in-process on the embedded default (SQLite under --data-dir), with a
    progress bar per file and page. Exits 1 if any file failed."""
    if fmt not in {"text", "json", "hocr"}:
        err.print(f"--format must be text, json or hocr, not {fmt!r}")
        raise typer.Exit(2)
    options = {"lang": lang, "engine": engine, "page_mode": page_mode} | ({"pages": pages} if pages else {})
    options |= {"rotate_pages": "true"} if rotate_pages else {}
    options |= {"deskew": "true"} if deskew else {}
    with _api(server, key, data_dir) as client:
        failed = _ocr_files(client, files, options, fmt, out)
    if failed:
        raise typer.Exit(1)


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


def _ocr_files(client: httpx.Client, files: list[Path], options: dict[str, str], fmt: str, out: Path | None) -> int:
    jobs: dict[Path, dict[str, Any]] = {}
    for path in files:
        with path.open("rb") as handle:
            jobs[path] = _call(client, "POST", "/api/v1/ocr", files={"file": (path.name, handle)}, data=options)
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err) as progress:
        tasks = {path: progress.add_task(path.name, total=100) for path in files}
        while any(job["status"] not in {"succeeded", "failed", "canceled"} for job in jobs.values()):
            time.sleep(0.25)
            for path, job in jobs.items():
                if job["status"] in {"succeeded", "failed", "canceled"}:
                    continue
                jobs[path] = job = _call(client, "GET", f"/api/v1/jobs/{job['id']}")
                stage = f" · {job['stage']}" if job.get("stage") else ""
                progress.update(tasks[path], completed=job["progress"], description=f"{path.name}{stage}")
    failed = 0
    suffix = {"text": "txt", "json": "json", "hocr": "hocr"}[fmt]
    for path, job in jobs.items():
        if job["status"] != "succeeded":
            failed += 1
            reason = (job.get("error") or {}).get("message") or job["status"]
            err.print(f"{path}: {job['status']}: {reason}")
            continue
        response = client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": fmt})
        response.raise_for_status()
        if out is None:
            sys.stdout.write(response.text + ("\n" if not response.text.endswith("\n") else ""))
        else:
            out.mkdir(parents=True, exist_ok=True)
            target = out / f"{path.stem}.{suffix}"
            target.write_text(response.text, encoding="utf-8")
            err.print(f"{path} -> {target}")
    return failed


# -- search -----------------------------------------------------------------------------------------

INGEST_SUFFIXES = frozenset(
    {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".txt", ".md", ".markdown", ".html",
     ".htm", ".docx"}
)  # fmt: skip
FINAL_DOCUMENT = {"ready", "failed"}


def _ingest_targets(paths: list[Path]) -> list[tuple[Path, str]]:
    """(file, external id) for every file named or found under a folder (recursively, known types only).
    The external id is the path as given, so ingesting the same tree again updates its documents."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in INGEST_SUFFIXES and not child.name.startswith("."):
                    found.append((child, str(child)))
        else:
            found.append((path, str(path)))
    return found


@contextlib.contextmanager
def _api(server: str | None, key: str | None, data_dir: Path | None) -> Iterator[httpx.Client]:
    """A client of the given server, or of the app started in-process on the embedded default."""
    if server is not None:
        with _client(server, key, data_dir) as client:
            yield client
        return
    settings = _settings(data_dir=data_dir)
    logs.configure("warning", json=settings.log_json)
    with _embedded_server(settings) as url, _client(url, key, settings.data_dir) as client:
        yield client


def _upload_all(
    client: httpx.Client, progress: Progress, collection: str, targets: list[tuple[Path, str]], extra: dict[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Documents accepted, and why the others were refused, by external id."""
    sent = progress.add_task("upload", total=len(targets))
    documents: dict[str, dict[str, Any]] = {}
    refused: dict[str, str] = {}
    for path, external_id in targets:
        with path.open("rb") as handle:
            response = client.post(
                f"/api/v1/collections/{collection}/documents",
                files={"file": (path.name, handle)},
                data={"external_id": external_id, **extra},
            )
        if response.status_code == 404:  # the collection itself: nothing else will work
            _call(client, "GET", f"/api/v1/collections/{collection}")
        if response.is_error:  # this file only (type, size, metadata): the others go on
            refused[external_id] = _detail(response)
        else:
            documents[external_id] = response.json()
        progress.advance(sent)
    return documents, refused


def _wait_indexed(
    client: httpx.Client, progress: Progress, collection: str, documents: dict[str, dict[str, Any]]
) -> None:
    """Polls the collection's counts by status (one cheap request, however many files), then reads each
    document's final state once."""
    done = progress.add_task("indexed", total=len(documents))
    while True:
        counts = _call(client, "GET", f"/api/v1/collections/{collection}")["documents_by_status"]
        pending = counts["queued"] + counts["processing"]
        progress.update(done, completed=max(0, len(documents) - pending))
        if pending == 0:
            break
        time.sleep(0.5)
    for external_id, document in documents.items():
        documents[external_id] = _call(client, "GET", f"/api/v1/collections/{collection}/documents/{document['id']}")
    chunks = sum(d["chunks"] for d in documents.values())
    progress.update(done, completed=len(documents), description=f"indexed · {chunks} chunks")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (searched recursively)", exists=True)],
    collection: Annotated[str, typer.Option("--collection", "-c", help="created if missing")],
    metadata: Annotated[str | None, typer.Option(help="a JSON object given to every document")] = None,
    server: ServerOrEmbedded = None,
    key: Key = None,
    data_dir: DataDir = None,
) -> None:
    """Add documents to a collection and wait until they are indexed, with progress over files and chunks.
    Each file's path is its external id: ingesting the same files again updates them. Exits 1 if any
    document failed."""
    targets = _ingest_targets(paths)
    if not targets:
        err.print("no files to ingest (known types: " + " ".join(sorted(INGEST_SUFFIXES)) + ")")
        raise typer.Exit(2)
    extra = {"metadata": metadata} if metadata else {}
    with _api(server, key, data_dir) as client:
        found = client.get(f"/api/v1/collections/{collection}")
        if found.status_code == 404:
            _call(client, "POST", "/api/v1/collections", json={"name": collection})
            err.print(f"created collection {collection!r}")
        columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=err) as progress:
            documents, refused = _upload_all(client, progress, collection, targets, extra)
            _wait_indexed(client, progress, collection, documents)
    failed = refused | {external_id: d["error"] for external_id, d in documents.items() if d["status"] == "failed"}
    for external_id, reason in failed.items():
        err.print(f"{external_id}: failed: {reason}")
    err.print(f"{len(targets) - len(failed)} of {len(targets)} documents indexed into {collection!r}")
    if failed:
        raise typer.Exit(1)


def _filter_option(values: list[str]) -> dict[str, Any]:
    """`key=value` pairs, all of which must hold; values read as JSON when they are (numbers, true)."""
    conditions: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            err.print(f"--filter takes key=value, not {item!r}")
            raise typer.Exit(2)
        try:
            conditions[name] = json.loads(raw)
        except ValueError:
            conditions[name] = raw
    return conditions


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="what to look for, in any language")],
    collection: Annotated[str, typer.Option("--collection", "-c")],
    mode: Annotated[str, typer.Option(help="hybrid, semantic or keyword")] = "hybrid",
    filters: Annotated[list[str] | None, typer.Option("--filter", help="key=value on a declared field")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    as_json: AsJson = False,
    server: ServerOrEmbedded = None,
    key: Key = None,
    data_dir: DataDir = None,
) -> None:
    """Search a collection."""
    body: dict[str, Any] = {"query": query, "mode": mode, "limit": limit}
    if filters:
        body["filter"] = _filter_option(filters)
    with _api(server, key, data_dir) as client:
        result = _call(client, "POST", f"/api/v1/collections/{collection}/search", json=body)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table("score", "document", "text")
    for hit in result["hits"]:
        text = " ".join(hit["text"].split())
        table.add_row(f"{hit['score']:.4f}", hit["document_id"][:13], text[:120] + ("…" if len(text) > 120 else ""))
    Console().print(table)
    err.print(f"{len(result['hits'])} of {result['total']} hits in {result['took_ms']} ms")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the domain's own errors read well; anything else gets its type
        from inferline.errors import InferlineError

        if isinstance(exc, InferlineError):
            err.print(f"error: {exc}")
            sys.exit(1)
        raise


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
