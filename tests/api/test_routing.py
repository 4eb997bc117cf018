"""How many routes a request is tried against before it is served: each try costs ~2 µs of CPU in FastAPI,
and a job submission's whole handling is ~0.5 ms, so the order and shape of the routers is part of its
cost (docs/benchmarks.md, "Session 23")."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match
from tests.api.conftest import Api

from inferline.api.routes import collections, jobs


@pytest.fixture
def tried(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the API routes each request was matched against (as their routers declare them,
    without /api/v1), in order, every try counted."""
    paths: list[str] = []
    original = APIRoute.matches

    def counting(route: APIRoute, scope: Any) -> tuple[Match, Any]:
        paths.append(route.path)
        return original(route, scope)

    monkeypatch.setattr(APIRoute, "matches", counting)
    return paths


async def test_a_submission_is_tried_against_the_search_routes_once_and_no_others(
    idle_api: Api, tried: list[str]
) -> None:
    job = await idle_api.submit(input={"message": "hi"})
    assert job["status"] == "queued"
    # The collections' routes come first (a cached search costs less than a submission), then the jobs'.
    # Nested under one /api/v1 router, every route ahead was tried two and three times over, and the jobs'
    # routes came after four workloads' (34 routes ahead): 71 tries, where 12 do now.
    ahead = [route.path for route in collections.router.routes if isinstance(route, APIRoute)]
    assert "/jobs" in tried and all(path in ahead or path.startswith("/jobs") for path in tried), tried
    assert len(tried) <= len(ahead) + len(jobs.router.routes), tried


async def test_a_search_is_tried_against_its_own_route_only(idle_api: Api, tried: list[str]) -> None:
    response = await idle_api.client.post("/api/v1/collections/absent/search", json={"query": "x"})
    assert response.status_code == 404
    # At most twice: the app finds the router that has it, then that router finds it again to serve it
    # (three times when nested under an /api/v1 router).
    assert set(tried) == {"/collections/{name}/search"} and len(tried) <= 2, tried
