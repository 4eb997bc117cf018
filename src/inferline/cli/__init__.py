"""The `inferline` command: thin calls into the server, the worker and the use cases, one module per group."""

from __future__ import annotations

import sys

import typer

from inferline.cli import events, files, jobs, keys, ocr, records, search, server, video
from inferline.cli.common import err

__all__ = ["app", "build_app", "main"]


def _builtin_app() -> typer.Typer:
    app = typer.Typer(help="inferline: AI inference as durable jobs.", no_args_is_help=True)
    app.add_typer(jobs.app, name="jobs")
    app.add_typer(keys.app, name="keys")
    app.add_typer(files.app, name="files")
    app.add_typer(records.app, name="records")
    app.add_typer(server.db_app, name="db")
    app.add_typer(video.app, name="video")
    app.add_typer(events.app, name="events")
    app.command()(server.serve)
    app.command()(server.worker)
    app.command()(ocr.ocr)
    app.command()(search.ingest)
    app.command("search")(search.search)
    return app


app = _builtin_app()


def build_app() -> typer.Typer:
    """The built-in commands and the command groups of the plugins named in the `plugins` setting."""
    from inferline import plugins
    from inferline.config import Settings

    full = _builtin_app()
    for group in plugins.cli_apps(plugins.load(Settings().plugins)):
        full.add_typer(group)
    return full


def main() -> None:
    try:
        build_app()()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the domain's own errors read well; anything else gets its type
        from inferline.errors import InferlineError

        if isinstance(exc, InferlineError):
            err.print(f"error: {exc}")
            sys.exit(1)
        raise
