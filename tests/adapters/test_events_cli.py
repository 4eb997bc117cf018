"""`inferline events tail` follows the real broker (Redis here): it prints the events published while it
runs, of the kinds asked for."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import Result
from tests.event_brokers import RealBroker
from typer.testing import CliRunner

from inferline.cli import app as cli_app
from inferline.events import envelope
from inferline.events.broker import Message
from inferline.events.redis import RedisBroker


def event(type_: str, subject: str) -> Message:
    event_id, data = str(uuid.uuid4()), {"status": type_.split(".")[1]}
    line = envelope.stored(event_id, type_, subject, "acme", datetime.now(UTC).isoformat(), data)
    body = envelope.cloud_event_bytes(envelope.head(line)[2], source="/inferline/t", seq=1, index=0)
    return Message(event_id, type_, body)


async def tail_while_publishing(broker: RealBroker, *args: str) -> Result:
    """Run the command until it exits, publishing a queued and a failed event every 50 ms meanwhile (it
    shows only what is published after it started)."""
    command = ["events", "tail", "--broker", broker.url, "--topic", broker.topic, *args]
    running = asyncio.create_task(asyncio.to_thread(CliRunner().invoke, cli_app, command))
    publisher = RedisBroker(broker.url, topic=broker.topic, max_events=100, timeout_s=2)
    try:
        while not running.done():
            await publisher.publish([event("job.queued", "q-job"), event("job.failed", "f-job")])
            await asyncio.wait({running}, timeout=0.05)
    finally:
        await publisher.aclose()
    return running.result()


@pytest.mark.redis
async def test_tail_prints_the_kinds_asked_for_as_json_lines(redis_broker: RealBroker) -> None:
    result = await tail_while_publishing(redis_broker, "--kind", "job.failed", "--json", "--count", "2")
    assert result.exit_code == 0, result.output
    lines: list[dict[str, Any]] = [json.loads(line) for line in result.output.splitlines()]
    assert [(e["type"], e["subject"], e["tenant"]) for e in lines] == [
        ("dev.inferline.job.failed", "f-job", "acme")
    ] * 2


@pytest.mark.redis
async def test_tail_prints_a_line_per_event(redis_broker: RealBroker) -> None:
    result = await tail_while_publishing(redis_broker, "--count", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and "job.queued  q-job  acme  queued" in lines[0] and "job.failed  f-job" in lines[1]


def test_tail_without_a_broker_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERLINE_EVENTS_BROKER", raising=False)
    result = CliRunner().invoke(cli_app, ["events", "tail"])
    assert result.exit_code == 2 and "INFERLINE_EVENTS_BROKER" in result.output
