"""Data folders the local servers trust only when they are the user's own.

The emulator's database holds the signing keys and forwarded credentials (the AutoSend
key), the sandbox's holds captured emails (reset links among them). Like PostgreSQL
with its data directory and OpenSSH's ``StrictModes`` with key files, a server refuses
to start on a folder or file it does not own outright:

- the folder is created 0700 and each file 0600, whatever the umask (an older, looser
  folder or file of the user's own is tightened);
- a folder or file owned by another user, a folder writable by its group or by others,
  a symlink, a hard link or anything but a regular file at the database, ``-wal`` or
  ``-shm`` path is refused with :class:`UnsafeDataDir`: one line naming the path, what
  is wrong and the fix. A ``-wal`` planted by another user is refused, never replayed.

Files are opened with ``O_NOFOLLOW`` and checked with ``fstat`` on the open descriptor,
so a swap between the check and the open is caught too. Once the folder is the user's
alone, nobody else can put anything in it, so SQLite's own open of the same paths
right after finds what was checked (and gives ``-wal``/``-shm`` the database's mode).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["UnsafeDataDir", "owner_only_db", "private_dir"]

#: What SQLite keeps beside a database in WAL mode.
SIDE_FILES = ("-wal", "-shm")


class UnsafeDataDir(Exception):
    """A data folder or file that is not the user's alone: the server does not start.

    ``str()`` is one line: the path, what is wrong, and the fix. The CLI prints it and
    exits 2.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"refusing data path {self.path}: {problem}; {fix}")


def _owner(uid: int | None) -> int:
    return os.geteuid() if uid is None else uid


def _foreign(path: Path, st: os.stat_result) -> UnsafeDataDir:
    return UnsafeDataDir(
        path, f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})",
        "remove it or pick another --data-dir",
    )


def private_dir(directory: str | os.PathLike[str], *, uid: int | None = None) -> Path:
    """``directory``, created 0700 if missing, and refused unless it is the user's alone.

    A folder of the user's own that others may read (an older 0755) is tightened to 0700;
    one that others may write, or that another user owns, raises :class:`UnsafeDataDir`
    (anything could already have been put in it). ``uid`` is who must own it (default:
    this process's effective user).
    """
    folder = Path(directory)
    owner = _owner(uid)
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode passes through the umask
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise UnsafeDataDir(folder, f"cannot be read ({exc.strerror})",
                            "pick another --data-dir") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDataDir(folder, "is not a folder", "pick another --data-dir")
    if st.st_uid != owner:
        raise _foreign(folder, st)
    if st.st_mode & 0o022:
        raise UnsafeDataDir(
            folder, f"is writable by {'others' if st.st_mode & 0o002 else 'its group'} "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            f"check what is in it, then chmod 700 {folder}, or pick another --data-dir",
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    return folder


def _checked_file(path: Path, owner: int, *, create: bool) -> bool:
    """Open ``path`` without following a symlink, check the open file, make it 0600.

    Returns whether the file exists (``create``: it always does afterwards).
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if os.path.islink(path):  # O_NOFOLLOW refuses a symlink with ELOOP
            raise UnsafeDataDir(path, "is a symlink", f"remove {path} (the server "
                                "creates its own files)") from None
        raise UnsafeDataDir(path, f"cannot be opened ({exc.strerror})",
                            "remove it or pick another --data-dir") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeDataDir(path, "is not a regular file", f"remove {path}")
        if st.st_uid != owner:
            raise _foreign(path, st)
        if st.st_nlink != 1:
            # Another name for the same file: tightening its mode would change that file.
            raise UnsafeDataDir(path, f"has {st.st_nlink} hard links", f"remove {path}")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return True


def owner_only_db(directory: str | os.PathLike[str], filename: str, *,
                  uid: int | None = None) -> str:
    """The path of a server's SQLite file in ``directory``, the user's alone.

    The folder goes through :func:`private_dir`; the database, ``-wal`` and ``-shm``
    files are checked as the module says, the database created 0600 if missing. Raises
    :class:`UnsafeDataDir` before SQLite opens (or replays) anything.
    """
    owner = _owner(uid)
    folder = private_dir(directory, uid=owner)
    db_file = folder / filename
    # The side files first: a planted -wal must be refused before the database's open
    # could make SQLite look at it.
    for suffix in SIDE_FILES:
        _checked_file(Path(f"{db_file}{suffix}"), owner, create=False)
    _checked_file(db_file, owner, create=True)
    return str(db_file)
