"""An ingest job that a newer submission of its document overtook (uploaded again, deleted) writes nothing:
neither the document's status nor its chunks. Each race is played in a fixed order: the older job is held
inside its work (its embedding, or its index write) by an event, the newer submission is made, then the
older job is let go. On SQLite and PostgreSQL, with either index (embedded Qdrant, pgvector)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from tests.adapters.test_ingest_kind import MODEL, Setup, hash16, ingest_context, ingest_input, setup_on

from inferline import db
from inferline.clock import utcnow
from inferline.errors import NotFound
from inferline.files.service import receive_file
from inferline.jobs.testing import MemoryContext
from inferline.schema import documents, files
from inferline.search import documents as documents_module
from inferline.search.documents import add_document, delete_document
from inferline.search.embedders import EmbedInput
from inferline.search.index import ChunkRecord, IndexSpec, SearchIndex
from inferline.search.kind import SUPERSEDED, run_ingest
from inferline.search.model import Collection, Document, DocumentStatus
from inferline.search.pgvector import PgVectorIndex
from inferline.search.qdrant import QdrantIndex
from inferline.search.store import SearchStore
from inferline.search.tokens import tokenize

# The old content is several chunks of words the new one lacks, so a stale write shows in the count too.
OLD_TEXT = "\n\n".join(f"# Part {n}\n\n" + "apricot orchard harvest ledger " * 40 for n in range(6))
NEW_TEXT = "A single paragraph about blueberry jam."


class HeldIndex:
    """The test's index, whose `upsert` waits for `release` once `hold` is set: a job caught inside its
    index write."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self.hold = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)

    async def upsert(self, spec: IndexSpec, records: list[ChunkRecord]) -> None:
        if self.hold:
            self.reached.set()
            await self.release.wait()
        await self.index.upsert(spec, records)

    async def delete_documents(self, collection_id: str, document_ids: Sequence[str]) -> None:
        await self.index.delete_documents(collection_id, document_ids)


class Races(Setup):
    held: HeldIndex

    async def upload(self, collection: Collection, text: str, filename: str) -> Document:
        file = await receive_file(
            self.search.blobs, tenant="t", source=io.BytesIO(text.encode()), filename=filename, max_bytes=10**6
        )
        _, document, _ = await add_document(
            self.submitter, self.search.blobs, tenant="t", name=collection.name, file=file, metadata={}, external_id="d"
        )
        return document

    async def ingest(self, document: Document, ctx: MemoryContext | None = None) -> dict[str, Any]:
        ctx = ctx or ingest_context(document, {MODEL: hash16})
        return await run_ingest(self.search, self.ocr, ctx, ingest_input(document))

    async def holding_embedding(self, document: Document) -> tuple[asyncio.Future[dict[str, Any]], asyncio.Event]:
        """The document's ingest, started and held at its first chunk's embedding until the event is set."""
        release, reached = asyncio.Event(), asyncio.Event()

        async def held(item: EmbedInput) -> np.ndarray:
            reached.set()
            await release.wait()
            return hash16(item)

        running = asyncio.ensure_future(self.ingest(document, ingest_context(document, {MODEL: held})))
        await asyncio.wait_for(reached.wait(), 10)
        return running, release

    async def words_in_index(self, collection: Collection, words: str) -> set[str | None]:
        """The documents whose chunks hold these words."""
        found = await self.search.index.keyword(collection.spec, tokenize(words), None, 100)
        return {candidate.document_id for candidate in found}


@pytest.fixture(params=["qdrant", "pgvector"])
async def races(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[Races]:
    if request.param == "qdrant":
        index: SearchIndex = QdrantIndex(tmp_path / "index")
    else:
        index = PgVectorIndex(request.getfixturevalue("pgvector_url"))
    held = HeldIndex(index)
    async with setup_on(database_url, held, tmp_path) as made:
        found = Races(made.search, made.ocr, made.submitter)
        found.held = held
        yield found


async def test_an_ingest_overtaken_by_a_newer_upload_leaves_its_status_and_chunks(races: Races) -> None:
    collection = await races.collection()
    old = await races.upload(collection, OLD_TEXT, "old.txt")
    running, release = await races.holding_embedding(old)

    new = await races.upload(collection, NEW_TEXT, "new.txt")
    assert new.id == old.id and new.job_id != old.job_id
    newer = await races.ingest(new)
    release.set()
    stale = await running

    document = await races.reread(collection, new)
    assert document.status == DocumentStatus.READY and document.chunks == newer["chunks"] == 1
    assert document.sha256 == new.sha256 and document.job_id == new.job_id
    assert await races.search.index.count(collection.id) == 1
    assert await races.words_in_index(collection, "blueberry jam") == {new.id}
    assert await races.words_in_index(collection, "apricot orchard") == set()
    assert stale == {"document_id": old.id, "skipped": SUPERSEDED}


async def test_an_ingest_overtaken_by_an_upload_still_queued_writes_nothing(races: Races) -> None:
    collection = await races.collection()
    old = await races.upload(collection, OLD_TEXT, "old.txt")
    running, release = await races.holding_embedding(old)

    new = await races.upload(collection, NEW_TEXT, "new.txt")
    release.set()
    stale = await running

    queued = await races.reread(collection, new)
    assert queued.status == DocumentStatus.QUEUED and queued.chunks == 0 and queued.job_id == new.job_id
    assert await races.search.index.count(collection.id) == 0
    assert stale["skipped"] == SUPERSEDED
    assert (await races.ingest(new))["chunks"] == 1


async def test_a_failing_ingest_overtaken_by_a_newer_upload_leaves_its_status(races: Races) -> None:
    collection = await races.collection()
    old = await races.upload(collection, OLD_TEXT, "old.txt")
    release, reached = asyncio.Event(), asyncio.Event()

    async def down(item: EmbedInput) -> np.ndarray:
        reached.set()
        await release.wait()
        raise ConnectionError("model server restarting")

    running = asyncio.ensure_future(races.ingest(old, ingest_context(old, {MODEL: down}, attempt=3)))
    await asyncio.wait_for(reached.wait(), 10)
    new = await races.upload(collection, NEW_TEXT, "new.txt")
    await races.ingest(new)
    release.set()
    [stale] = await asyncio.gather(running, return_exceptions=True)

    ready = await races.reread(collection, new)
    assert ready.status == DocumentStatus.READY and ready.error is None and ready.chunks == 1
    assert stale == {"document_id": old.id, "skipped": SUPERSEDED}  # its last failure is moot: not the job's


async def test_an_upload_waits_for_an_older_ingest_inside_its_index_write(races: Races) -> None:
    collection = await races.collection()
    old = await races.upload(collection, OLD_TEXT, "old.txt")
    races.held.hold = True
    running = asyncio.ensure_future(races.ingest(old))
    await asyncio.wait_for(races.held.reached.wait(), 10)

    replacing = asyncio.ensure_future(races.upload(collection, NEW_TEXT, "new.txt"))
    await asyncio.sleep(0.3)
    waited = not replacing.done()  # the document's row is the older job's until its write is whole
    races.held.hold = False
    races.held.release.set()
    assert (await running)["chunks"] > 1
    new = await replacing

    queued = await races.reread(collection, new)
    assert queued.status == DocumentStatus.QUEUED and queued.job_id == new.job_id
    assert waited
    assert (await races.ingest(new))["chunks"] == 1
    assert await races.search.index.count(collection.id) == 1
    assert await races.words_in_index(collection, "apricot orchard") == set()


async def test_a_queued_ingest_of_a_replaced_document_does_nothing(races: Races) -> None:
    collection = await races.collection()
    old = await races.upload(collection, OLD_TEXT, "old.txt")
    new = await races.upload(collection, NEW_TEXT, "new.txt")

    ctx = ingest_context(old, {MODEL: hash16})
    assert (await races.ingest(old, ctx))["skipped"] == SUPERSEDED and ctx.predictions == []
    assert (await races.reread(collection, new)).status == DocumentStatus.QUEUED


async def test_a_document_deleted_while_its_ingest_runs_stays_deleted(races: Races) -> None:
    collection = await races.collection()
    old = await races.upload(collection, OLD_TEXT, "old.txt")
    running, release = await races.holding_embedding(old)

    await delete_document(races.search, collection=collection, document_id=old.id)
    release.set()
    stale = await running

    assert await races.search.index.count(collection.id) == 0
    assert await races.words_in_index(collection, "apricot orchard") == set()
    with pytest.raises(NotFound):
        await races.reread(collection, old)
    assert stale["skipped"] == SUPERSEDED


async def test_an_upload_between_a_deletes_read_and_write_leaves_no_file_behind(
    races: Races, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete that read the document in one transaction and deleted it in another released the file it
    had read, not the one an upload in between gave the row: that file stayed, counted, with no document."""
    collection = await races.collection()
    old = await races.upload(collection, OLD_TEXT, "old.txt")
    read_document = documents_module.get_document

    async def upload_after_reading(*args: Any, **kwargs: Any) -> Document:
        found = await read_document(*args, **kwargs)
        await races.upload(collection, NEW_TEXT, "new.txt")
        return found

    monkeypatch.setattr(documents_module, "get_document", upload_after_reading)
    await delete_document(races.search, collection=collection, document_id=old.id)

    async with db.read(races.search.engine) as conn:
        left = (await conn.execute(sa.select(files.c.id).where(files.c.tenant == "t"))).scalars().all()
        used = (await conn.execute(sa.select(documents.c.file_id).where(documents.c.tenant == "t"))).scalars().all()
    assert set(left) == set(used)  # every file kept is a document's


async def test_a_delete_between_an_uploads_read_and_write_leaves_no_file_without_its_document(
    races: Races, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = await races.collection()
    old = await races.upload(collection, OLD_TEXT, "old.txt")
    read_same = SearchStore.same_document
    deleting: list[asyncio.Task[None]] = []

    async def delete_after_reading(self: SearchStore, *args: Any, **kwargs: Any) -> Document | None:
        found = await read_same(self, *args, **kwargs)
        if not deleting:
            deleting.append(
                asyncio.create_task(delete_document(races.search, collection=collection, document_id=old.id))
            )
            # Unlocked, the delete commits now; locked, it waits for this upload (awaiting it would deadlock).
            await asyncio.wait(deleting, timeout=1.0)
        return found

    monkeypatch.setattr(SearchStore, "same_document", delete_after_reading)
    await races.upload(collection, NEW_TEXT, "new.txt")
    with contextlib.suppress(NotFound):  # it came after the upload, which had replaced the row it read
        await deleting[0]

    async with db.read(races.search.engine) as conn:
        left = (await conn.execute(sa.select(files.c.id).where(files.c.tenant == "t"))).scalars().all()
        used = (await conn.execute(sa.select(documents.c.file_id).where(documents.c.tenant == "t"))).scalars().all()
    assert set(left) == set(used)  # every file kept is a document's


async def test_a_batchs_lock_and_marks_touch_only_the_documents_still_its_own(races: Races) -> None:
    collection = await races.collection()
    document = await races.upload(collection, NEW_TEXT, "new.txt")
    now = utcnow()
    async with db.write(races.search.engine) as conn:
        store = SearchStore(conn)
        assert await store.lock_current(collection.id, [document.id, "absent"], job_id=document.job_id) == {document.id}
        assert await store.lock_current(collection.id, [document.id], job_id="an older batch") == set()
        assert await store.lock_current(collection.id, [document.id], job_id=None) == set()  # not a stream's
        for writer in ("an older batch", None):
            failed = {document.id: "stale"}
            assert await store.mark_indexed(collection.id, job_id=writer, ready={}, failed=failed, now=now) == []
            assert (
                await store.mark_indexed(collection.id, job_id=writer, ready={document.id: 7}, failed={}, now=now) == []
            )
    assert await races.reread(collection, document) == document  # queued, as its upload left it

    async with db.write(races.search.engine) as conn:
        ready = {document.id: 1}
        assert (
            await SearchStore(conn).mark_indexed(collection.id, job_id=document.job_id, ready=ready, failed={}, now=now)
            == []
        )
    assert (await races.reread(collection, document)).status == DocumentStatus.READY
