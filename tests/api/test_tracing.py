"""Traces through a request, the job it submits and that job's model call, sent over OTLP/HTTP to a real
receiver (it decodes the protobuf the SDK sends, as a collector would); trace ids in the logs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from tests.api.conftest import MakeApi
from tests.conftest import LogRecorder

from inferline.clock import utcnow
from inferline.schema import schedules

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver: every span posted to /v1/traces, decoded."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        assert lines[0].startswith("POST /v1/traces ") and headers["content-type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )
        answer = ExportTraceServiceResponse().SerializeToString()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
            + f"content-length: {len(answer)}\r\nconnection: close\r\n\r\n".encode()
            + answer
        )
        await writer.drain()
        writer.close()

    def named(self, prefix: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["name"].startswith(prefix)]


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    collector = Collector()
    server = await asyncio.start_server(collector.handle, "127.0.0.1", 0)
    collector.port = server.sockets[0].getsockname()[1]
    async with server:
        yield collector


async def test_a_request_its_job_and_the_jobs_model_call_are_one_trace(
    make_api: MakeApi, collector: Collector, log_records: LogRecorder
) -> None:
    settings = {"plugins": ["tests.plugins.kinds"], "otlp_endpoint": f"http://127.0.0.1:{collector.port}"}
    async with make_api(**settings) as api:
        headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        submitted = await api.client.post("/api/v1/jobs", json={"kind": "double", "input": {"n": 21}}, headers=headers)
        assert submitted.status_code == 201, submitted.text
        assert submitted.headers["traceparent"].split("-")[1] == TRACE_ID  # the answer names its span
        job = await api.wait(submitted.json()["id"])
        assert job["result"] == {"doubled": 42}
        untraced = await api.client.get(f"/api/v1/jobs/{job['id']}")  # no header: a trace of its own
    # The app has stopped: its provider sent what it held.
    [request] = [span for span in collector.named("POST /api/v1/jobs")]
    assert (request["trace_id"], request["parent"]) == (TRACE_ID, PARENT_ID)
    assert request["attributes"]["http.response.status_code"] == 201
    [attempt] = collector.named("job double")
    assert (attempt["trace_id"], attempt["parent"]) == (TRACE_ID, request["span_id"])
    assert attempt["attributes"]["inferline.job.id"] == job["id"]
    assert attempt["attributes"]["inferline.job.outcome"] == "succeeded"
    [model] = collector.named("model doubler")
    assert (model["trace_id"], model["parent"]) == (TRACE_ID, attempt["span_id"])
    others = {span["trace_id"] for span in collector.named("GET /api/v1/jobs/{job_id}")}
    assert untraced.headers["traceparent"].split("-")[1] in others and TRACE_ID not in others

    # Every line logged inside the request or the job carries the trace.
    lines = [e for e in log_records.events if e.get("job_id") == job["id"] or e.get("path") == "/api/v1/jobs"]
    assert lines and all(e.get("trace_id") == TRACE_ID for e in lines)


async def test_without_an_endpoint_nothing_is_sent_but_logs_and_answers_still_carry_trace_ids(
    make_api: MakeApi, collector: Collector, log_records: LogRecorder
) -> None:
    async with make_api(plugins=["tests.plugins.kinds"]) as api:
        job = await api.submit(kind="double", input={"n": 2})
        done = await api.wait(job["id"])
        answer = await api.client.get(f"/api/v1/jobs/{job['id']}")
    assert done["status"] == "succeeded" and collector.spans == []
    trace_id = answer.headers["traceparent"].split("-")[1]
    assert len(trace_id) == 32 and trace_id != "0" * 32
    requests = [e for e in log_records.events if e["event"] == "request"]
    assert requests and all(len(e["trace_id"]) == 32 for e in requests)


async def test_without_an_endpoint_a_jobs_log_lines_carry_the_trace_of_the_request_that_submitted_it(
    make_api: MakeApi, collector: Collector, log_records: LogRecorder
) -> None:
    """An attempt's span records nothing here (its ids are drawn only when read, `tracing.DeferredSpan`), yet
    every line its job logs names the trace the job was submitted in, and a span of the attempt's own."""
    async with make_api() as api:
        headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        echo = {"kind": "echo", "input": {"message": "x", "steps": 1, "fail_first": 1}}
        submitted = await api.client.post("/api/v1/jobs", json=echo, headers=headers)
        assert submitted.status_code == 201, submitted.text
        job = await api.wait(submitted.json()["id"])
    assert job["status"] == "succeeded" and job["attempts"] == 2 and collector.spans == []
    lines = [e for e in log_records.events if e.get("job_id") == job["id"]]
    assert any(e["event"] == "job_attempt_failed" for e in lines)
    assert all(e.get("trace_id") == TRACE_ID for e in lines)
    request_span = submitted.headers["traceparent"].split("-")[2]
    assert all(len(e["span_id"]) == 16 and e["span_id"] not in (request_span, PARENT_ID) for e in lines)


async def test_a_schedules_tick_is_a_span_and_its_job_continues_that_trace(
    make_api: MakeApi, collector: Collector
) -> None:
    settings = {
        "plugins": ["tests.plugins.kinds"],
        "otlp_endpoint": f"http://127.0.0.1:{collector.port}",
        "schedule_poll_s": 0.05,
    }
    async with make_api(**settings) as api:
        created = await api.client.post(
            "/api/v1/schedules", json={"cron": "0 0 1 1 *", "kind": "double", "input": {"n": 4}}
        )
        assert created.status_code == 201, created.text
        schedule = created.json()
        async with api.services.engine.begin() as conn:  # due now: the scheduler fires it at its next poll
            await conn.execute(sa.update(schedules).values(next_run_at=utcnow() - timedelta(seconds=1)))
        for _ in range(200):
            listed = (await api.client.get("/api/v1/schedules")).json()["items"]
            if listed[0]["last_job_id"]:
                break
            await asyncio.sleep(0.05)
        job = await api.wait(listed[0]["last_job_id"])
        assert job["result"] == {"doubled": 8}
    [tick] = collector.named("schedule tick")
    assert tick["parent"] == ""  # a root: nothing submitted it
    assert tick["attributes"]["inferline.schedule.id"] == schedule["id"]
    assert tick["attributes"]["inferline.job.id"] == job["id"]
    [attempt] = collector.named("job double")
    assert (attempt["trace_id"], attempt["parent"]) == (tick["trace_id"], tick["span_id"])
