"""`jobs`: submit, show, list, cancel, retry and follow jobs on a running server."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import typer
from rich.table import Table

from inferline.cli.common import (
    DEFAULT_SERVER,
    AsJson,
    JobView,
    Key,
    Server,
    call,
    console,
    err,
    follow_jobs,
    open_client,
    print_rows,
    progress_bars,
    show_job_progress,
)

app = typer.Typer(help="Submit and follow jobs on a running server.", no_args_is_help=True)

SHOWN_FIELDS = (
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
)


@app.command("submit")
def submit(
    kind: str,
    input_json: Annotated[str, typer.Option("--input", help="the input as a JSON object")] = "{}",
    priority: Annotated[int, typer.Option(min=1, max=5)] = 3,
    max_attempts: Annotated[int | None, typer.Option(min=1)] = None,
    deadline_s: Annotated[float | None, typer.Option(min=0)] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    watch: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    server: Server = DEFAULT_SERVER,
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
    with open_client(server, key) as client:
        given = {k: v for k, v in body.items() if v is not None}
        job = call(client, "POST", "/api/v1/jobs", json=given, headers=headers)
        if watch:
            _watch(client, job["id"], as_json)
            return
    _show_job(job, as_json)


@app.command("get")
def get(job_id: str, server: Server = DEFAULT_SERVER, key: Key = None, as_json: AsJson = False) -> None:
    """Show one job."""
    with open_client(server, key) as client:
        _show_job(call(client, "GET", f"/api/v1/jobs/{job_id}"), as_json)


@app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option()] = None,
    kind: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
    server: Server = DEFAULT_SERVER,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """List jobs, newest first."""
    params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit, "cursor": cursor}.items() if v}
    with open_client(server, key) as client:
        page = call(client, "GET", "/api/v1/jobs", params=params)
    if as_json:
        console.print_json(json.dumps(page))
        return
    print_rows(page["items"], False, ["id", "kind", "status", "stage", "progress", "created_at"])
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}")


@app.command("cancel")
def cancel(job_id: str, server: Server = DEFAULT_SERVER, key: Key = None, as_json: AsJson = False) -> None:
    """Cancel a job (a running one stops at its next check)."""
    with open_client(server, key) as client:
        _show_job(call(client, "POST", f"/api/v1/jobs/{job_id}/cancel"), as_json)


@app.command("retry")
def retry(job_id: str, server: Server = DEFAULT_SERVER, key: Key = None, as_json: AsJson = False) -> None:
    """Re-queue a failed job."""
    with open_client(server, key) as client:
        _show_job(call(client, "POST", f"/api/v1/jobs/{job_id}/retry"), as_json)


@app.command("watch")
def watch(job_id: str, server: Server = DEFAULT_SERVER, key: Key = None, as_json: AsJson = False) -> None:
    """Follow a job live with a progress bar until it ends; exits 1 unless it succeeded."""
    with open_client(server, key) as client:
        _watch(client, job_id, as_json)


def _watch(client: httpx.Client, job_id: str, as_json: bool) -> None:
    with progress_bars(transient=as_json) as progress:
        task = progress.add_task(job_id, total=100)
        [job] = follow_jobs(client, [job_id], lambda _, seen: show_job_progress(progress, task, seen["status"], seen))
    _show_job(job, as_json)
    if job.get("status") != "succeeded":
        raise typer.Exit(1)


def _show_job(job: JobView, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(job))
        return
    table = Table(show_header=False)
    for field in SHOWN_FIELDS:
        table.add_row(field, str(job.get(field) if job.get(field) is not None else ""))
    for field in ("result", "error"):
        if job.get(field) is not None:
            table.add_row(field, json.dumps(job[field], ensure_ascii=False))
    console.print(table)
