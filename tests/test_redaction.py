"""The one redaction rule (``celery_qstash/redaction.py``) every surface applies: the CLI,
the dashboard, the emulator's logs/DLQ/URL groups/schedules, the sandbox's inbox."""

from __future__ import annotations

import pytest

from celery_qstash.redaction import REDACTED, is_secret_name, redact_headers

SECRET = ["Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key",
          "apikey", "X-Access-Token", "X-Client-Secret", "X-Db-Password", "PASSWORD",
          "Upstash-Forward-Authorization", "Upstash-Signature"]
PUBLIC = ["Content-Type", "Accept", "Idempotency-Key", "Upstash-Forward-Idempotency-Key",
          "X-Celery-Task", "User-Agent", "Upstash-Label"]


@pytest.mark.parametrize("name", SECRET)
def test_credentials_are_secret_names(name: str) -> None:
    assert is_secret_name(name) and is_secret_name(name.lower())
    assert redact_headers({name: ["v"]}) == {name: REDACTED}


@pytest.mark.parametrize("name", PUBLIC)
def test_ordinary_headers_are_shown(name: str) -> None:
    assert not is_secret_name(name)
    assert redact_headers({name: ["a", "b"]}) == {name: "a, b"}
