"""Files the local servers keep (server-side, but no server dependency): owner-only SQLite."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["owner_only_db"]


def owner_only_db(directory: str | os.PathLike[str], filename: str) -> str:
    """The path of a server's SQLite file in ``directory``, readable by its owner only.

    The emulator's holds message bodies and logs, the sandbox's captured emails (reset
    links among them). The folder is made 0700 and the file created 0600 (an older,
    looser one is tightened); SQLite gives the ``-wal`` and ``-shm`` files it creates
    the database file's mode, so those are 0600 as well.
    """
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    db_file = folder / filename
    os.close(os.open(db_file, os.O_CREAT | os.O_RDWR, 0o600))
    for name in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")):
        if name.exists():
            name.chmod(0o600)
    return str(db_file)
