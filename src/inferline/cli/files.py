"""`files`: maintenance of the stored files, straight on the database and the blob folder (no server)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from inferline import db
from inferline.cli.common import AsJson, DatabaseUrl, DataDir, console, load_settings
from inferline.files.blobs import BlobStore
from inferline.files.sweep import Swept, sweep_orphans

app = typer.Typer(help="Stored files (talks to the database and the blob folder directly).", no_args_is_help=True)


@app.command("gc")
def gc(
    min_age_s: Annotated[
        float | None,
        typer.Option("--min-age-s", min=0, help="only blobs older than this [default: files_orphan_age_s]"),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Remove blobs no file refers to, and uploads left half-done by a stopped process. Workers do this
    every `files_gc_interval_s`; on a fleet, run it where the blob folder is mounted."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    age_s = settings.files_orphan_age_s if min_age_s is None else min_age_s

    async def run() -> Swept:
        engine = db.create_engine(settings.resolved_database_url, pool_size=1)
        try:
            return await sweep_orphans(engine, BlobStore(settings.data_dir.resolve() / "blobs"), min_age_s=age_s)
        finally:
            await engine.dispose()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db.upgrade(settings.resolved_database_url)
    swept = asyncio.run(run())
    if as_json:
        console.print_json(json.dumps({"blobs_removed": swept.blobs, "staged_removed": swept.staged}))
    else:
        console.print(f"removed {swept.blobs} unreferenced blobs and {swept.staged} staged uploads")
