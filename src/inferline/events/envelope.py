"""The CloudEvents 1.0 envelope (structured mode, JSON), and how the outbox stores it.

    {"specversion": "1.0", "source": "/inferline/<topic>", "sequence": "00000000000000004217000003",
     "id": "<the event's id, a UUIDv7>", "type": "dev.inferline.job.succeeded", "subject": "<job id>",
     "time": "...", "datacontenttype": "application/json", "tenant": "acme",
     "data": {...a summary of the job, the batch, the alert...}}

The outbox stores each event already encoded, so the publisher never decodes and re-encodes its data:
one **line** per event, `<id> TAB <type> TAB <the CloudEvent's JSON without specversion, source and
sequence>`, the lines of one write joined by "\\n" in one outbox row (JSON text never holds a raw tab or
newline: they are escaped inside strings). The publisher splices in the three attributes that belong to
the sending: `specversion`, `source` (the publisher's topic) and `sequence`, the row's position and the
event's index in it (`<seq, 15 digits><index, 5 digits>`: it sorts as a string and as a number; a row
holds at most `MAX_EVENTS_PER_ROW`). `tenant` (an extension) is left out for the fleet's own events
(alerts). orjson encodes: a fifth of `json.dumps`'s time, datetimes included (written as
`datetime.isoformat` writes them); encoding is most of what an event costs its write.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

SPECVERSION = "1.0"
TYPE_PREFIX = "dev.inferline."
CONTENT_TYPE = "application/cloudevents+json"
MAX_EVENTS_PER_ROW = 10_000  # < 10**5: the index's five digits in `sequence`


def source_of(topic: str) -> str:
    """`/inferline/<topic>` (the topic is letters, digits, `_` and `-`: nothing to escape in JSON)."""
    return f"/inferline/{topic}"


def stored(
    event_id: str,
    type_: str,
    subject: str,
    tenant: str,
    time: datetime,
    data: Mapping[str, Any],
    *,
    any_keys: bool = False,
) -> str:
    """An event as the outbox keeps it (a line, see the module docstring); `data` holds JSON values and
    datetimes. `any_keys`: its dicts' keys may be other than plain `str` (a SQLAlchemy row's names are a
    subclass; numbers), written as strings like `json.dumps` does, at some cost."""
    event: dict[str, Any] = {
        "id": event_id,
        "type": TYPE_PREFIX + type_,
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
    }
    if tenant:
        event["tenant"] = tenant
    event["data"] = data
    encoded = orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS if any_keys else None)
    return f"{event_id}\t{type_}\t{encoded.decode()}"


def lines(payload: str) -> list[str]:
    """The events of an outbox row. Split on "\\n" only: `str.splitlines` would also split on characters
    that JSON leaves raw (U+2028, U+001C...)."""
    return payload.split("\n")


def head(line: str) -> tuple[str, str, str]:
    """(id, type, the CloudEvent's JSON without the sending's attributes) of a stored event."""
    event_id, type_, body = line.split("\t", 2)
    return event_id, type_, body


def cloud_event_bytes(body: str, *, source: str, seq: int, index: int) -> bytes:
    """The CloudEvent as sent: the stored JSON with `specversion`, `source` and `sequence` spliced in."""
    start = f'{{"specversion":"{SPECVERSION}","source":"{source}","sequence":"{seq:015d}{index:05d}",'
    return (start + body[1:]).encode()


def parse(line: str) -> dict[str, Any]:
    """A stored event as columns: id, type (`job.failed`), subject, tenant ("" for none), time, data; for
    the dead letters and tests."""
    event_id, type_, body = head(line)
    event = orjson.loads(body)
    return {
        "id": event_id,
        "type": type_,
        "subject": event["subject"],
        "tenant": event.get("tenant", ""),
        "time": datetime.fromisoformat(event["time"]),
        "data": event["data"],
    }


def short_type(event: Mapping[str, Any]) -> str:
    """`job.succeeded` for `dev.inferline.job.succeeded`."""
    return str(event.get("type", "")).removeprefix(TYPE_PREFIX)
