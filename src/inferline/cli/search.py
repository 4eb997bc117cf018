"""`ingest` and `search`: documents into a collection, and queries over it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import Progress
from rich.table import Table

from inferline.cli.common import (
    AsJson,
    DataDir,
    Key,
    ServerOrEmbedded,
    api_client,
    call,
    console,
    err,
    error_detail,
    progress_bars,
)

Document = dict[str, Any]

INGEST_SUFFIXES = frozenset(
    {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".txt", ".md", ".markdown", ".html",
     ".htm", ".docx"}
)  # fmt: skip


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


def _upload_all(
    client: httpx.Client, progress: Progress, collection: str, targets: list[tuple[Path, str]], extra: dict[str, str]
) -> tuple[dict[str, Document], dict[str, str]]:
    """Documents accepted, and why the others were refused, by external id."""
    sent = progress.add_task("upload", total=len(targets))
    documents: dict[str, Document] = {}
    refused: dict[str, str] = {}
    for path, external_id in targets:
        with path.open("rb") as handle:
            response = client.post(
                f"/api/v1/collections/{collection}/documents",
                files={"file": (path.name, handle)},
                data={"external_id": external_id, **extra},
            )
        if response.status_code == 404:  # the collection itself: nothing else will work
            call(client, "GET", f"/api/v1/collections/{collection}")
        if response.is_error:  # this file only (type, size, metadata): the others go on
            refused[external_id] = error_detail(response)
        else:
            documents[external_id] = response.json()
        progress.advance(sent)
    return documents, refused


def _wait_indexed(client: httpx.Client, progress: Progress, collection: str, documents: dict[str, Document]) -> None:
    """Polls the collection's counts by status (one cheap request, however many files), then reads each
    document's final state once."""
    done = progress.add_task("indexed", total=len(documents))
    while True:
        counts = call(client, "GET", f"/api/v1/collections/{collection}")["documents_by_status"]
        pending = counts["queued"] + counts["processing"]
        progress.update(done, completed=max(0, len(documents) - pending))
        if pending == 0:
            break
        time.sleep(0.5)
    for external_id, document in documents.items():
        documents[external_id] = call(client, "GET", f"/api/v1/collections/{collection}/documents/{document['id']}")
    chunks = sum(d["chunks"] for d in documents.values())
    progress.update(done, completed=len(documents), description=f"indexed · {chunks} chunks")


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
    with api_client(server, key, data_dir) as client:
        found = client.get(f"/api/v1/collections/{collection}")
        if found.status_code == 404:
            call(client, "POST", "/api/v1/collections", json={"name": collection})
            err.print(f"created collection {collection!r}")
        with progress_bars() as progress:
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


def search(
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
    with api_client(server, key, data_dir) as client:
        result = call(client, "POST", f"/api/v1/collections/{collection}/search", json=body)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table("score", "document", "text")
    for hit in result["hits"]:
        text = " ".join(hit["text"].split())
        table.add_row(f"{hit['score']:.4f}", hit["document_id"][:13], text[:120] + ("…" if len(text) > 120 else ""))
    console.print(table)
    err.print(f"{len(result['hits'])} of {result['total']} hits in {result['took_ms']} ms")
