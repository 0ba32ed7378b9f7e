"""The store's files and secrets (issue 8, item 5) and its migrations.

- the SQLite files are created readable by their owner only (0600);
- forwarded secrets (``Upstash-Forward-Authorization``, headers named in
  ``Upstash-Redact-Fields``) live in their own table, never in what the logs and DLQ
  APIs read, and are still delivered;
- DLQ entries expire after QStash's retention (pay-as-you-go: 7 days, per
  upstash.com/pricing/qstash), timed by the clock, never slept on;
- a database written by the previous release still opens and works.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.emulator.publish import parse_publish_headers
from celery_qstash.local.emulator.store import DLQ_RETENTION_S, EventFilter, Store
from celery_qstash.local.emulator.store.db import DB_FILENAME

from .conftest import START, Client, Reply, Target

SECRET = "Bearer AS_live_secret_0123456789"
TOKEN = "tok-secret-987"
OLD_SCHEMA = Path(__file__).parent / "data" / "schema-before-issue-9.sql"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_files_are_created_owner_only(tmp_path: Path) -> None:
    store = Store(tmp_path, FakeClock(START))
    store.publish("u", "https://a.example/x", parse_publish_headers([], b"x"))
    files = [tmp_path / DB_FILENAME, tmp_path / f"{DB_FILENAME}-wal",
             tmp_path / f"{DB_FILENAME}-shm"]
    assert [mode(f) for f in files] == [0o600] * 3
    store.close()


def test_an_older_world_readable_database_is_tightened(tmp_path: Path) -> None:
    db_file = tmp_path / DB_FILENAME
    sqlite3.connect(db_file).close()
    db_file.chmod(0o644)
    Store(tmp_path, FakeClock(START)).close()
    assert mode(db_file) == 0o600


def stored_text(db_file: Path) -> str:
    """Every row of every table except ``secrets``, as text."""
    con = sqlite3.connect(db_file)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    text = "".join(str(con.execute(f"SELECT * FROM {t}").fetchall())
                   for t in tables if t != "secrets")
    con.close()
    return text


def test_forwarded_secrets_are_stored_apart_never_shown_and_still_delivered(
        tmp_path: Path, target: Target) -> None:
    server = EmulatorServer(tmp_path, clock=FakeClock(START), start_delivery=False).start()
    client = Client(server)
    emulator = server.emulator
    target.reply("/send", Reply(500))
    response = client.http.post(
        f"/v2/publish/{target.url}/send", content=b"x",
        headers={"Upstash-Forward-Authorization": SECRET, "Upstash-Forward-X-Token": TOKEN,
                 "Upstash-Redact-Fields": "header[X-Token]", "Upstash-Retries": "0"})
    assert response.status_code == 200
    message_id = response.json()["messageId"]
    pending = client.http.get(f"/v2/messages/{message_id}").text
    emulator.tick()
    [got] = target.at("/send")
    assert (got.headers["authorization"], got.headers["x-token"]) == (SECRET, TOKEN)

    shown = (pending + client.http.get("/v2/events").text + client.http.get("/v2/logs").text
             + client.http.get("/v2/dlq").text)
    for secret in (SECRET, TOKEN):
        assert secret not in shown
        assert secret not in stored_text(tmp_path / DB_FILENAME)
    assert "REDACTED:" in client.http.get("/v2/dlq").text

    # Retried from the DLQ, the message still carries the real values.
    target.reply("/send", Reply(200))
    assert client.http.post("/v2/dlq/retry", params={"url": f"{target.url}/send"}
                            ).status_code == 201
    emulator.tick()
    assert [r.headers["authorization"] for r in target.at("/send")] == [SECRET, SECRET]
    secrets_left = sqlite3.connect(tmp_path / DB_FILENAME).execute(
        "SELECT COUNT(*) FROM secrets").fetchone()[0]
    assert secrets_left == 0  # delivered and out of the DLQ: nothing kept
    client.http.close()
    server.stop()


def test_credentials_from_every_source_are_kept_apart_shown_redacted_and_delivered(
        tmp_path: Path, target: Target) -> None:
    """Issue 23: an ``Authorization`` set as a URL group's default header, a forwarded
    ``X-Api-Key``, a schedule's cookie and a callback's token were shown by the logs and
    the DLQ (and stored in their tables). The one rule of ``celery_qstash.redaction``
    now applies to each, wherever it came from; each still reaches its destination."""
    server = EmulatorServer(tmp_path, clock=FakeClock(START), start_delivery=False).start()
    client = Client(server)
    group_key, api_key, cookie, cb_token = ("Bearer grp-secret-1", "api-secret-2",
                                            "session=cookie-secret-3", "cb-secret-4")
    target.reply("/g", Reply(500))
    assert client.http.post("/v2/topics/grp/endpoints", json={
        "endpoints": [{"url": f"{target.url}/g"}]}).status_code == 200
    assert client.http.patch("/v2/topics/grp", json={
        "headers": {"Authorization": group_key}}).status_code == 200
    assert client.http.post("/v2/publish/grp", content=b"x", headers={
        "Upstash-Retries": "0"}).status_code == 200
    assert client.http.post(f"/v2/publish/{target.url}/k", content=b"x", headers={
        "Upstash-Forward-X-Api-Key": api_key, "Upstash-Callback": f"{target.url}/cb",
        "Upstash-Callback-Forward-X-Auth-Token": cb_token}).status_code == 200
    assert client.http.post(f"/v2/schedules/{target.url}/s", content=b"x", headers={
        "Upstash-Cron": "* * * * *", "Upstash-Forward-Cookie": cookie}).status_code == 200
    server.emulator.tick()
    server.emulator.clock.advance(60)
    server.emulator.tick()
    server.emulator.tick()

    assert [r.headers["authorization"] for r in target.at("/g")] == [group_key]
    assert target.at("/k")[0].headers["x-api-key"] == api_key
    assert target.at("/cb")[0].headers["x-auth-token"] == cb_token
    assert target.at("/s")[0].headers["cookie"] == cookie
    shown = "".join(client.http.get(path).text for path in (
        "/v2/logs", "/v2/events", "/v2/dlq", "/v2/topics", "/v2/topics/grp", "/v2/schedules",
        "/v2/messages?count=100"))
    assert "REDACTED:" in shown
    for secret in (group_key, api_key, cookie, cb_token):
        assert secret not in shown, secret
        assert secret not in stored_text(tmp_path / DB_FILENAME), secret
    client.http.close()
    server.stop()


def test_dlq_entries_expire_after_the_retention(fake: Client, target: Target) -> None:
    # QStash pricing: "DLQ retention: 7 days" (pay-as-you-go); the clock moves, nothing sleeps.
    assert DLQ_RETENTION_S == 7 * 86_400
    target.reply("/dead", Reply(500))
    fake.publish(f"{target.url}/dead", b"x", Upstash_Retries="0")
    fake.tick()
    assert len(fake.http.get("/v2/dlq").json()["messages"]) == 1
    fake.advance(DLQ_RETENTION_S - 1)
    assert len(fake.http.get("/v2/dlq").json()["messages"]) == 1
    fake.advance(2)
    assert fake.http.get("/v2/dlq").json()["messages"] == []


def test_the_retention_is_a_parameter_and_ticks_expire_too() -> None:
    clock = FakeClock(START)
    store = Store(None, clock, dlq_retention_s=60)
    [published] = store.publish("u", "https://a.example/x",
                                parse_publish_headers([("Upstash-Retries", "0")], b"x"))
    from celery_qstash.local.emulator.store import AttemptResult

    [message] = store.claim_due(int(START * 1000))
    store.finish_attempt(message, AttemptResult(500), int(START * 1000))
    assert len(store.list_dlq("u", EventFilter(), None, 10)[0]) == 1
    clock.advance(61)
    store.claim_due(int(clock.now() * 1000))  # a tick
    assert store.db.conn.execute("SELECT COUNT(*) FROM dlq").fetchone()[0] == 0
    assert published.message_id


def test_a_database_from_the_previous_release_opens_and_works(tmp_path: Path) -> None:
    """Written with the previous release's schema (no events.caller_ip, topics.headers or
    secrets table); opening it migrates it in place and keeps what it holds."""
    fresh = Store(None, FakeClock(START))
    fresh.publish("u", "https://a.example/kept", parse_publish_headers([], b"kept"))
    row = fresh.db.conn.execute("SELECT * FROM messages").fetchone()

    db_file = tmp_path / DB_FILENAME
    con = sqlite3.connect(db_file)
    con.executescript(OLD_SCHEMA.read_text())
    con.execute("INSERT INTO messages (id, user, due_ms, ready_ms, created_ms, data) "
                "VALUES (?, ?, ?, ?, ?, ?)", (row["id"], "u", row["due_ms"], row["ready_ms"],
                                              row["created_ms"], row["data"]))
    con.execute("INSERT INTO topics VALUES ('u', 'g', 1, 1, ?)",
                (json.dumps([{"url": "https://a.example/g"}]),))
    con.commit()
    con.close()

    store = Store(tmp_path, FakeClock(START))
    columns = {r[1] for r in store.db.conn.execute("PRAGMA table_info(events)")}
    assert "caller_ip" in columns
    [due] = store.claim_due(int(START * 1000))
    assert due["id"] == row["id"]
    store.groups.set_headers("u", "g", {"X-Default": "1"})
    [to_group] = store.publish("u", "g", parse_publish_headers([], b"x"))
    assert store.get_message("u", to_group.message_id)["opts"]["headers"]["X-Default"] == ["1"]
    entries, _ = store.list_events("u", EventFilter(caller_ips=["9.9.9.9"]), None, 10)
    assert entries == []
    store.close()


def test_reset_forgets_the_secrets_too(fake: Client, target: Target) -> None:
    fake.publish(f"{target.url}/later", b"x", Upstash_Delay="1h",
                 Upstash_Forward_Authorization=SECRET)
    store = fake.emulator.store
    assert store.db.conn.execute("SELECT COUNT(*) FROM secrets").fetchone()[0] == 1
    fake.emulator.reset()
    assert store.db.conn.execute("SELECT COUNT(*) FROM secrets").fetchone()[0] == 0


def test_deleting_a_queue_forgets_its_waiting_messages_secrets(fake: Client,
                                                               target: Target) -> None:
    fake.http.post("/v2/queues", json={"queueName": "q", "paused": True})
    fake.http.post(f"/v2/enqueue/q/{target.url}/x", content=b"x",
                   headers={"Upstash-Forward-Authorization": SECRET})
    count = "SELECT COUNT(*) FROM secrets"
    assert fake.emulator.store.db.conn.execute(count).fetchone()[0] == 1
    assert fake.http.delete("/v2/queues/q").status_code == 200
    assert fake.emulator.store.db.conn.execute(count).fetchone()[0] == 0
