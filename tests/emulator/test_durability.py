"""A publish acknowledged by the emulator survives SIGKILL of the emulator process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from children import INTERRUPTIBLE

from celery_qstash.devserver import DEV_TOKEN
from celery_qstash.local.serving import free_port

from .conftest import Target


def _start(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    code = (
        "from celery_qstash.local.emulator import serve; "
        f"serve(port={port}, data_dir={str(data_dir)!r})"
    )
    # The child imports the package from this checkout, wherever pytest was started.
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, **INTERRUPTIBLE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_emulator/health", trust_env=False).is_success:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("emulator subprocess did not start")


@pytest.mark.slow
def test_delayed_message_is_delivered_after_sigkill_and_restart(
    tmp_path: Path, target: Target
) -> None:
    port = free_port()
    process = _start(port, tmp_path)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/v2/publish/{target.url}/durable", content=b"kept",
            headers={"Authorization": f"Bearer {DEV_TOKEN}", "Upstash-Delay": "2s"},
            trust_env=False,
        )
        assert response.status_code == 200
        message_id = response.json()["messageId"]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert target.at("/durable") == []

    process = _start(port, tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not target.at("/durable") and time.monotonic() < deadline:
            time.sleep(0.05)
        [got] = target.at("/durable")
        assert got.body == b"kept"
        assert got.headers["upstash-message-id"] == message_id
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
