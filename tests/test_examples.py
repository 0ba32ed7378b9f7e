"""The examples run: each one against the emulator and sandbox (``qstash_dev``), as
``celery-qstash dev`` would serve them, and the email lands in the sandbox inbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from celery_qstash.local.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
DJANGO_PROJECT = ROOT / "examples" / "django_project"

# fastapi.testclient (Starlette's) announces its own move to another HTTP client.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))


@pytest.mark.slow
def test_the_plain_script_sends_and_waits_for_delivery(qstash_dev: Any) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "send_one.py"), "jane@example.com", "Jane",
         "--timeout", "30"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: AutoSend queued email" in done.stdout
    [email] = qstash_dev.assert_sent(to="jane@example.com", subject="Welcome to Acme, Jane!")
    assert email["dynamicData"] == {"first_name": "Jane"}


@pytest.fixture
def fastapi_client(examples_importable: None) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from examples.fastapi_app import api

    with TestClient(api) as client:
        yield client


def test_the_fastapi_app_publishes_with_the_asyncio_api_and_reports_success(qstash_dev: Any, fastapi_client: Any) -> None:
    answer = fastapi_client.post("/signup", json={"email": "omar@example.com", "first_name": "Omar"})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    qstash_dev.assert_sent(to="omar@example.com", subject="Welcome to Acme, Omar!", count=1)
    deadline = time.monotonic() + 15
    while (state := fastapi_client.get(f"/tasks/{task_id}").json())["state"] != "SUCCESS":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["result"]["status"] == "queued"


def test_the_fastapi_app_answers_422_for_a_bad_address_and_publishes_nothing(autosend_outbox: Any, fastapi_client: Any) -> None:
    answer = fastapi_client.post("/signup", json={"email": "nope", "first_name": "X"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["field"] == "to.email"
    assert len(autosend_outbox) == 0
    assert fastapi_client.post("/signup", json={"email": "li@example.com", "first_name": "Li"}).status_code == 202
    autosend_outbox.assert_sent(to="li@example.com", count=1)  # adelay, eager


@pytest.fixture
def django_server(qstash_dev: Any) -> Iterator[str]:
    """``manage.py runserver`` of the example project, pointed at qstash_dev by environment."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=DJANGO_PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"runserver did not start: {out}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.slow
def test_the_django_project_send_mail_goes_through_qstash_to_the_sandbox_inbox(qstash_dev: Any, django_server: str) -> None:
    answer = httpx.post(f"{django_server}/signup/", data={"email": "jane@example.com", "name": "Jane"})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"sent": 1}
    [email] = qstash_dev.assert_sent(to="jane@example.com", subject="Welcome to Acme, Jane!")
    assert email["html"] == "<h1>Welcome, Jane!</h1><p>Thanks for signing up.</p>"
    assert email["text"] == "Hi Jane, thanks for signing up."
    assert email["from"]["email"] == "hello@acme.example"

    bad = httpx.post(f"{django_server}/signup/", data={"email": "not-an-address"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "to.email"

    # `celery -A proj qstash status` reads the project's Celery app (Django settings,
    # CELERY_ namespace) and finds the delivered email.
    deadline = time.monotonic() + 15
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "proj", "qstash", "status", "--json"],
            cwd=DJANGO_PROJECT, capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        rows = json.loads(done.stdout)
        if (rows and rows[0]["state"] == "SUCCESS") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    [row] = rows
    assert (row["name"], row["state"], row["recipient"]) == ("django.core.mail", "SUCCESS", "jane@example.com")
    assert qstash_dev.qstash_token not in done.stdout
