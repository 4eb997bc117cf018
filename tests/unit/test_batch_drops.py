"""Drop folders: only settled regular files are listed, an entry swapped for a link after the listing is
refused at its open, and the operator's setting refuses names and paths that could escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from inferline.batches.drops import DropFile, DropFolders, list_drop_files, open_drop_file
from inferline.config import Settings
from inferline.errors import InvalidInput


def test_only_settled_regular_files_are_listed_oldest_first(tmp_path: Path) -> None:
    (tmp_path / "outside.jsonl").write_text("secret")
    folder = tmp_path / "drop"
    folder.mkdir()
    for name, age_s in (("new.csv", 0), ("b.jsonl", 100), ("a.jsonl", 200), ("big.jsonl", 300)):
        path = folder / name
        path.write_text("x" * (50 if name == "big.jsonl" else 5))
        stamp = path.stat().st_mtime - age_s
        os.utime(path, (stamp, stamp))
    (folder / "empty.csv").touch()
    (folder / ".uploading.csv").write_text("half")
    (folder / "link.jsonl").symlink_to(tmp_path / "outside.jsonl")
    (folder / "dir").mkdir()
    os.mkfifo(folder / "pipe")

    found, refused = list_drop_files(folder, max_bytes=20, settle_s=30)

    assert [item.name for item in found] == ["a.jsonl", "b.jsonl"]  # new.csv is still being written
    assert {item.name: item.reason for item in refused} == {
        "big.jsonl": "over 20 bytes (setting batch_max_file_bytes)",
        "empty.csv": "empty",
        "link.jsonl": "a symbolic link: only regular files are taken",
        "dir": "not a regular file",
        "pipe": "not a regular file",
    }


def test_a_file_swapped_for_a_link_or_changed_after_the_listing_is_not_opened(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("secret")
    folder = tmp_path / "drop"
    folder.mkdir()
    path = folder / "a.jsonl"
    path.write_text("{}")
    [item], _ = list_drop_files(folder, max_bytes=100, settle_s=0)
    with open_drop_file(folder, item) as opened:
        assert opened.read() == b"{}"
    path.unlink()
    path.symlink_to(tmp_path / "secret")
    with pytest.raises(OSError):  # O_NOFOLLOW: ELOOP
        open_drop_file(folder, item)
    path.unlink()
    path.write_text("{} and more")
    with pytest.raises(ValueError, match="changed since it was listed"):
        open_drop_file(folder, DropFile(item.name, item.size, item.mtime_ns))


def test_a_tenant_names_only_its_own_folders_and_the_setting_refuses_escaping_paths() -> None:
    drops = DropFolders(folders={"a": {"nightly": Path("/srv/drop/a")}})
    assert drops.folder("a", "nightly") == Path("/srv/drop/a")
    for tenant, name in (("b", "nightly"), ("a", "other")):
        with pytest.raises(InvalidInput, match="no drop folder"):
            drops.folder(tenant, name)
    assert Settings(batch_drop_folders={"a": {"nightly": "/srv/drop"}}).batch_drop_folders["a"]["nightly"]
    for bad in ({"../x": "/srv/drop"}, {"nightly": "drop/relative"}, {"nightly": "/srv/drop/../../etc"}):
        with pytest.raises(ValidationError, match="batch_drop_folders"):
            Settings(batch_drop_folders={"a": bad})
