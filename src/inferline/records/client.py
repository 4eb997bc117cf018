"""`push_file`: a JSONL file of records (`{"custom_id", "text", "metadata"}` per line) streamed to a server's
record stream. Records sent and not yet acknowledged are kept (the server's window and the transport's flow
control bound them); when the connection breaks, or the server is briefly unavailable, a new stream
resends them first and goes on, so nothing is lost and, records being upserted by `custom_id`, nothing is
stored twice."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from inferline.records import records_pb2, records_pb2_grpc

MAX_LINE_BYTES = 2**20
# Codes a new stream can get past: the connection, a server restarting or busy, a stream ended idle; and
# INTERNAL, which grpc reports for a write that a server's end of the stream broke, whatever that end's
# status (a real INTERNAL is retried too: resending costs nothing).
RETRIED = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
}


@dataclass(frozen=True)
class Sent:
    line: int  # in the file, from 1
    size: int  # bytes of the line: the progress bar counts bytes
    message: Any  # records_pb2.Record


@dataclass
class PushResult:
    stored: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)  # line, custom_id, error
    reconnects: int = 0
    answered: int = 0  # records the server acknowledged (stored or refused); lines never sent are not


class PushFailed(Exception):
    """The server refused the stream for good (a wrong key, a missing collection) or kept failing."""


class _EndedEarly(Exception):
    """The server ended the stream as done while records were still unacknowledged or unsent: retried like
    a cut (they are sent again), never reported as pushed."""

    def __init__(self, unacked: int) -> None:
        super().__init__(f"the server ended the stream with {unacked} records unacknowledged")


async def push_file(
    target: str,
    key: str,
    path: Path,
    collection: str,
    *,
    on_progress: Callable[[int], None] = lambda size: None,
    attempts: int = 5,
    ack_timeout_s: float = 300.0,
    retry_after_s: float = 1.0,
    window_records: int = 256,
    tls: bool = False,
    ca_pem: bytes | None = None,
) -> PushResult:
    """Every record of `path` upserted into `collection` through the stream at `target` (host:port).
    `on_progress(bytes)` as records are acknowledged (or fail before sending: a line that is not JSON).
    `tls`: over TLS, the server's certificate checked against `ca_pem` (PEM), or the system's roots."""
    result = PushResult()
    unacked: collections.deque[Sent] = collections.deque()
    lines = _read(path, collection, result, on_progress)
    metadata = (("authorization", f"Bearer {key}"),)
    options = [("grpc.keepalive_time_ms", 30_000)]
    channel = (
        grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca_pem), options=options)
        if tls or ca_pem is not None
        else grpc.aio.insecure_channel(target, options=options)
    )
    async with channel:
        stub = records_pb2_grpc.RecordStreamStub(channel)  # type: ignore[no-untyped-call]  # generated
        failures = 0  # in a row: a stream that got records answered before it broke starts the count again
        while True:
            answered = result.answered
            try:
                await _stream(stub, metadata, lines, unacked, result, on_progress, ack_timeout_s, window_records)
                return result
            except (grpc.aio.AioRpcError, TimeoutError, _EndedEarly) as exc:
                failures = 1 if result.answered > answered else failures + 1
                if isinstance(exc, grpc.aio.AioRpcError):
                    if exc.code() not in RETRIED or failures >= attempts:
                        raise PushFailed(f"{exc.code().name}: {exc.details()}") from exc
                elif failures >= attempts:
                    timed_out = isinstance(exc, TimeoutError)
                    raise PushFailed(f"no acknowledgment for {ack_timeout_s:g} s" if timed_out else str(exc)) from None
            result.reconnects += 1
            await asyncio.sleep(retry_after_s * failures)


async def _stream(
    stub: Any,
    metadata: tuple[tuple[str, str], ...],
    lines: Iterator[Sent],
    unacked: collections.deque[Sent],
    result: PushResult,
    on_progress: Callable[[int], None],
    ack_timeout_s: float,
    window_records: int,
) -> None:
    resent = list(unacked)  # a new stream: what the last one left unacknowledged goes first
    # No more ahead of the acks than the server reads ahead (its default window): the writer then waits
    # here, not in a send, when the server ends the stream, and the reads get the server's status.
    window = asyncio.Semaphore(window_records)
    all_taken = False  # the file's last record taken: the stream may end once all are acknowledged

    async def records() -> AsyncIterator[Any]:
        nonlocal all_taken
        for sent in resent:
            await window.acquire()
            yield sent.message
        while True:
            # The window first, then the next record: a stream that ends while this waits (a cut) must not
            # have taken a record from the file that is then neither sent nor kept to send again.
            await window.acquire()
            taken = next(lines, None)
            if taken is None:
                all_taken = True
                return
            unacked.append(taken)
            yield taken.message

    # Written by a task of its own rather than handed over as the request iterator: a write the server's
    # end of the stream breaks then fails that task alone, and the reads get the server's status (given
    # an iterator, grpc reports such a write as INTERNAL and the status is lost).
    call = stub.Upload(metadata=metadata)
    writer = asyncio.create_task(_write(call, records()))
    try:
        while True:
            ack = await asyncio.wait_for(call.read(), ack_timeout_s)
            if ack == grpc.aio.EOF:
                if unacked or not all_taken:  # ended as done before it was (a server's bug or its stop)
                    raise _EndedEarly(len(unacked))
                return
            sent = unacked.popleft()  # acks come in the order of the records
            window.release()
            result.answered += 1
            if ack.error:
                result.failed.append({"line": sent.line, "custom_id": ack.custom_id, "error": ack.error})
            else:
                result.stored += 1
            on_progress(sent.size)
    finally:
        call.cancel()
        writer.cancel()
        # A write after the server ended the call fails (InvalidStateError, "RPC already finished"): the
        # reads above have the server's status, which is what counts.
        suppressed = (asyncio.CancelledError, asyncio.InvalidStateError, grpc.aio.AioRpcError, grpc.aio.UsageError)
        with contextlib.suppress(*suppressed):
            await writer


async def _write(call: Any, records: AsyncIterator[Any]) -> None:
    async for message in records:
        await call.write(message)
    await call.done_writing()


def _read(path: Path, collection: str, result: PushResult, on_progress: Callable[[int], None]) -> Iterator[Sent]:
    """The file's records; a line that is not a JSON object is a failure of its own, never sent."""
    with path.open("rb") as file:
        number = 0
        while raw := file.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (more := file.readline(65536)) and not more.endswith(b"\n"):
                    pass
                _local_failure(result, on_progress, number, len(raw), f"line over {MAX_LINE_BYTES} bytes")
                continue
            if not raw.strip():
                continue
            try:
                message = _message(json.loads(raw), collection)
            except (ValueError, TypeError, RecursionError) as exc:
                _local_failure(result, on_progress, number, len(raw), f"not a record: {str(exc)[:200]}")
                continue
            yield Sent(number, len(raw), message)


def _message(value: Any, collection: str) -> Any:
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    custom_id, text, metadata = value.get("custom_id"), value.get("text"), value.get("metadata")
    if isinstance(custom_id, int) and not isinstance(custom_id, bool):
        custom_id = str(custom_id)
    if not isinstance(custom_id, str) or not isinstance(text, str):
        raise ValueError("custom_id and text must be strings")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError("metadata must be a JSON object")
    message = records_pb2.Record(custom_id=custom_id, text=text, collection=collection)
    if metadata is not None:
        message.metadata.update(metadata)
    return message


def _local_failure(result: PushResult, on_progress: Callable[[int], None], line: int, size: int, error: str) -> None:
    result.failed.append({"line": line, "custom_id": None, "error": error})
    on_progress(size)
