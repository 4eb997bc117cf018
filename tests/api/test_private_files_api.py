"""What the server keeps on disk is its user's alone, whatever the umask: directories 0700, files 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.api.conftest import MakeApi


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common default, under which plain creation makes everything world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_data_dir_database_blobs_key_and_index_are_private(
    make_api: MakeApi, tmp_path: Path, permissive_umask: None
) -> None:
    data_dir = tmp_path / "deploy" / "data"  # its parent is made too
    async with make_api(workers=0, data_dir=data_dir) as api:
        uploaded = await api.client.post("/api/v1/files", files={"file": ("a.txt", b"tenant secrets")})
        assert uploaded.status_code == 201
        made = await api.client.post("/api/v1/collections", json={"name": "docs"})
        assert made.status_code == 201, made.text
        blob = api.services.blobs.path(uploaded.json()["sha256"])

        directories = [data_dir.parent, data_dir, data_dir / "blobs", data_dir / "blobs" / "tmp"]
        directories += [blob.parent, blob.parent.parent, data_dir / "index"]
        directories += [path for path in (data_dir / "index").iterdir() if path.is_dir()]
        files = [data_dir / name for name in ("inferline.db", "inferline.db-wal", "inferline.db-shm", "admin.key")]
        files += [blob, data_dir / "index" / ".lock"]
        assert len(directories) == 8  # the collection's shard directory is there
        for directory in directories:
            assert mode(directory) == 0o700, directory
        for file in files:
            assert mode(file) == 0o600, file
