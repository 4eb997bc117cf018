"""The example workload of docs/architecture.md, added by its recipe as a plugin: its table, job kind,
result format, routes and CLI command work like a built-in workload's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.api.conftest import Api, MakeApi, make_api  # noqa: F401 - make_api is a fixture

PLUGIN = "tests.examples.notes"


@pytest.fixture
async def notes_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:  # noqa: F811
    async with make_api(database_url=database_url, plugins=[PLUGIN]) as api:
        yield api


async def test_a_note_and_its_job_are_created_together_and_the_job_counts_its_words(notes_api: Api) -> None:
    created = await notes_api.client.post("/api/v1/notes", json={"text": "one two  three\nfour"})
    assert created.status_code == 201, created.text
    note = created.json()
    assert note["words"] is None
    job = await notes_api.wait(note["job_id"])
    assert job["status"] == "succeeded" and job["kind"] == "notes.count"
    assert (await notes_api.client.get(f"/api/v1/notes/{note['id']}")).json()["words"] == 4
    text = await notes_api.client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": "text"})
    assert (
        text.status_code == 200 and text.text == "4 words\n" and text.headers["content-type"].startswith("text/plain")
    )
    hocr = await notes_api.client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": "hocr"})
    assert hocr.status_code == 422 and hocr.json()["field"] == "format"


async def test_another_tenants_note_is_not_found(notes_api: Api) -> None:
    note = (await notes_api.client.post("/api/v1/notes", json={"text": "mine"})).json()
    assert (await notes_api.other.get(f"/api/v1/notes/{note['id']}")).status_code == 404
    assert (await notes_api.anonymous.post("/api/v1/notes", json={"text": "x"})).status_code == 401


async def test_a_bad_note_is_refused_naming_the_field_and_the_routes_are_in_openapi(notes_api: Api) -> None:
    refused = await notes_api.client.post("/api/v1/notes", json={"text": ""})
    assert refused.status_code == 422 and "text" in refused.text
    paths = (await notes_api.client.get("/openapi.json")).json()["paths"]
    assert "/api/v1/notes" in paths and "/api/v1/notes/{note_id}" in paths


def test_the_cli_command_adds_a_note_and_prints_its_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferline.cli import build_app

    monkeypatch.setenv("INFERLINE_PLUGINS", f'["{PLUGIN}"]')
    monkeypatch.setenv("INFERLINE_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(build_app(), ["notes", "add", "a note of six words here"])
    assert result.exit_code == 0, result.output
    assert "6 words" in result.output


async def test_the_kind_counts_words_with_an_in_memory_context(tmp_path: Path) -> None:
    from inferline import db
    from inferline.clock import utcnow
    from inferline.jobs.testing import MemoryContext
    from tests.conftest import sqlite_url
    from tests.examples.notes import store
    from tests.examples.notes.deps import NotesDeps
    from tests.examples.notes.kind import CountInput, run_count

    engine = db.create_engine(sqlite_url(tmp_path))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(store.metadata.create_all)
            note = store.Note("n1", "t", "three small words", "j1", None, utcnow())
            await store.insert(conn, note)
        deps = NotesDeps(engine=engine, submitter=None, max_words=2)  # type: ignore[arg-type]
        ctx = MemoryContext(tenant="t")
        assert await run_count(deps, ctx, CountInput(note_id="n1")) == {"note_id": "n1", "words": 2}
        assert ctx.stages == ["read", "count"] and ctx.percents == [100.0]
        async with engine.connect() as conn:
            assert (await store.get(conn, tenant="t", note_id="n1")).words == 2  # type: ignore[union-attr]
        ctx.cancel()
        with pytest.raises(Exception, match="canceled"):
            await run_count(deps, ctx, CountInput(note_id="n1"))
    finally:
        await engine.dispose()
