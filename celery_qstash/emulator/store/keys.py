"""Per-user request-signing keys (``/v2/keys``)."""

from __future__ import annotations

from ..signing import generate_signing_key
from .db import Database

__all__ = ["SigningKeys"]


class SigningKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, user: str, default: tuple[str, str] | None = None) -> tuple[str, str]:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT current, next FROM signing_keys WHERE user = ?", (user,)
            ).fetchone()
            if row is not None:
                return str(row["current"]), str(row["next"])
            current, nxt = default or (generate_signing_key(), generate_signing_key())
            cur.execute("INSERT INTO signing_keys VALUES (?, ?, ?)", (user, current, nxt))
            return current, nxt

    def rotate(self, user: str) -> tuple[str, str]:
        _, nxt = self.get(user)
        fresh = generate_signing_key()
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE signing_keys SET current = ?, next = ? WHERE user = ?", (nxt, fresh, user)
            )
        return nxt, fresh
