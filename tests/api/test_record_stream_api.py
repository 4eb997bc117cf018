"""The record stream as `serve --grpc-port` runs it: started in the app's lifespan, on the app's keys and
tenants (the stream itself: tests/adapters/test_record_stream.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from tests.api.conftest import MakeApi

from inferline.records import records_pb2, records_pb2_grpc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def written(records: list[Any]) -> AsyncIterator[Any]:
    """`records`, then no more and no end of writing: the server's answer ends the call. (A client still
    writing when the server ends a call sees grpc.aio's INTERNAL "Internal error from Core", not the
    server's status.)"""
    for item in records:
        yield item
    await asyncio.Event().wait()


async def test_serve_with_a_grpc_port_serves_the_stream_on_the_apps_keys(make_api: MakeApi) -> None:
    port = free_port()
    async with make_api(workers=0, grpc_port=port) as api:
        key = api.client.headers["authorization"]
        record = records_pb2.Record(custom_id="a", text="b", collection="nowhere")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = records_pb2_grpc.RecordStreamStub(channel)
            for metadata, sent, code in [
                ((("authorization", "Bearer il_wrong"),), [], grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", key),), [record], grpc.StatusCode.NOT_FOUND),  # no such collection
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    _ = [ack async for ack in stub.Upload(written(sent), metadata=metadata, timeout=10)]
                assert ended.value.code() == code
