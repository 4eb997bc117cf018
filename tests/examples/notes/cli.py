"""`inferline notes add TEXT`: store a note, follow its counting job, print the count."""

from __future__ import annotations

from typing import Annotated

import typer

from inferline.cli.common import Key, ServerOrEmbedded, api_client, call, console, follow_jobs

cli = typer.Typer(name="notes", help="Notes whose words a job counts (the example workload).", no_args_is_help=True)


@cli.command("add")
def add(
    text: Annotated[str, typer.Argument(help="the note")],
    server: ServerOrEmbedded = None,
    key: Key = None,
) -> None:
    """Store a note and wait until its words are counted; exits 1 if counting failed."""
    with api_client(server, key, None) as client:
        note = call(client, "POST", "/api/v1/notes", json={"text": text})
        [job] = follow_jobs(client, [note["job_id"]], lambda _index, _job: None)
        if job.get("status") != "succeeded":
            console.print(f"counting {job.get('status')}: {job.get('error')}")
            raise typer.Exit(1)
        note = call(client, "GET", f"/api/v1/notes/{note['id']}")
    console.print(f"{note['words']} words")
