"""What a server on MariaDB serves and what it refuses (docs/jobs.md): the job core runs (its own tests run
on MariaDB too: test_jobs_api.py); the workloads that need PostgreSQL or SQLite are refused, clearly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.api.conftest import MakeApi

from inferline.bootstrap import build_services
from inferline.config import Settings

pytestmark = pytest.mark.mariadb


async def test_the_workloads_routes_are_a_501_problem_and_their_kinds_unknown(
    make_api: MakeApi, mariadb_url: str
) -> None:
    async with make_api(database_url=mariadb_url, workers=0) as api:
        for path in ("/api/v1/collections", "/api/v1/files/f1", "/api/v1/ocr", "/api/v1/projects", "/api/v1/monitor/x"):
            response = await api.client.post(path, json={})
            assert response.status_code == 501, path
            assert response.headers["content-type"] == "application/problem+json"
            assert "needs PostgreSQL or SQLite" in response.json()["detail"]
        graphql = await api.client.post("/graphql", json={"query": "{ collections { name } }"})
        assert graphql.status_code == 501 and "/graphql needs PostgreSQL" in graphql.json()["detail"]
        refused = await api.client.post("/api/v1/jobs", json={"kind": "ocr", "input": {}})
        assert refused.status_code == 422 and "kind" in refused.text
        paths = (await api.client.get("/openapi.json")).json()["paths"]
        assert any(path.startswith("/api/v1/jobs") for path in paths)
        assert not any(path.startswith(("/api/v1/collections", "/api/v1/monitor")) for path in paths)


def test_asking_for_the_monitor_on_mariadb_stops_the_start(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match=r"monitor_enabled.*INFERLINE_MONITOR_ENABLED=false"):
        build_services(make_settings(database_url="mysql://root@127.0.0.1/x", monitor_enabled=True))
    assert Settings(database_url="mysql://root@127.0.0.1/x").monitor_enabled is False  # off unless asked for
