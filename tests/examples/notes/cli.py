"""`inferline notes add TEXT`: store a note, follow its counting job, print the count."""

from __future__ import annotations

from typing import Annotated

import typer

from inferline.cli import Key, ServerOrEmbedded, _api, _call, _watch, console

cli = typer.Typer(name="notes", help="Notes whose words a job counts (the example workload).", no_args_is_help=True)


@cli.command("add")
def add(
    text: Annotated[str, typer.Argument(help="the note")],
    server: ServerOrEmbedded = None,
    key: Key = None,
) -> None:
    """Store a note and wait until its words are counted."""
    with _api(server, key, None) as client:
        note = _call(client, "POST", "/api/v1/notes", json={"text": text})
        _watch(client, note["job_id"], as_json=True)
        note = _call(client, "GET", f"/api/v1/notes/{note['id']}")
    console.print(f"{note['words']} words")
