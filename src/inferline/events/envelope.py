"""The CloudEvents 1.0 envelope (structured mode, JSON) of an outbox row.

    {"specversion": "1.0", "id": "<outbox id, a UUIDv7>", "source": "/inferline/<topic>",
     "type": "dev.inferline.job.succeeded", "subject": "<job id>", "time": "...",
     "datacontenttype": "application/json", "sequence": "00000000000000000042", "tenant": "acme",
     "data": {...the job's public view, the batch, the alert...}}

`sequence` (the CloudEvents sequence extension) is the outbox position, zero-padded so that it sorts as a
string; `tenant` (an extension) is left out for the fleet's own events (alerts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

SPECVERSION = "1.0"
TYPE_PREFIX = "dev.inferline."
CONTENT_TYPE = "application/cloudevents+json"


def source_of(topic: str) -> str:
    return f"/inferline/{topic}"


def cloud_event(row: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": row["id"],
        "source": source,
        "type": TYPE_PREFIX + row["type"],
        "subject": row["subject"],
        "time": row["time"].isoformat(),
        "datacontenttype": "application/json",
        "sequence": f"{row['seq']:020d}",
    }
    if row["tenant"]:
        event["tenant"] = row["tenant"]
    event["data"] = row["data"]
    return event


def encode(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def short_type(event: Mapping[str, Any]) -> str:
    """`job.succeeded` for `dev.inferline.job.succeeded`."""
    return str(event.get("type", "")).removeprefix(TYPE_PREFIX)
