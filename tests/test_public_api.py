"""The public surface of ``celery_qstash``, and what importing it pulls in."""

from __future__ import annotations

import json
import subprocess
import sys

import celery_qstash
from celery_qstash import errors

EXPECTED_ALL = [
    "Address",
    "Attachment",
    "BulkEmail",
    "CeleryQStashError",
    "CeleryQStashWarning",
    "ConfigurationError",
    "DeferredTask",
    "DeliveryFailed",
    "Email",
    "EmailValidationError",
    "PublishError",
    "QStashAsyncResult",
    "QStashBackend",
    "QStashTask",
    "Recipient",
    "RetryNotSupported",
    "UnsupportedOption",
    "__version__",
    "autosend_task",
    "email_delivered",
    "email_event",
    "email_failed",
    "qstash_task",
]

SERVER_SIDE = (
    "starlette",
    "uvicorn",
    "celery_qstash.local.emulator",
    "celery_qstash.local.sandbox",
    "celery_qstash.local.dashboard",
    "celery_qstash.cli",
)


def test_all_is_pinned() -> None:
    assert celery_qstash.__all__ == EXPECTED_ALL
    assert sorted(celery_qstash.__all__) == celery_qstash.__all__


def test_every_name_in_all_exists() -> None:
    for name in celery_qstash.__all__:
        assert getattr(celery_qstash, name) is not None


def test_error_tree() -> None:
    root = celery_qstash.CeleryQStashError
    for name in ("ConfigurationError", "EmailValidationError", "UnsupportedOption", "PublishError", "DeliveryFailed"):
        cls = getattr(celery_qstash, name)
        assert issubclass(cls, root)
        assert getattr(errors, name) is cls
    assert issubclass(celery_qstash.EmailValidationError, ValueError)
    assert issubclass(celery_qstash.RetryNotSupported, celery_qstash.UnsupportedOption)
    assert errors.RetryNotSupported is celery_qstash.RetryNotSupported
    assert issubclass(celery_qstash.CeleryQStashWarning, UserWarning)


def test_signals_are_celery_signals() -> None:
    from celery.utils.dispatch import Signal

    from celery_qstash import signals

    assert celery_qstash.email_delivered is signals.email_delivered
    assert isinstance(celery_qstash.email_failed, Signal)
    assert celery_qstash.email_delivered is not celery_qstash.email_failed
    assert celery_qstash.email_event is signals.email_event


def test_version_is_a_string() -> None:
    assert isinstance(celery_qstash.__version__, str)
    assert celery_qstash.__version__.count(".") >= 2


def test_import_pulls_in_no_server_side_code() -> None:
    code = (
        "import json, sys\n"
        "import celery_qstash\n"
        f"print(json.dumps(sorted(m for m in {SERVER_SIDE!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_subprocess_check_would_notice_a_server_import() -> None:
    """Guard the guard: the same check does see a module that was imported."""
    code = (
        "import json, sys\n"
        "import celery_qstash, celery_qstash.cli\n"
        f"print(json.dumps(sorted(m for m in {SERVER_SIDE!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "celery_qstash.cli" in json.loads(proc.stdout.strip().splitlines()[-1])
