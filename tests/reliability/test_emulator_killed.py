"""The emulator SIGKILLed in the middle of a stream of ``.delay()`` calls.

The emulator runs as a real process (SQLite in a directory) and delivers to the
session's sandbox. While a thread publishes, the process is killed and restarted on
the same port. A publish that failed is sent again with the same ``task_id`` (what
the error tells the caller to do); the inbox must end with every email exactly once:
acknowledged messages survive the kill, attempts cut by it are redelivered and
replayed by AutoSend's Idempotency-Key, re-sent ones are deduplicated by QStash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from celery import Celery
from children import INTERRUPTIBLE

from celery_qstash import PublishError
from celery_qstash.devserver import AUTOSEND_URL
from celery_qstash.local.serving import free_port

from .conftest import Stack, wait_until, welcome_task

EMAILS = 60
KILL_AFTER = 25


def start_emulator(port: int, data_dir: Path, sandbox_url: str) -> subprocess.Popen[bytes]:
    """``celery_qstash.local.emulator.serve`` in a child process, ready to answer."""
    code = (
        "from celery_qstash.local.emulator import serve; "
        f"serve(port={port}, data_dir={str(data_dir)!r}, routes={{{AUTOSEND_URL!r}: "
        f"{sandbox_url!r}}})"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, **INTERRUPTIBLE)

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/_emulator/health",
                             trust_env=False).is_success
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, what="the emulator process to start")
    except AssertionError:
        process.kill()
        raise
    return process


@pytest.mark.slow
def test_emulator_killed_mid_load_loses_and_duplicates_nothing(
    app: Celery, stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    app.conf.qstash_url = f"http://127.0.0.1:{port}"
    send = welcome_task(app)
    # Some deliveries are still in flight (a slow AutoSend) when the kill comes.
    stack.chaos(fail_next=20, status=None, delay_ms=200)
    process = start_emulator(port, tmp_path, stack.sandbox.url)

    sent: list[str] = []
    failed: list[tuple[str, PublishError]] = []
    lock = threading.Lock()

    def publish() -> None:
        for i in range(EMAILS):
            task_id = f"kill-{i}"
            try:
                send.apply_async((i,), task_id=task_id)
            except PublishError as exc:
                with lock:
                    failed.append((task_id, exc))
            else:
                with lock:
                    sent.append(task_id)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        wait_until(lambda: len(sent) >= KILL_AFTER, what="publishes before the kill")
        process.send_signal(signal.SIGKILL)
        process.wait()
        wait_until(lambda: len(failed) >= 2, what="publishes refused while the emulator is down")
        process = start_emulator(port, tmp_path, stack.sandbox.url)
        publisher.join(60)
        assert not publisher.is_alive()

        # The caller sees a typed error for each publish the kill touched, and nothing else.
        assert failed and all(exc.status is None for _, exc in failed)
        assert len(sent) + len(failed) == EMAILS
        # Calling again with the same task id is the recovery: safe whatever happened.
        for task_id, _ in failed:
            send.apply_async((int(task_id.split("-")[1]),), task_id=task_id)

        expected = {f"kill-{i}" for i in range(EMAILS)}
        inbox = wait_until(lambda: (c := stack.inbox()) and set(c) >= expected and c,
                           timeout=60, what="every email in the inbox")
        assert set(inbox) == expected
        assert all(count == 1 for count in inbox.values()), inbox.most_common(3)
    finally:
        if publisher.is_alive():
            publisher.join(60)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
