"""The record stream served over gRPC (`RecordStream.Upload` of `records.proto`): the caller's API key from
the call's metadata (`authorization: Bearer <key>`, the REST API's tenants), one stream slot of its tenant,
then `stream.upload`. Domain errors become status codes in one table; a record's own failure is in its
ack, never a status."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf import json_format

from inferline.errors import (
    Conflict,
    InvalidInput,
    ModelError,
    NonRetryable,
    NotFound,
    Overloaded,
    Retry,
    Unauthorized,
    Unavailable,
    shown_message,
)
from inferline.ids import new_id
from inferline.records import records_pb2, records_pb2_grpc
from inferline.records.deps import RecordDeps
from inferline.records.stream import Acked, StreamIdle, StreamRecord, integral, upload
from inferline.search.documents import MAX_METADATA_BYTES
from inferline.tenants import Authenticator
from inferline.threads import to_thread

log = structlog.get_logger(__name__)

# Most specific first: the first class an error is an instance of gives its code.
STATUS_OF: list[tuple[type[Exception], grpc.StatusCode]] = [
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamIdle, grpc.StatusCode.DEADLINE_EXCEEDED),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (NonRetryable, grpc.StatusCode.FAILED_PRECONDITION),  # the collection was deleted meanwhile
    (Retry, grpc.StatusCode.UNAVAILABLE),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (ModelError, grpc.StatusCode.UNAVAILABLE),
]


@dataclass(frozen=True)
class ServerLimits:
    max_message_bytes: int = 2**20  # one Record (its text is held to batch_max_record_bytes besides)
    max_streams: int = 64  # open streams of all tenants together


class RecordStreamService(records_pb2_grpc.RecordStreamServicer):
    def __init__(self, deps: RecordDeps, auth: Authenticator) -> None:
        self.deps, self.auth = deps, auth

    async def Upload(  # the name the .proto gives the method
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        try:
            tenant = await self._tenant(context)
            # Closed here, not left to the garbage collector: its end gives back the tenant's stream slot.
            async with contextlib.aclosing(upload(self.deps, tenant, _records(request_iterator))) as groups:
                async for acks in groups:
                    for ack in acks:
                        if not await self._send(context, _ack_message(ack)):
                            return
        except Exception as exc:
            await _abort(context, exc)

    async def _send(self, context: grpc.aio.ServicerContext, ack: Any) -> bool:
        """Writes `ack`; False when the client has gone (cancelled, disconnected). A client that stops
        reading its acks (HTTP/2 flow control holds the write) is ended like one that stops sending records:
        else it would hold its tenant's stream slot for as long as it likes."""
        idle_s = self.deps.limits.idle_s
        try:
            await asyncio.wait_for(context.write(ack), idle_s)
        except TimeoutError as exc:
            raise StreamIdle(f"no acknowledgment read for {idle_s:g} s (setting grpc_idle_s)") from exc
        except Exception as exc:
            # grpc's own error (`ExecuteBatchError`, before the call shows as cancelled) for a write to a call
            # the client ended or whose connection broke: nothing more can reach that client, status included.
            log.info("record_stream_client_gone", error=repr(exc)[:200])
            return False
        return True

    async def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, key = str(metadata.get("authorization", "")).partition(" ")
        bearer = key.strip() if scheme.lower() == "bearer" else None
        return await self.auth.tenant_for(bearer, client=peer_address(context.peer()))


def peer_address(peer: str) -> str:
    """The client's address in gRPC's peer name (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`, `ipv6:%5B::1%5D:5678`):
    the unknown-key budget counts by address (and an IPv6 /64), as for HTTP, not by connection."""
    _, _, rest = urllib.parse.unquote(peer).partition(":")
    host = rest.rsplit(":", 1)[0] if rest.count(":") >= 1 else rest
    return host.strip("[]") or peer


# A record's metadata may hold MAX_METADATA_BYTES of JSON; as a protobuf Struct the same values take up to
# ~6 times that (a list of small numbers: 11 bytes each against 2). Anything larger is refused unread; a
# large one is converted on a thread: 800 kB of empty objects took 0.43 s, and a window of such records
# would hold the event loop, every tenant's requests and streams, for minutes.
MAX_METADATA_MESSAGE_BYTES = 8 * MAX_METADATA_BYTES
METADATA_ON_LOOP_BYTES = 16 * 1024


async def _records(messages: AsyncIterator[Any]) -> AsyncIterator[StreamRecord]:
    async for message in messages:
        metadata, error = None, None
        if message.HasField("metadata"):
            size = message.metadata.ByteSize()
            try:
                if size > MAX_METADATA_MESSAGE_BYTES:
                    error = f"metadata: over {MAX_METADATA_BYTES} bytes of JSON ({size} bytes as sent)"
                elif size > METADATA_ON_LOOP_BYTES:
                    metadata = await to_thread(_metadata, message.metadata)
                else:
                    metadata = _metadata(message.metadata)
            except (ValueError, TypeError, RecursionError) as exc:  # NaN, Infinity: no JSON holds them
                error = f"metadata: cannot be read ({str(exc)[:100] or type(exc).__name__})"
        yield StreamRecord(message.custom_id, message.text, metadata, message.collection, error)


def _metadata(struct: Any) -> Any:
    return integral(json_format.MessageToDict(struct))


def _ack_message(ack: Acked) -> Any:
    document_id, error = ack.document_id or "", ack.error or ""
    return records_pb2.Ack(seq=ack.seq, custom_id=ack.custom_id, document_id=document_id, error=error)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    """Ends the call with the error's status (raises). An error of no domain class is INTERNAL, logged,
    and shown as `shown_message` shows it over HTTP."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    reference = "the server's log"
    code = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), None)
    if code is None:
        reference = f"record stream {new_id()}"
        log.error("record_stream_failed", reference=reference, error=repr(exc)[:1000])
        code = grpc.StatusCode.INTERNAL
    await context.abort(code, shown_message(exc, reference=reference)[:1000])


def build_server(deps: RecordDeps, auth: Authenticator, limits: ServerLimits) -> grpc.aio.Server:
    """The gRPC server of the record stream (not started: add a port, then `start()`)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            # A client that vanished without closing is found within a minute or so.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ],
        maximum_concurrent_rpcs=limits.max_streams,
    )
    service = RecordStreamService(deps, auth)
    records_pb2_grpc.add_RecordStreamServicer_to_server(service, server)  # type: ignore[no-untyped-call]  # generated
    return server


@dataclass(frozen=True)
class ServerTls:
    """A certificate chain and its private key, PEM: the stream is served over TLS only."""

    cert_chain_pem: bytes
    private_key_pem: bytes


async def start_server(
    deps: RecordDeps,
    auth: Authenticator,
    limits: ServerLimits,
    host: str,
    port: int,
    *,
    tls: ServerTls | None = None,
) -> tuple[grpc.aio.Server, int]:
    """The server started on `host:port` (0: a free port), over TLS when `tls` is given; returns it and
    the port bound."""
    server = build_server(deps, auth, limits)
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(tls.private_key_pem, tls.cert_chain_pem)])
        bound = server.add_secure_port(address, credentials)
    await server.start()
    log.info("grpc_started", host=host, port=bound, tls=tls is not None)
    return server, int(bound)
