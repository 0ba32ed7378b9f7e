"""Data folders trusted only when they are the user's (issue 23, item 1).

Every server's SQLite files go through ``celery_qstash/local/files.py``: these replay
the findings (another user's database, a symlink at the database path, a planted
``-wal``, a 0755/0777 folder) against it, through the emulator's and the sandbox's own
stores and through the CLI (exit 2, one line).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from celery_qstash.cli import main
from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator.publish import parse_publish_headers
from celery_qstash.local.emulator.store import Store
from celery_qstash.local.emulator.store.db import DB_FILENAME
from celery_qstash.local.files import UnsafeDataDir, _checked_file, owner_only_db, private_dir
from celery_qstash.local.sandbox.store import DB_FILENAME as SANDBOX_DB
from celery_qstash.local.sandbox.store import SandboxStore

OTHER_UID = 54321
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_folder_0700_and_files_0600_under_any_umask(tmp_path: Path, umask: int) -> None:
    folder = tmp_path / "state" / "emulator"
    store = Store(folder, FakeClock(1_700_000_000))
    store.publish("u", "https://a.example/x", parse_publish_headers([], b"x"))
    files = [folder / f"{DB_FILENAME}{suffix}" for suffix in ("", "-wal", "-shm")]
    assert (mode(folder), [mode(f) for f in files]) == (0o700, [0o600] * 3)
    store.close()


def test_an_older_0755_folder_of_the_users_own_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o755)
    private_dir(folder)
    assert mode(folder) == 0o700


@pytest.mark.parametrize("loose", [0o777, 0o775, 0o757, 0o1777])
def test_a_folder_others_may_write_is_refused_and_left_alone(tmp_path: Path,
                                                             loose: int) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(loose)
    with pytest.raises(UnsafeDataDir) as caught:
        SandboxStore(folder, clock=FakeClock(0))
    assert str(folder) in str(caught.value) and "writable" in str(caught.value)
    assert "chmod 700" in str(caught.value)
    assert mode(folder) == loose and not (folder / SANDBOX_DB).exists()


def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    with pytest.raises(UnsafeDataDir, match="owned by uid"):
        owner_only_db(folder, DB_FILENAME, uid=OTHER_UID)
    assert not (folder / DB_FILENAME).exists()


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "emulator.sqlite3-wal"
    planted.write_bytes(b"theirs")
    planted.chmod(0o644)
    with pytest.raises(UnsafeDataDir, match="owned by uid"):
        _checked_file(planted, OTHER_UID, create=False)
    assert mode(planted) == 0o644  # not tightened: it is not ours to change


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_symlink_at_a_database_path_is_refused_and_its_target_untouched(
        tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    target.chmod(0o644)
    (folder / f"{DB_FILENAME}{suffix}").symlink_to(target)
    with pytest.raises(UnsafeDataDir, match="is a symlink"):
        Store(folder, FakeClock(0))
    assert (mode(target), target.read_text()) == (0o644, "mine")


def test_a_dangling_symlink_creates_nothing_at_its_target(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    chosen = tmp_path / "elsewhere" / "db"
    chosen.parent.mkdir()
    (folder / DB_FILENAME).symlink_to(chosen)
    with pytest.raises(UnsafeDataDir, match="is a symlink"):
        Store(folder, FakeClock(0))
    assert not chosen.exists()


def test_a_hard_link_or_a_fifo_at_the_database_path_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    other = tmp_path / "other.db"
    other.write_bytes(b"")
    other.chmod(0o644)
    os.link(other, folder / DB_FILENAME)
    with pytest.raises(UnsafeDataDir, match="hard links"):
        owner_only_db(folder, DB_FILENAME)
    assert mode(other) == 0o644
    (folder / DB_FILENAME).unlink()
    os.mkfifo(folder / DB_FILENAME)
    with pytest.raises(UnsafeDataDir, match="not a regular file"):
        owner_only_db(folder, DB_FILENAME)


def test_a_swap_after_the_check_is_caught_by_fstat(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """What is checked is the open descriptor, so a file swapped in between a look at
    the path and the open is judged by what was really opened."""
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    real_open = os.open

    def swapping_open(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if Path(path).name == DB_FILENAME:
            os.replace(fifo, path)  # the swap lands just before the open
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", swapping_open)
    with pytest.raises(UnsafeDataDir, match="not a regular file"):
        owner_only_db(folder, DB_FILENAME)


@as_root
def test_another_users_database_and_wal_are_refused_not_replayed(tmp_path: Path) -> None:
    """The finding: a database and a -wal another local user planted are neither used
    nor replayed (a table of theirs never appears), and their files are not changed."""
    folder = tmp_path / "emulator"
    folder.mkdir(mode=0o700)
    planted = folder / f"{DB_FILENAME}-wal"
    planted.write_bytes(b"\0" * 32)
    os.chown(planted, OTHER_UID, OTHER_UID)
    planted.chmod(0o666)
    with pytest.raises(UnsafeDataDir, match=f"owned by uid {OTHER_UID}"):
        Store(folder, FakeClock(0))
    assert mode(planted) == 0o666 and not (folder / DB_FILENAME).exists()

    planted.unlink()
    con = sqlite3.connect(folder / DB_FILENAME)
    con.execute("CREATE TABLE theirs (x)")
    con.close()
    os.chown(folder / DB_FILENAME, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeDataDir, match=f"owned by uid {OTHER_UID}"):
        Store(folder, FakeClock(0))

    os.chown(folder / DB_FILENAME, 0, 0)
    os.chown(folder, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeDataDir, match=f"owned by uid {OTHER_UID}"):
        Store(folder, FakeClock(0))


@pytest.mark.parametrize("command", ["dev", "emulator", "sandbox"])
def test_the_cli_refuses_with_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    ports = ["--port", "0"] + (["--sandbox-port", "0", "--no-dashboard"]
                               if command == "dev" else [])
    result = CliRunner().invoke(main, [command, "--data-dir", str(shared), *ports])
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert str(shared) in line and "writable by others" in line and "chmod 700" in line


def test_dev_refuses_a_symlinked_database_before_any_server_starts(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    (data / "sandbox").mkdir(parents=True, mode=0o700)
    data.chmod(0o700)
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    (data / "sandbox" / SANDBOX_DB).symlink_to(target)
    result = CliRunner().invoke(main, ["dev", "--data-dir", str(data), "--port", "0",
                                       "--sandbox-port", "0", "--no-dashboard"])
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert str(data / "sandbox" / SANDBOX_DB) in line and "symlink" in line
    assert target.read_text() == "mine"
