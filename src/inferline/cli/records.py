"""`records push`: a JSONL file streamed to a server's gRPC record stream, with a progress bar."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from inferline.cli.common import DEFAULT_SERVER, AsJson, DataDir, Key, Server, api_key, console, err, progress_bars

if TYPE_CHECKING:
    from inferline.records.client import PushResult  # grpc is imported when a push runs, not with the CLI

app = typer.Typer(help="Records streamed into a search collection over gRPC.", no_args_is_help=True)

DEFAULT_GRPC_PORT = 50051
SHOWN_FAILURES = 20


GrpcTarget = Annotated[
    str | None,
    typer.Option(
        "--grpc",
        envvar="INFERLINE_GRPC",
        help=f"the record stream's host:port (default: --server's host, port {DEFAULT_GRPC_PORT})",
    ),
]
Tls = Annotated[
    bool | None,
    typer.Option(
        "--tls/--no-tls", help="TLS to the record stream (default: when --server is https://, or --ca-file is given)"
    ),
]
CaFile = Annotated[
    Path | None,
    typer.Option("--ca-file", exists=True, dir_okay=False, help="PEM CA certificates to check the server's with"),
]


@app.command("push")
def push(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help='JSONL: {"custom_id", "text", "metadata"}')],
    collection: Annotated[str, typer.Option("--collection", "-c", help="the collection to upsert into")],
    server: Server = DEFAULT_SERVER,
    grpc_target: GrpcTarget = None,
    tls: Tls = None,
    ca_file: CaFile = None,
    key: Key = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Stream FILE's records into COLLECTION: each is upserted by its custom_id (an unchanged record costs
    nothing) and acknowledged once searchable; a broken connection resumes from the last acknowledged
    record. Records that cannot be used are listed with their line and reason; exits 1 if any."""
    from inferline.records.client import PushFailed, push_file

    target = grpc_target or f"{urlsplit(server).hostname or '127.0.0.1'}:{DEFAULT_GRPC_PORT}"
    use_tls = tls if tls is not None else (server.startswith("https://") or ca_file is not None)
    if tls is False and ca_file is not None:
        err.print("error: --ca-file needs TLS (drop --no-tls)")
        raise typer.Exit(2)
    if not use_tls and not _loopback(target):
        err.print(f"warning: {target} without TLS: the API key and the records cross the network in the clear")
    plain_key = api_key(key, data_dir)
    ca_pem = ca_file.read_bytes() if ca_file is not None else None
    with progress_bars() as progress:
        task = progress.add_task(f"push {file.name}", total=file.stat().st_size or 1)
        try:
            result = asyncio.run(
                push_file(
                    target,
                    plain_key,
                    file,
                    collection,
                    on_progress=lambda size: progress.advance(task, size),
                    tls=use_tls,
                    ca_pem=ca_pem,
                )
            )
        except PushFailed as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(1) from exc
    _print_result(result, as_json=as_json)
    if result.failed:
        raise typer.Exit(1)


def _print_result(result: PushResult, *, as_json: bool) -> None:
    """The counts on stdout; the first failures, with their line and reason, on stderr."""
    if as_json:
        console.print_json(json.dumps({"stored": result.stored, "failed": result.failed}))
        return
    console.print(f"{result.stored} records stored, {len(result.failed)} failed")
    for failure in result.failed[:SHOWN_FAILURES]:
        err.print(f"  line {failure['line']} ({failure['custom_id']}): {failure['error']}")
    if len(result.failed) > SHOWN_FAILURES:
        err.print(f"  ... and {len(result.failed) - SHOWN_FAILURES} more (--json lists them all)")


def _loopback(target: str) -> bool:
    host = target.rpartition(":")[0].strip("[]") or target
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
