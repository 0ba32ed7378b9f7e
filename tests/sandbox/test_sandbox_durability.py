"""SQLite persistence: a sandbox restarted on the same data_dir keeps its inbox."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox
from celery_qstash.local.sandbox.store import DB_FILENAME

from .helpers import API_KEY, AUTH, TestClient, bulk, email

KEYED = {**AUTH, "Idempotency-Key": "durable-1"}


def test_emails_idempotency_and_stats_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    # Given a sandbox on disk that captured a few emails
    first = Sandbox(data_dir=tmp_path, clock=clock, rate_per_second=None)
    with first, TestClient(first.app) as tc:
        sent = tc.post("/v1/mails/send", json=email(), headers=KEYED).json()
        tc.post("/v1/mails/bulk", json=bulk(), headers=AUTH)
        before = tc.get("/api/v1/messages").json()

    # When a new sandbox opens the same directory
    with Sandbox(data_dir=tmp_path, clock=clock) as second, TestClient(second.app) as tc:
        # Then it lists the same emails, replays the idempotent request, and kept the counts
        assert tc.get("/api/v1/messages").json() == before
        assert before["total"] == 3
        replay = tc.post("/v1/mails/send", json=email(), headers=KEYED)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == sent
        assert tc.get("/api/v1/stats").json()["accepted"] == 3
        assert sent["data"]["emailId"] in tc.get("/").text


def test_database_is_wal_and_never_holds_the_key(tmp_path: Path) -> None:
    with Sandbox(data_dir=tmp_path / "nested", clock=FakeClock()) as sandbox:
        with TestClient(sandbox.app) as tc:
            tc.post("/v1/mails/send", json=email(), headers=KEYED)
        path = tmp_path / "nested" / DB_FILENAME
        assert sandbox.store.path == path

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for file in (tmp_path / "nested").iterdir():
        assert API_KEY.encode() not in file.read_bytes()


def test_in_memory_sandboxes_share_nothing() -> None:
    clock = FakeClock()
    with Sandbox(clock=clock) as one, Sandbox(clock=clock) as two:
        assert one.store.path is None
        with TestClient(one.app) as tc:
            tc.post("/v1/mails/send", json=email(), headers=AUTH)
        assert one.store.stats()["emails"] == 1
        assert two.store.stats()["emails"] == 0


def test_database_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    # Captured emails hold password-reset links and the like, as the emulator's hold bodies.
    data_dir = tmp_path / "inbox"
    with Sandbox(data_dir=data_dir, clock=FakeClock(), rate_per_second=None) as sandbox:
        with TestClient(sandbox.app) as tc:
            assert tc.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200
        files = [data_dir / DB_FILENAME, data_dir / f"{DB_FILENAME}-wal"]
        assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600, 0o600]
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_an_older_world_readable_database_is_tightened(tmp_path: Path) -> None:
    tmp_path.joinpath(DB_FILENAME).touch(mode=0o644)
    with Sandbox(data_dir=tmp_path, clock=FakeClock()):
        assert stat.S_IMODE(tmp_path.joinpath(DB_FILENAME).stat().st_mode) == 0o600
