"""The gRPC record stream, served on a free local port, with a real gRPC client: real rows (SQLite), the
embedded Qdrant index and the batch tests' small deterministic embedding model behind the real model
runtime. The records go through the batches' own bulk upsert (tests/adapters/test_batch_kind.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2
from pydantic import ValidationError
from tests.adapters.test_batch_kind import (  # noqa: F401  # `bulk`: the fixture
    LIGHTHOUSE,
    Bulk,
    HashModel,
    HeldAfterClaim,
    bulk,
    upload_p1,
)
from tests.adapters.test_ingest_kind import DIM, MODEL, hash16, ingest_context
from tests.helpers import eventually

from inferline import db
from inferline.clock import utcnow
from inferline.config import Settings
from inferline.errors import Unavailable
from inferline.records import grpc as records_grpc
from inferline.records import records_pb2, records_pb2_grpc, stream
from inferline.records.client import PushFailed, push_file
from inferline.records.deps import RecordDeps, StreamLimits, StreamSlots
from inferline.records.grpc import ServerLimits, ServerTls, peer_address, start_server
from inferline.schema import documents
from inferline.search.filters import FieldType
from inferline.search.kind import IngestInput, run_ingest
from inferline.search.model import Collection, DocumentStatus
from inferline.search.store import SearchStore
from inferline.search.tokens import tokenize
from inferline.tenants import Authenticator, create_key


@dataclass
class Served:
    bulk: Bulk
    deps: RecordDeps
    stub: records_pb2_grpc.RecordStreamStub
    keys: dict[str, str]  # tenant -> API key
    target: str  # host:port

    def upload(self, records: Iterable[Any] | AsyncIterator[Any], tenant: str = "t", key: str | None = None) -> Any:
        key = key if key is not None else self.keys[tenant]
        return self.stub.Upload(records, metadata=(("authorization", f"Bearer {key}"),), timeout=60)

    async def collection(self, tenant: str = "t", name: str = "docs", **fields: FieldType) -> Collection:
        collection = Collection(
            id=f"c-{name}",
            tenant=tenant,
            name=name,
            fields=fields,
            embedding_model=MODEL,
            dim=DIM,
            chunk_tokens=128,
            overlap_tokens=16,
            version=0,
            created_at=utcnow(),
        )
        async with db.write(self.bulk.search.engine) as conn:
            await SearchStore(conn).add_collection(collection)
        await self.bulk.search.index.create(collection.spec)
        return collection

    async def documents(self, collection: Collection) -> list[dict[str, Any]]:
        async with db.read(self.bulk.search.engine) as conn:
            query = sa.select(documents).where(documents.c.collection_id == collection.id)
            return [dict(row) for row in (await conn.execute(query)).mappings()]


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(bulk: Bulk) -> AsyncIterator[Serve]:  # noqa: F811  # the imported fixture
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel]] = []
    auth = Authenticator(bulk.search.engine, cache_s=60)
    keys = {tenant: (await create_key(bulk.search.engine, tenant))[1] for tenant in ("t", "u")}

    async def start(tls: ServerTls | None = None, **limits: Any) -> Served:
        stream_limits = StreamLimits(**limits)
        deps = RecordDeps(bulk.batches, stream_limits, StreamSlots(stream_limits.streams_per_tenant))
        server, port = await start_server(deps, auth, ServerLimits(max_message_bytes=2**20), "127.0.0.1", 0, tls=tls)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel))
        return Served(bulk, deps, records_pb2_grpc.RecordStreamStub(channel), keys, f"127.0.0.1:{port}")

    yield start
    for server, channel in started:
        await channel.close()
        await server.stop(grace=None)


def record(i: int, collection: str = "docs", **changes: Any) -> records_pb2.Record:
    values: dict[str, Any] = {
        "custom_id": f"p{i}",
        "text": f"posting {i}: welder wanted, shift {i % 3}",
        "collection": collection,
    } | changes
    metadata = values.pop("metadata", {"n": i})
    message = records_pb2.Record(**values)
    if metadata is not None:
        message.metadata.CopyFrom(_struct(metadata))
    return message


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    found = struct_pb2.Struct()
    found.update(values)
    return found


async def silent() -> AsyncIterator[Any]:
    """A request stream that writes nothing and never ends: the server refuses the call before reading
    (a client still writing then sees grpc.aio's INTERNAL, not the server's status)."""
    await asyncio.Event().wait()
    yield  # pragma: no cover - never reached


async def acks_of(call: Any) -> list[records_pb2.Ack]:
    return [ack async for ack in call]


async def test_an_upload_without_a_key_or_with_a_wrong_one_is_refused_unauthenticated(serve: Serve) -> None:
    served = await serve()
    await served.collection()
    for key in ("", "il_not-a-key-anyone-has"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await acks_of(served.upload(silent(), key=key))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    without = served.stub.Upload(silent(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await acks_of(without)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await served.documents(await _only(served)) == []


async def _only(served: Served) -> Collection:
    async with db.read(served.bulk.search.engine) as conn:
        found = await SearchStore(conn).collection_named("t", "docs")
    assert found is not None
    return found


async def test_another_tenants_collection_is_not_found_and_the_records_before_it_are_acked(serve: Serve) -> None:
    served = await serve(group_records=1)
    mine = await served.collection()
    theirs = await served.collection(tenant="u", name="theirs")

    call = served.upload([record(0), record(1, collection="theirs")])
    acks: list[records_pb2.Ack] = []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for ack in call:
            acks.append(ack)

    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "theirs" in (refused.value.details() or "")
    assert [(ack.seq, ack.custom_id) for ack in acks] == [(0, "p0")]
    assert len(await served.documents(mine)) == 1 and await served.documents(theirs) == []


async def test_acks_come_in_order_each_once_its_record_is_stored_and_searchable(serve: Serve) -> None:
    served = await serve(group_records=4)
    collection = await served.collection()
    index = served.bulk.search.index

    seen: list[int] = []
    async for ack in served.upload([record(i) for i in range(30)]):
        seen.append(ack.seq)
        # Acked means committed: the document is ready and its chunk found by its words, already.
        [row] = [row for row in await served.documents(collection) if row["external_id"] == ack.custom_id]
        assert (row["status"], row["id"], ack.error) == (DocumentStatus.READY, ack.document_id, "")
        hits = await index.keyword(collection.spec, tokenize(f"posting {ack.seq}"), None, 50)
        assert ack.document_id in {hit.document_id for hit in hits}

    assert seen == list(range(30))
    assert await served.bulk.version(collection) >= 1  # cached searches retired as records landed


async def test_a_bad_record_gets_its_reason_in_its_ack_and_the_stream_goes_on(serve: Serve) -> None:
    served = await serve()
    collection = await served.collection(years=FieldType.INT)
    sent = [
        record(0, metadata={"years": 3}),  # 3.0 in a Struct: stored as the int field's 3
        record(1, text="   "),
        record(2, custom_id=""),
        record(3, metadata={"years": "many"}),
        record(4, text="x" * (served.bulk.batches.limits.max_record_bytes + 1)),
        record(5, metadata=None),
        record(6, metadata={"years": float("nan")}),  # a Struct holds it; no JSON does
    ]

    acks = await acks_of(served.upload(sent))

    assert [ack.seq for ack in acks] == list(range(7))
    errors = [ack.error for ack in acks]
    assert errors[0] == errors[5] == ""
    assert errors[1] == "text: empty" and errors[2] == "custom_id: missing or not a string"
    assert "years" in errors[3] and "setting batch_max_record_bytes" in errors[4]
    assert errors[6].startswith("metadata: cannot be read")
    assert all(ack.document_id == "" for ack in acks[1:5])
    stored = {row["external_id"]: row for row in await served.documents(collection)}
    assert sorted(stored) == ["p0", "p5"] and stored["p0"]["metadata"] == {"years": 3}


async def test_metadata_too_large_to_be_allowed_is_refused_unread_and_a_large_one_is_read_off_the_loop(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """800 kB of empty objects took 0.43 s to convert on the event loop (every tenant's requests and
    streams wait); over MAX_METADATA_MESSAGE_BYTES a record's metadata is refused unread, and one over
    METADATA_ON_LOOP_BYTES is converted on a thread."""
    served = await serve()
    collection = await served.collection()
    on_threads: list[int] = []
    real = records_grpc._metadata

    def recorded(struct: Any) -> Any:
        on_threads.append(threading.get_ident())
        return real(struct)

    monkeypatch.setattr(records_grpc, "_metadata", recorded)
    bomb = record(0, metadata=None)
    bomb.metadata.update({f"k{i}": {} for i in range(50_000)})  # ~0.7 MB sent, under the message limit
    assert records_grpc.MAX_METADATA_MESSAGE_BYTES < bomb.ByteSize() < 2**20
    large = {f"key{i}": "v" * 20 for i in range(800)}  # ~26 kB: allowed, converted on a thread
    sent = [bomb, record(1, metadata=large), record(2, metadata={"n": 2})]

    acks = await acks_of(served.upload(sent))

    assert acks[0].error.startswith("metadata: over 65536 bytes of JSON") and acks[0].document_id == ""
    assert acks[1].error == acks[2].error == ""
    assert len(on_threads) == 2 and on_threads[0] != threading.get_ident() == on_threads[1]
    stored = {row["external_id"]: row for row in await served.documents(collection)}
    assert stored["p1"]["metadata"] == large and sorted(stored) == ["p1", "p2"]


def test_a_peer_is_counted_by_its_address_not_its_connection() -> None:
    assert peer_address("ipv4:203.0.113.7:51234") == peer_address("ipv4:203.0.113.7:40000") == "203.0.113.7"
    assert peer_address("ipv6:[2001:db8::1]:443") == peer_address("ipv6:%5B2001:db8::1%5D:9") == "2001:db8::1"


async def test_ten_thousand_records_streamed_are_stored_and_searchable(serve: Serve) -> None:
    served = await serve(window_records=1024, group_records=512)
    collection = await served.collection()
    total = 10_000

    acks = await acks_of(served.upload(record(i) for i in range(total)))

    assert [ack.seq for ack in acks] == list(range(total)) and not any(ack.error for ack in acks)
    rows = await served.documents(collection)
    assert len(rows) == total and {row["status"] for row in rows} == {DocumentStatus.READY}
    assert await served.bulk.search.index.count(collection.id) == total
    hits = await served.bulk.search.index.keyword(collection.spec, tokenize("posting 9876"), None, 5)
    by_id = {row["id"]: row["external_id"] for row in rows}
    assert by_id[hits[0].document_id or ""] == "p9876"


async def test_a_stream_cut_midway_and_resumed_from_its_last_ack_loses_and_duplicates_nothing(serve: Serve) -> None:
    served = await serve(window_records=64, group_records=16)
    collection = await served.collection()
    total = 600
    call = served.upload(record(i) for i in range(total))
    last = -1
    async for ack in call:
        last = ack.seq
        if last >= 200:
            call.cancel()  # the connection lost, records in flight unacknowledged
            break
    assert 200 <= last < total - 64

    resumed = await acks_of(served.upload(record(i) for i in range(last + 1, total)))

    assert [ack.seq for ack in resumed] == list(range(total - last - 1))  # a new stream counts from 0
    assert [ack.custom_id for ack in resumed] == [f"p{i}" for i in range(last + 1, total)]
    rows = await served.documents(collection)
    assert sorted(row["external_id"] for row in rows) == sorted(f"p{i}" for i in range(total))
    assert {row["status"] for row in rows} == {DocumentStatus.READY} and sum(row["chunks"] for row in rows) == total
    assert await served.bulk.search.index.count(collection.id) == total  # no chunk indexed twice


async def test_the_server_reads_no_more_than_its_window_ahead_of_its_acks(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await serve(window_records=8, group_records=4)
    await served.collection()
    gate = asyncio.Event()
    real = stream.upsert_chunk

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(stream, "upsert_chunk", held)
    call = served.upload(record(i) for i in range(100))
    reading = asyncio.ensure_future(acks_of(call))

    await eventually(lambda: served.deps.peak_unacked, lambda peak: peak == 8)  # read 8, then it waits
    assert not reading.done()
    gate.set()
    acks = await reading

    assert [ack.seq for ack in acks] == list(range(100))
    assert served.deps.peak_unacked == 8  # never more than the window, over the whole stream


async def test_a_tenant_at_its_stream_limit_is_refused_while_another_tenant_streams(serve: Serve) -> None:
    served = await serve(streams_per_tenant=1)
    await served.collection()
    await served.collection(tenant="u", name="theirs")
    hold = asyncio.Event()

    async def slow(collection: str) -> AsyncIterator[records_pb2.Record]:
        yield record(0, collection=collection)
        await hold.wait()

    first = served.upload(slow("docs"))
    assert (await first.read()).seq == 0  # the stream is open and holds its slot
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await acks_of(served.upload([record(1)]))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    other = served.upload(slow("theirs"), tenant="u")
    assert (await other.read()).custom_id == "p0"  # another tenant is not held up
    hold.set()
    for call in (first, other):
        assert await call.read() == grpc.aio.EOF
    await eventually(lambda: served.deps.slots.open, lambda open_by_tenant: open_by_tenant == {})


async def test_a_stream_idle_past_its_limit_ends_with_deadline_exceeded_after_acking_what_it_got(
    serve: Serve,
) -> None:
    served = await serve(idle_s=0.2)
    await served.collection()

    async def then_silent() -> AsyncIterator[records_pb2.Record]:
        yield record(0)
        await asyncio.Event().wait()

    call = served.upload(then_silent())
    acks: list[records_pb2.Ack] = []
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for ack in call:
            acks.append(ack)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [ack.custom_id for ack in acks] == ["p0"]


def test_integral_numbers_of_a_struct_become_ints_and_others_stay() -> None:
    assert stream.integral({"a": 3.0, "b": [1.0, 2.5], "c": {"d": -0.0}, "e": 1e300, "f": "3"}) == {
        "a": 3,
        "b": [1, 2.5],
        "c": {"d": 0},
        "e": 1e300,
        "f": "3",
    }


def stream_stopped(
    monkeypatch: pytest.MonkeyPatch, *, after_groups: int, cut: bool, every_stream: bool = False
) -> list[int]:
    """The server's streams stopped after `after_groups` groups of acks, the first one only or every one:
    cut (UNAVAILABLE, as a restart does) or ended as if done (status OK). Returns the streams counted."""
    real = records_grpc.upload
    calls: list[int] = []

    async def stopped(*args: Any) -> AsyncIterator[Any]:
        calls.append(1)
        groups = 0
        if after_groups == 0 and (every_stream or len(calls) == 1):  # before any ack
            if cut:
                raise Unavailable("the server is restarting", retry_after_s=0)
            return
        async for acks in real(*args):
            yield acks
            groups += 1
            if (every_stream or len(calls) == 1) and groups == after_groups:
                if cut:
                    raise Unavailable("the server is restarting", retry_after_s=0)
                return

    monkeypatch.setattr(records_grpc, "upload", stopped)
    return calls


# A small window: the sender waits for acks when the cut comes (a record taken from the file then, before
# its turn in the window, was lost: 297 stored of 298).
@pytest.mark.parametrize("window_records", [256, 4, 1])
async def test_push_streams_a_file_and_after_a_cut_resends_what_was_not_acknowledged(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, window_records: int
) -> None:
    served = await serve(window_records=32, group_records=8)
    collection = await served.collection()
    calls = stream_stopped(monkeypatch, after_groups=5, cut=True)
    path = tmp_path / "records.jsonl"
    lines = [json.dumps({"custom_id": f"p{i}", "text": f"posting {i}", "metadata": {"n": i}}) for i in range(300)]
    lines[10] = "{not json"
    lines[20] = json.dumps({"custom_id": "p20", "text": " "})
    path.write_text("\n".join(lines) + "\n")
    progressed: list[int] = []

    result = await push_file(
        served.target,
        served.keys["t"],
        path,
        "docs",
        on_progress=progressed.append,
        retry_after_s=0,
        window_records=window_records,
    )

    assert result.reconnects == 1 and len(calls) == 2 and result.stored == 298
    assert [(f["line"], f["custom_id"]) for f in result.failed] == [(11, None), (21, "p20")]
    assert result.failed[1]["error"] == "text: empty"
    assert sum(progressed) == path.stat().st_size
    rows = await served.documents(collection)
    assert len(rows) == 298 and await served.bulk.search.index.count(collection.id) == 298


@pytest.mark.parametrize("ends_early", ["once", "every stream", "cut before any ack"])
async def test_push_does_not_take_a_stream_ended_as_done_before_its_acks_for_a_success(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ends_early: str
) -> None:
    """A server that ends the stream with OK while records are unacknowledged (a bug, or a stop that ends
    its streams so): the client sends them again on a new stream, goes on while each stream gets records
    acknowledged (its attempts count failures in a row), and fails after its attempts when none does,
    rather than report records as pushed that were never stored."""
    served = await serve(window_records=32, group_records=8)
    await served.collection()
    # Cut before any ack: a stream stopped before it read anything reaches the client as gRPC's INTERNAL
    # when the client's write meets the ended stream first, else as the stream's own status: a race, and
    # both are retried, as a cut is.
    never = ends_early == "cut before any ack"
    calls = stream_stopped(monkeypatch, after_groups=0 if never else 3, cut=never, every_stream=ends_early != "once")
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"p{i}", "text": f"posting {i}"}) + "\n" for i in range(100)))
    if never:
        with pytest.raises(PushFailed, match=r"INTERNAL|UNAVAILABLE: the server is restarting"):
            await push_file(served.target, served.keys["t"], path, "docs", retry_after_s=0, attempts=3)
        assert len(calls) == 3
        return
    result = await push_file(served.target, served.keys["t"], path, "docs", retry_after_s=0, attempts=3)
    assert result.stored == 100 and len(calls) == result.reconnects + 1
    # Every stream ended after three groups of acks: more streams than `attempts`, each one progressing.
    assert result.reconnects == 1 if ends_early == "once" else result.reconnects >= 3, result.reconnects


async def test_push_with_a_wrong_key_fails_at_once(serve: Serve, tmp_path: Path) -> None:
    served = await serve()
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "text": "b"}) + "\n")
    with pytest.raises(PushFailed, match="UNAUTHENTICATED"):
        await push_file(served.target, "il_wrong", path, "docs", retry_after_s=0)


def self_signed(folder: Path) -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1 signed by its own key (PEM), made by the machine's openssl."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    openssl = shutil.which("openssl") or "openssl"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    command = [openssl, "req", "-x509", *curve, "-nodes", "-days", "1", *subject, *files]
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    return cert.read_bytes(), key.read_bytes()


async def test_push_over_tls_checks_the_servers_certificate_and_a_plain_client_is_refused(
    serve: Serve, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    served = await serve(tls=ServerTls(cert, key))
    collection = await served.collection()
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"p{i}", "text": f"posting {i}"}) + "\n" for i in range(20)))

    result = await push_file(served.target, served.keys["t"], path, "docs", tls=True, ca_pem=cert, retry_after_s=0)

    assert result.stored == 20 and result.failed == []
    assert len(await served.documents(collection)) == 20
    with pytest.raises(PushFailed, match="UNAVAILABLE"):  # plain text to a TLS port: no handshake
        await push_file(served.target, served.keys["t"], path, "docs", attempts=1)
    with pytest.raises(PushFailed, match="UNAVAILABLE"):  # TLS, but the certificate is no CA of the system's
        await push_file(served.target, served.keys["t"], path, "docs", tls=True, attempts=1)


def test_a_tls_certificate_without_its_key_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="give both or neither"):
        Settings(data_dir=tmp_path, grpc_port=0, grpc_tls_cert_file=tmp_path / "cert.pem")


async def test_a_commit_the_client_left_holds_its_tenants_slot_until_it_ends(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await serve(streams_per_tenant=1, group_records=4)
    collection = await served.collection()
    entered, gate, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    real_upsert, real_upload = stream.upsert_chunk, stream._upload

    async def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await gate.wait()
        return await real_upsert(*args, **kwargs)

    async def watched(*args: Any) -> AsyncIterator[Any]:
        try:
            async for acks in real_upload(*args):
                yield acks
        finally:
            closed.set()  # the server has seen the client go

    monkeypatch.setattr(stream, "upsert_chunk", held)
    monkeypatch.setattr(stream, "_upload", watched)
    call = served.upload(record(i) for i in range(4))
    await entered.wait()
    call.cancel()
    await closed.wait()

    assert served.deps.slots.open == {"t": 1}  # the orphaned commit still runs, in the stream's slot
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await acks_of(served.upload([record(9)]))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    gate.set()
    await eventually(lambda: served.deps.slots.open, lambda open_by_tenant: open_by_tenant == {})
    rows = await served.documents(collection)  # the group that was committing, finished anyway
    assert rows and {row["status"] for row in rows} == {DocumentStatus.READY}


async def test_a_client_that_reads_no_acks_is_ended_after_the_idle_limit(serve: Serve) -> None:
    served = await serve(idle_s=0.5, group_records=256, window_records=1024)
    await served.collection()
    # A client whose receive window stays small (gRPC's core otherwise grows it and buffers every ack).
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    channel = grpc.aio.insecure_channel(served.target, options=options)
    stub = records_pb2_grpc.RecordStreamStub(channel)
    metadata = (("authorization", f"Bearer {served.keys['t']}"),)
    call = stub.Upload((record(i) for i in range(3_000)), metadata=metadata, timeout=60)  # its acks: not read

    await eventually(lambda: served.deps.slots.open, lambda open_by_tenant: open_by_tenant == {"t": 1})
    await eventually(lambda: served.deps.slots.open, lambda open_by_tenant: open_by_tenant == {}, timeout_s=30)
    acks: list[records_pb2.Ack] = []
    with pytest.raises(grpc.aio.AioRpcError) as ended:  # what was sent, then the status behind it
        async for ack in call:
            acks.append(ack)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no acknowledgment read for 0.5 s" in (ended.value.details() or "")
    assert 0 < len(acks) < 3_000 and [ack.seq for ack in acks] == list(range(len(acks)))
    await channel.close()


async def test_a_group_of_one_record_with_the_model_down_ends_unavailable_and_a_bad_record_alone_fails_alone(
    serve: Serve,
) -> None:
    served = await serve()
    collection = await served.collection()
    HashModel.down = True
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await acks_of(served.upload([record(0)]))
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE  # the client resends; the record is not failed
    HashModel.down = False
    [ack] = await acks_of(served.upload([record(1, text="posting 1: poison")]))
    assert ack.error.startswith("internal error (RuntimeError)")
    [again] = await acks_of(served.upload([record(0)]))
    assert again.error == "" and again.document_id
    assert {row["external_id"]: row["status"] for row in await served.documents(collection)} == {
        "p0": DocumentStatus.READY,
        "p1": DocumentStatus.FAILED,
    }


def push_cli(*args: str) -> tuple[int, str, str]:
    """`inferline records push ...` in this process (its own event loop: call it from a thread)."""
    from typer.testing import CliRunner

    from inferline.cli import app

    result = CliRunner().invoke(app, ["records", "push", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


async def test_records_pushed_from_the_command_line_are_stored_and_a_second_push_upserts_in_place(
    serve: Serve, tmp_path: Path
) -> None:
    served = await serve()
    collection = await served.collection(n=FieldType.INT)
    roles = ["welder", "nurse", "accountant"]
    lines = [
        {"custom_id": f"p{i}", "text": f"{roles[i % 3]} wanted, posting {i}", "metadata": {"n": i}} for i in range(60)
    ]
    lines[41] = {"custom_id": "p41", "text": "", "metadata": {"n": 41}}  # empty: named, the rest stored
    source = tmp_path / "postings.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    args = [str(source), "--collection", "docs", "--grpc", served.target, "--key", served.keys["t"], "--json"]

    code, out, err = await asyncio.to_thread(push_cli, *args)

    assert code == 1, err  # one record failed
    result = json.loads(out)
    assert result["stored"] == 59 and [(f["line"], f["custom_id"]) for f in result["failed"]] == [(42, "p41")]
    rows = await served.documents(collection)
    assert len(rows) == 59 and {row["status"] for row in rows} == {DocumentStatus.READY}
    code, out, _ = await asyncio.to_thread(push_cli, *args)
    assert json.loads(out)["stored"] == 59 and len(await served.documents(collection)) == 59  # by custom_id
    code, _, err = await asyncio.to_thread(push_cli, *args, "--no-tls", "--ca-file", str(source))
    assert code == 2 and "--ca-file needs TLS" in err


async def test_a_stream_overtaken_by_an_upload_and_its_ingest_leaves_the_newer_content(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await serve(group_records=2)
    collection = await served.collection()
    held = HeldAfterClaim(monkeypatch)
    acking = asyncio.ensure_future(acks_of(served.upload([record(1), record(2)])))
    await asyncio.wait_for(held.reached.wait(), 10)

    file, uploaded = await upload_p1(served.bulk, collection, tmp_path, LIGHTHOUSE)
    ingest = IngestInput(collection_id=collection.id, document_id=uploaded.id)
    await run_ingest(served.bulk.search, served.bulk.ocr, ingest_context(uploaded, {MODEL: hash16}), ingest)
    held.release.set()
    assert [ack.error for ack in await acking] == ["", ""]

    [row] = [row for row in await served.documents(collection) if row["external_id"] == "p1"]
    assert (row["status"], row["file_id"], row["job_id"], row["chunks"]) == (
        DocumentStatus.READY,
        file.id,
        uploaded.job_id,
        1,
    )
    index = served.bulk.search.index

    async def holding(words: str) -> set[str | None]:
        return {hit.document_id for hit in await index.keyword(collection.spec, tokenize(words), None, 9)}

    assert await holding("lighthouse") == {uploaded.id}
    assert uploaded.id not in await holding("welder")
    assert await index.count(collection.id) == 2
