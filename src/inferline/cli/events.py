"""`inferline events tail`: follow the events stream for debugging.

Unlike the other commands it reads the broker itself (`events_broker`), not the server: what it shows is
exactly what consumers receive, and it works while the API is down."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from inferline.cli.common import console, err, load_settings
from inferline.events import envelope

app = typer.Typer(help="Job, batch and alert events on the broker (docs/events.md).", no_args_is_help=True)

Kinds = Annotated[
    list[str] | None,
    typer.Option("--kind", help="event type to show, repeatable: job.failed, job.*, alert.> [default: all]"),
]


@app.command()
def tail(
    kind: Kinds = None,
    as_json: Annotated[bool, typer.Option("--json", help="one CloudEvent per line, as the broker has it")] = False,
    broker: Annotated[
        str | None, typer.Option("--broker", envvar="INFERLINE_EVENTS_BROKER", help="broker URL [default: settings]")
    ] = None,
    topic: Annotated[str | None, typer.Option("--topic", help="[default: the events_topic setting]")] = None,
    count: Annotated[int | None, typer.Option("--count", min=1, help="stop after this many events")] = None,
) -> None:
    """Print the events published from now on, until Ctrl-C (or `--count`)."""
    settings = load_settings(events_broker=broker, events_topic=topic)
    if not settings.events_broker:
        err.print("no broker: pass --broker or set INFERLINE_EVENTS_BROKER (docs/events.md)")
        raise typer.Exit(2)
    asyncio.run(_follow(settings, kind or [], as_json, count))


async def _follow(settings: Any, kinds: list[str], as_json: bool, count: int | None) -> None:
    from inferline.bootstrap import build_broker

    broker = build_broker(settings)
    shown = 0
    try:
        async for body in broker.tail(kinds):
            _show(body, as_json)
            shown += 1
            if count is not None and shown >= count:
                break
    finally:
        await broker.aclose()


def _show(body: bytes, as_json: bool) -> None:
    if as_json:
        print(body.decode(errors="replace"), flush=True)  # one line per event for pipes: no Rich wrapping
        return
    try:
        event = json.loads(body)
    except ValueError:
        console.print(f"[red]not JSON[/red] {body[:200]!r}", markup=True)
        return
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    status = data.get("status") or data.get("state") or ""
    console.print(
        f"{event.get('time', '')}  [bold]{envelope.short_type(event)}[/bold]  {event.get('subject', '')}  "
        f"{event.get('tenant', '-')}  {status}",
        markup=True,
        highlight=False,
    )
