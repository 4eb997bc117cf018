"""What a server on MariaDB/MySQL answers for the workloads it does not serve.

MariaDB serves the job core (jobs, schedules, webhooks, events, models). The workloads' own SQL (files,
OCR, search, media, batches, the monitor) is written for PostgreSQL and SQLite: row-returning updates,
advisory locks, partial unique indexes. Rather than routes that break on some request, a server on
MariaDB mounts none of theirs and answers every path under them with a 501 problem that says why
(docs/jobs.md); so too `/graphql`, whose schema is mostly search, documents and batches. Left out of the
OpenAPI document, which lists only what this server serves.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from inferline.api.problems import problem

# The API's path segments of the workloads that need PostgreSQL or SQLite (the OCR routes are `/ocr…`).
AREAS = ("files", "ocr", "collections", "projects", "batches", "monitor")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

router = APIRouter(include_in_schema=False)  # under /api/v1
graphql_router = APIRouter(include_in_schema=False)


async def _refuse(request: Request) -> JSONResponse:
    path = request.url.path
    area = "/api/v1/" + path.removeprefix("/api/v1/").split("/", 1)[0] if path.startswith("/api/v1/") else path
    return problem(
        501,
        f"{area} needs PostgreSQL or SQLite; this server's database is MariaDB/MySQL, which serves the job "
        "core only (jobs, schedules, webhooks, events)",
    )


for _area in AREAS:
    router.add_api_route(f"/{_area}", _refuse, methods=METHODS)
    router.add_api_route(f"/{_area}/{{rest:path}}", _refuse, methods=METHODS)
graphql_router.add_api_route("/graphql", _refuse, methods=["GET", "POST"])
