"""``redis_url``: a ``redis-server`` of this session's own on a free loopback port (no
persistence), for the Redis event store. The shared delivery ledger's branch adds the
same fixture to ``tests/conftest.py``; once it is on main this one goes."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import redis
    from waiting import wait_until

    from celery_qstash.local.serving import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/test (it installs Debian's)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def answers() -> bool:
        assert proc.poll() is None, f"redis-server exited with {proc.returncode}"
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, "redis-server to answer PING")
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
