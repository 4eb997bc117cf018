"""Every operation of the OpenAPI document fuzzed with schemathesis, against the app in this process (one
in-process worker, SQLite): no 5xx, and every response's status, media type, headers and body as the
document says. Valid and invalid inputs both; a share of the cases address resources that exist.

CI runs `EXAMPLES` cases per operation on SQLite, the same ones every run (derandomized); `./dev fuzz` runs
many more with a fresh seed, on SQLite and PostgreSQL (INFERLINE_FUZZ_EXAMPLES, INFERLINE_FUZZ_ENGINES,
INFERLINE_FUZZ_SEED to replay a run).
"""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import make_url
from starlette.testclient import TestClient
from tests.conftest import PG_URL, REQUIRE_SERVICES, sqlite_url

from inferline.api.app import create_app
from inferline.config import Settings

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("INFERLINE_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("INFERLINE_FUZZ_SEED")
DERANDOMIZE = "INFERLINE_FUZZ_EXAMPLES" not in os.environ and SEED is None
ENGINES = os.environ.get("INFERLINE_FUZZ_ENGINES", "sqlite").split(",")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
BASE_URL = "http://fuzz"


def fuzz_settings(data_dir: Path, database_url: str | None = None) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        heartbeat_s=0.2,
        poll_s=0.2,
        retry_base_s=0.05,
        retry_cap_s=0.5,
        events_poll_s=0.05,
        schedule_poll_s=0.2,
        max_upload_bytes=2_000_000,
        plugins=["tests.plugins.kinds"],
    )


def operation_labels() -> list[str]:
    """`METHOD /path` of each operation (the document needs no running app)."""
    document = create_app(fuzz_settings(Path("unused"))).openapi()
    return [f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item]


@dataclass
class Served:
    client: TestClient
    schema: Any
    headers: dict[str, str]
    existing: dict[str, str]  # path parameter -> a resource of the caller's that exists


@pytest.fixture(
    scope="module",
    params=[pytest.param(engine, marks=[pytest.mark.postgres] if engine == "postgres" else []) for engine in ENGINES],
)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database for the module's app: SQLite, or a fresh PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path_factory.mktemp("fuzz-db"))
        return
    name = f"inferline_fuzz_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL at {PG_URL} is required: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    yield make_url(PG_URL).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_admin(statement: str) -> None:
    url = make_url(PG_URL).set(drivername="postgresql")
    admin = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=3)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    app = create_app(fuzz_settings(data_dir, database_url), workers=1)
    # The test client runs the lifespan and every request on one event loop of its own, in one thread; an
    # exception the app does not handle is raised here, with its traceback, as well as failing the check.
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as client:
        headers = {"Authorization": f"Bearer {(data_dir / 'admin.key').read_text().strip()}"}
        existing = seed_resources(client, headers)
        schema = schemathesis.openapi.from_dict(app.openapi(), config=schemathesis.Config())
        yield Served(client, schema, headers, existing)


def seed_resources(client: TestClient, headers: dict[str, str]) -> dict[str, str]:
    def made(response: Any) -> dict[str, Any]:
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    png = io.BytesIO()
    Image.new("RGB", (64, 32), "white").save(png, "PNG")
    job = made(client.post("/api/v1/jobs", json={"kind": "echo", "input": {"message": "m"}}, headers=headers))
    file = made(client.post("/api/v1/files", files={"file": ("a.png", png.getvalue())}, headers=headers))
    made(client.post("/api/v1/collections", json={"name": "docs"}, headers=headers))
    document = made(
        client.post("/api/v1/collections/docs/documents", json={"text": "a note about bread"}, headers=headers)
    )
    schedule = made(
        client.post(
            "/api/v1/schedules", json={"kind": "echo", "cron": "0 0 1 1 *", "input": {"message": "m"}}, headers=headers
        )
    )
    project = made(client.post("/api/v1/projects", json={"name": "memorial"}, headers=headers))
    asset = made(
        client.post(
            f"/api/v1/projects/{project['id']}/assets", files={"file": ("a.png", png.getvalue())}, headers=headers
        )
    )
    records = made(
        client.post(
            "/api/v1/files", files={"file": ("r.jsonl", b'{"custom_id": "a", "text": "bread"}\n')}, headers=headers
        )
    )
    batch = client.post("/api/v1/batches", json={"input_file_id": records["id"], "collection": "docs"}, headers=headers)
    assert batch.status_code == 202, batch.text
    return {
        "batch_id": batch.json()["id"],
        "project_id": project["id"],
        "asset_id": asset["id"],
        "job_id": job["id"],
        "file_id": file["id"],
        "name": "docs",
        "document_id": document["id"],
        "schedule_id": schedule["id"],
    }


def send(client: TestClient, case: Case, headers: dict[str, str]) -> httpx.Response:
    """The case's request, encoded by `requests` as schemathesis would send it (multipart included)."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    fields = ("method", "url", "headers", "files", "data", "params", "cookies", "json")
    prepared = requests.Request(**{key: kwargs[key] for key in fields if key in kwargs}).prepare()
    assert prepared.method is not None and prepared.url is not None
    return client.request(prepared.method, prepared.url, headers=dict(prepared.headers), content=prepared.body)


def addressing_existing(case: Case, existing: dict[str, str]) -> Case:
    for name in case.path_parameters or {}:
        if name in existing:
            case.path_parameters[name] = existing[name]
    return case


@pytest.mark.parametrize("label", operation_labels())
def test_the_operation_answers_as_documented(served: Served, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = served.schema[path][method]
    valid = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    cases = st.one_of(
        valid,
        valid.map(lambda case: addressing_existing(case, served.existing)),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        derandomize=DERANDOMIZE,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def answers_as_documented(case: Case) -> None:
        case.validate_response(send(served.client, case, served.headers), checks=CHECKS)

    if SEED is not None:
        answers_as_documented = seed(int(SEED))(answers_as_documented)
    answers_as_documented()
