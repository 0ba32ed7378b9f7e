"""``celery -A proj qstash status|inspect|revoke|dlq|dev``: Celery's CLI, our commands,
the app's conf. Driven through Celery's own main group (``celery.bin.celery.celery``),
which loads ``qstash`` from the ``celery.commands`` entry point like the real command."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.bin.celery import celery as celery_main
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example_app(qstash_dev: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``examples.send_one``'s app, configured through its conf only (no QSTASH_* in the env)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from examples import send_one

    qstash_dev.configure(send_one.app)
    for name in list(os.environ):
        if name.startswith(("QSTASH_", "AUTOSEND_")):
            monkeypatch.delenv(name)
    yield send_one
    send_one.app.conf.update(qstash_url=None, qstash_token=None, autosend_api_key=None)


def celery(*args: str) -> Any:
    return CliRunner().invoke(celery_main, list(args), catch_exceptions=False)


def test_qstash_is_a_celery_subcommand() -> None:
    result = celery("qstash", "--help")
    assert result.exit_code == 0, result.output
    for name in ("status", "inspect", "revoke", "dlq", "dev", "dashboard"):
        assert name in result.output
    assert "qstash" in celery("--help").output


def test_status_and_inspect_read_the_app_given_with_dash_a(example_app: Any, qstash_dev: Any) -> None:
    sent = example_app.send_welcome.delay("jane@example.com", "Jane")
    sent.get(timeout=15)

    result = celery("-A", "examples.send_one", "qstash", "status", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert (row["uuid"], row["name"], row["state"]) == (sent.id, "send_one.send_welcome", "SUCCESS")

    result = celery("-A", "examples.send_one", "qstash", "inspect", sent.id)
    assert result.exit_code == 0, result.output
    assert "SUCCESS" in result.output and "jane@example.com" in result.output
    assert qstash_dev.qstash_token not in result.output


def test_revoke_and_dlq_through_celery(example_app: Any) -> None:
    later = example_app.send_welcome.apply_async(("li@example.com", "Li"), countdown=600)
    result = celery("-A", "examples.send_one", "qstash", "revoke", later.id)
    assert result.exit_code == 0, result.output
    assert f"Revoked '{later.id}'" in result.output
    assert later.state == "REVOKED"

    result = celery("-A", "examples.send_one", "qstash", "dlq", "list")
    assert result.exit_code == 0 and "The dead letter queue is empty." in result.output


def test_without_settings_the_app_conf_is_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative control: the same app with nothing configured names the setting."""
    monkeypatch.syspath_prepend(str(ROOT))
    result = celery("-A", "examples.send_one", "qstash", "status")
    assert result.exit_code != 0
    assert "qstash_token" in result.output


def test_dev_is_reachable_under_celery() -> None:
    result = celery("qstash", "dev", "--help")
    assert result.exit_code == 0 and "--sandbox-port" in result.output
