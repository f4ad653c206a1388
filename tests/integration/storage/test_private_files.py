"""The database holds the generated secrets (RELAY_TOKEN_SECRET, TURN_SECRET): its folder is
0700 and its files 0600 whatever the umask, from the first start on."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata_relay.storage.sqlite import Database


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_new_folder_and_files_private_under_umask_0(tmp_path: Path,
                                                          permissive_umask: None) -> None:
    path = tmp_path / "data" / "relay.db"
    db = await Database.open(path)
    try:
        await db.secret("TURN_SECRET", None)  # a write: the WAL file exists now
        files = sorted(p.name for p in path.parent.iterdir())
        assert files == ["relay.db", "relay.db-shm", "relay.db-wal"]
        assert mode(path.parent) == 0o700
        assert {p.name: mode(p) for p in path.parent.iterdir()} == dict.fromkeys(files, 0o600)
    finally:
        await db.close()


async def test_existing_database_from_an_older_version_tightened(tmp_path: Path,
                                                                 permissive_umask: None) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    db = await Database.open(folder / "relay.db")
    await db.secret("RELAY_TOKEN_SECRET", None)
    await db.close()
    for p in (folder, *folder.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    db = await Database.open(folder / "relay.db")
    try:
        assert mode(folder) == 0o700
        assert all(mode(p) == 0o600 for p in folder.iterdir())
    finally:
        await db.close()


async def test_shared_folder_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "sticky"
    shared.mkdir()
    shared.chmod(0o1777)  # sticky, like /tmp: never narrowed
    db = await Database.open(shared / "relay.db")
    try:
        assert mode(shared) == 0o1777
        assert mode(shared / "relay.db") == 0o600
    finally:
        await db.close()


async def test_planted_symlink_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not a database")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "relay.db").symlink_to(target)
    with pytest.raises(OSError):
        await Database.open(folder / "relay.db")
    assert target.read_text() == "not a database"
