"""The plugin's fixtures under pytest-django, in a fresh Django project (pytester).

Django's test environment (which pytest-django sets up for the session) swaps
``EMAIL_BACKEND`` (Django 6.1: every ``MAILERS`` alias) for locmem; the fixtures put
celery-qstash's backend back for their test, so a plain ``send_mail`` reaches the outbox
or the sandbox, and every other test keeps Django's ``mailoutbox``.
"""

from __future__ import annotations

import django
import pytest

pytest.importorskip("pytest_django")

# How the project names its backend: EMAIL_BACKEND everywhere, MAILERS from Django 6.1 on,
# and how a test reads what Django's test environment swapped in.
CONFIGURATIONS = {
    "EMAIL_BACKEND": ('EMAIL_BACKEND = "celery_qstash.contrib.django.EmailBackend"',
                      "settings.EMAIL_BACKEND"),
}
if django.VERSION >= (6, 1):
    CONFIGURATIONS["MAILERS"] = (
        'MAILERS = {"default": {"BACKEND": "celery_qstash.contrib.django.EmailBackend"}}',
        'settings.MAILERS["default"]["BACKEND"]',
    )

SETTINGS = '''
SECRET_KEY = "test"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
{backend}
# What a real project has: production values from its environment, which the
# qstash_dev fixture must override for its test.
CELERY_QSTASH_URL = "https://qstash.upstash.io"
CELERY_QSTASH_TOKEN = "production-token-never-used-here"
CELERY_AUTOSEND_API_KEY = "AS_production_key"
USE_TZ = True
'''

TESTS = '''
from django.conf import settings
from django.core import mail
from django.core.mail import send_mail

LOCMEM = "django.core.mail.backends.locmem.EmailBackend"

def test_outbox_sees_send_mail(autosend_outbox):
    send_mail("Welcome", "Hi Ada", "hi@acme.example", ["ada@example.com"])
    [email] = autosend_outbox.assert_sent(to="ada@example.com", subject="Welcome")
    assert email.request.body["text"] == "Hi Ada"

def test_locmem_again_after_the_fixture(mailoutbox):
    assert {swapped} == LOCMEM
    send_mail("Plain", "Hi", "hi@acme.example", ["bob@example.com"])
    assert [m.subject for m in mailoutbox] == ["Plain"]

def test_qstash_dev_sees_send_mail(qstash_dev):
    send_mail("Arrives", "Hi Jane", "hi@acme.example", ["jane@example.com"])
    [email] = qstash_dev.assert_sent(to="jane@example.com", subject="Arrives")
    assert email["text"] == "Hi Jane"

def test_production_values_are_back(mailoutbox):
    assert settings.CELERY_QSTASH_TOKEN == "production-token-never-used-here"
    assert {swapped} == LOCMEM
'''


@pytest.mark.slow
@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_the_fixtures_work_under_pytest_django(pytester: pytest.Pytester, configuration: str) -> None:
    backend, swapped = CONFIGURATIONS[configuration]
    pytester.makepyfile(proj_settings=SETTINGS.replace("{backend}", backend),
                        test_mail=TESTS.replace("{swapped}", swapped))
    pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = proj_settings\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
