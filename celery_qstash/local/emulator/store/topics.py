"""URL groups (QStash's *topics*, ``/v2/topics``): named lists of endpoints a
publish fans out to."""

from __future__ import annotations

import json
import sqlite3

from celery_qstash.redaction import is_secret_name

from ..errors import BadRequest, NotFound
from ..validate import check_header_name, check_header_value, check_url
from .db import JSON, Database
from .queues import NAME
from .secrets import Secrets

__all__ = ["UrlGroups", "is_url"]


def is_url(destination: str) -> bool:
    return "://" in destination


def _secrets_key(user: str, name: str) -> str:
    return f"top:{user}:{name}"


class UrlGroups:
    def __init__(self, db: Database, secrets: Secrets) -> None:
        self.db = db
        self.secrets = secrets

    def targets(self, cur: sqlite3.Cursor, user: str,
                destination: str) -> list[tuple[str, str | None, str | None]]:
        """(url, group, endpoint name) for each delivery a publish to ``destination`` makes."""
        if is_url(destination):
            return [(check_url(destination, "destination url",
                               allow_link_local=self.db.allow_link_local), None, None)]
        row = cur.execute(
            "SELECT endpoints FROM topics WHERE user = ? AND name = ?", (user, destination)
        ).fetchone()
        if row is None:
            if "/" in destination or "." in destination:
                raise BadRequest(
                    "invalid destination url: endpoint has invalid scheme, "
                    "add http:// or https://"
                )
            raise NotFound(f"url group {destination} not found")
        endpoints = json.loads(row["endpoints"])
        return [(e["url"], destination, e.get("name")) for e in endpoints]

    def upsert_endpoints(self, user: str, name: str, endpoints: list[JSON]) -> None:
        if not NAME.match(name):
            raise BadRequest("invalid url group name")
        now = self.db.now_ms()
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT endpoints FROM topics WHERE user = ? AND name = ?", (user, name)
            ).fetchone()
            current: list[JSON] = json.loads(row["endpoints"]) if row else []
            for endpoint in endpoints:
                url = endpoint.get("url")
                if not isinstance(url, str):
                    raise BadRequest("invalid endpoint url: add http:// or https://")
                check_url(url, "endpoint url", allow_link_local=self.db.allow_link_local)
                label = endpoint.get("name")
                if label is not None and not isinstance(label, str):
                    raise BadRequest("invalid endpoint name: must be a string")
                if label:  # it travels as the Upstash-Endpoint-Name header
                    check_header_value(label, "endpoint name")
                current = [e for e in current if e["url"] != url and (
                    not endpoint.get("name") or e.get("name") != endpoint.get("name"))]
                item: JSON = {"url": url}
                if endpoint.get("name"):
                    item["name"] = endpoint["name"]
                current.append(item)
            if row is None:
                cur.execute("INSERT INTO topics (user, name, created_ms, updated_ms, endpoints) "
                            "VALUES (?, ?, ?, ?, ?)", (user, name, now, now, json.dumps(current)))
            else:
                cur.execute(
                    "UPDATE topics SET endpoints = ?, updated_ms = ? WHERE user = ? AND name = ?",
                    (json.dumps(current), now, user, name),
                )

    def default_headers(self, cur: sqlite3.Cursor, user: str, name: str) -> dict[str, str]:
        """The headers ``PATCH /v2/topics/{name}`` set, sent with every delivery to it
        (credentials among them put back from the secrets table)."""
        row = cur.execute("SELECT headers FROM topics WHERE user = ? AND name = ?",
                          (user, name)).fetchone()
        stored: dict[str, str] = json.loads(row["headers"]) if row else {}
        if not any(is_secret_name(k) for k in stored):
            return stored
        opened = self.secrets.unseal_opts(cur, _secrets_key(user, name), {
            "headers": {k: [v] for k, v in stored.items()}})
        return {k: v[0] for k, v in opened["headers"].items()}

    def set_headers(self, user: str, name: str, headers: dict[str, str]) -> None:
        """QStash docs (howto/webhook): ``PATCH /v2/topics/{name}`` with ``{"headers": ...}``
        stores default headers for the group's deliveries. A credential among them
        (an ``Authorization``...) is kept in the secrets table, as a message's is."""
        for key, value in headers.items():
            check_header_name(key, key)
            check_header_value(value, key)
        with self.db.tx() as cur:
            key = _secrets_key(user, name)
            self.secrets.drop(cur, key)
            sealed = self.secrets.seal_opts(cur, key, {
                "headers": {k: [v] for k, v in headers.items()},
                "redact": {"headers": [k.lower() for k in headers if is_secret_name(k)]}})
            shown = {k: v[0] for k, v in sealed["headers"].items()}
            if not cur.execute(
                "UPDATE topics SET headers = ?, updated_ms = ? WHERE user = ? AND name = ?",
                (json.dumps(shown), self.db.now_ms(), user, name),
            ).rowcount:
                raise NotFound("url group not found")

    def remove_endpoints(self, user: str, name: str, endpoints: list[JSON]) -> None:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT endpoints FROM topics WHERE user = ? AND name = ?", (user, name)
            ).fetchone()
            if row is None:
                raise NotFound("url group not found")
            current: list[JSON] = json.loads(row["endpoints"])
            for endpoint in endpoints:
                current = [e for e in current if not (
                    (endpoint.get("url") and e["url"] == endpoint["url"])
                    or (endpoint.get("name") and e.get("name") == endpoint["name"]))]
            if current:
                cur.execute(
                    "UPDATE topics SET endpoints = ?, updated_ms = ? WHERE user = ? AND name = ?",
                    (json.dumps(current), self.db.now_ms(), user, name),
                )
            else:
                cur.execute("DELETE FROM topics WHERE user = ? AND name = ?", (user, name))
                self.secrets.drop(cur, _secrets_key(user, name))

    @staticmethod
    def _json(row: sqlite3.Row) -> JSON:
        return {"name": row["name"], "createdAt": row["created_ms"],
                "updatedAt": row["updated_ms"], "endpoints": json.loads(row["endpoints"])}

    def get(self, user: str, name: str) -> JSON:
        return self._json(self.db.one(
            "SELECT * FROM topics WHERE user = ? AND name = ?", (user, name),
            "url group not found",
        ))

    def all(self, user: str) -> list[JSON]:
        rows = self.db.all("SELECT * FROM topics WHERE user = ? ORDER BY name", (user,))
        return [self._json(row) for row in rows]

    def delete(self, user: str, name: str) -> None:
        """Deleting a group that does not exist is a 200 (OAS lists no 404; qstash-js
        ``url-groups.test.ts`` deletes before it creates)."""
        with self.db.tx() as cur:
            cur.execute("DELETE FROM topics WHERE user = ? AND name = ?", (user, name))
            self.secrets.drop(cur, _secrets_key(user, name))
