"""Per-user request-signing keys (``/v2/keys``).

Every request is authenticated and every delivery signed with them, so they are kept in
memory once read: this process is the only writer (``rotate``, ``Database.reset``), and
the cache is dropped on both.
"""

from __future__ import annotations

from ..signing import generate_signing_key
from .db import Database

__all__ = ["SigningKeys"]


class SigningKeys:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[str, str]] = {}
        self._generation = db.generation

    def get(self, user: str, default: tuple[str, str] | None = None) -> tuple[str, str]:
        if self._generation == self.db.generation:
            cached = self._cache.get(user)
            if cached is not None:
                return cached
        with self.db.tx() as cur:
            if self._generation != self.db.generation:  # reset() forgot every key
                self._cache.clear()
                self._generation = self.db.generation
            row = cur.execute(
                "SELECT current, next FROM signing_keys WHERE user = ?", (user,)
            ).fetchone()
            if row is not None:
                keys = str(row["current"]), str(row["next"])
            else:
                keys = default or (generate_signing_key(), generate_signing_key())
                cur.execute("INSERT INTO signing_keys VALUES (?, ?, ?)", (user, *keys))
            self._cache[user] = keys
        return keys

    def rotate(self, user: str) -> tuple[str, str]:
        _, nxt = self.get(user)
        fresh = generate_signing_key()
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE signing_keys SET current = ?, next = ? WHERE user = ?", (nxt, fresh, user)
            )
            self._cache.pop(user, None)
        return nxt, fresh
