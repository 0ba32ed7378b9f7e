"""The pytest plugin, loaded whenever celery-qstash is installed (``pytest11`` entry point).

Fixtures:

* ``autosend_outbox``: eager mode on for the test (every app, no conf to touch), the
  outbox emptied before and after; ``assert_sent(to=..., subject=...)`` and ``.last``.
* ``qstash_dev``: the QStash emulator and the AutoSend sandbox on free loopback
  ports, started once per session and reset before each test; the environment and
  the current Celery app point at them. Needs the ``local`` extra.
* ``autosend``: one of the two, chosen by ``@pytest.mark.autosend("dev")``, the
  ``--autosend-mode`` option or the ``autosend_mode`` ini value (default ``eager``).
  Both answer ``assert_sent``, ``.last`` and ``len()``.

Nothing server-side (starlette, uvicorn, the emulator) is imported unless
``qstash_dev`` is used, so a production install without the extra runs its tests.

**Django.** Django's test runner (and pytest-django, which calls it) swaps
``EMAIL_BACKEND`` (on Django 6.1, every ``MAILERS`` alias) for ``locmem`` for the whole
session, so a plain ``send_mail`` would never reach celery-qstash's backend. When the
project's own backend is celery-qstash's, ``autosend_outbox`` and ``qstash_dev`` put the
project's setting back for their test (and restore ``locmem`` after it); ``mailoutbox``
keeps working in every other test.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..testing import DevServers

__all__ = ["DevInbox", "OutboxFixture"]

MODES = ("eager", "dev")
_ENV = ("QSTASH_URL", "QSTASH_TOKEN", "AUTOSEND_API_KEY")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("celery-qstash")
    group.addoption(
        "--autosend-mode",
        choices=MODES,
        default=None,
        help="what the autosend fixture uses: eager (in-process outbox, the default) or dev "
        "(QStash emulator + AutoSend sandbox on loopback, end to end)",
    )
    parser.addini("autosend_mode", "default mode of the autosend fixture: eager or dev")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "autosend(mode): run this test's autosend fixture in 'eager' or 'dev' (end to end) mode",
    )


def _describe(found: list[tuple[list[str], str | None]]) -> str:
    if not found:
        return "nothing was sent"
    return "sent: " + "; ".join(f"to={to} subject={subject!r}" for to, subject in found)


def _match(
    emails: list[tuple[list[str], str | None]], to: str | None, subject: str | None
) -> list[int]:
    return [
        i for i, (addresses, subj) in enumerate(emails)
        if (to is None or to in addresses) and (subject is None or subj == subject)
    ]


class OutboxFixture:
    """The eager outbox, with assertions. Items are :class:`~celery_qstash.testing.SentEmail`."""

    mode = "eager"

    def __init__(self) -> None:
        from ..testing import outbox

        self.outbox = outbox

    def __len__(self) -> int:
        return len(self.outbox)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.outbox)

    def __getitem__(self, index: int) -> Any:
        return self.outbox[index]

    @property
    def last(self) -> Any:
        """The newest email (``IndexError`` when nothing was sent)."""
        return self.outbox.last

    def clear(self) -> None:
        self.outbox.clear()

    def assert_sent(
        self, *, to: str | None = None, subject: str | None = None, count: int | None = None
    ) -> list[Any]:
        """The emails matching ``to`` (any recipient) and ``subject``; fails if none match
        (or, with ``count``, if not exactly that many do)."""
        items = list(self.outbox)
        seen = [(item.to, item.subject) for item in items]
        hits = [items[i] for i in _match(seen, to, subject)]
        _check(hits, count, to, subject, seen)
        return hits


def _check(
    hits: list[Any], count: int | None, to: str | None, subject: str | None,
    seen: list[tuple[list[str], str | None]],
) -> None:
    wanted = f"to={to!r} subject={subject!r}"
    if count is None and not hits:
        raise AssertionError(f"no email matching {wanted}; {_describe(seen)}")
    if count is not None and len(hits) != count:
        raise AssertionError(
            f"expected {count} email(s) matching {wanted}, found {len(hits)}; {_describe(seen)}"
        )


def _addresses(message: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("to", "cc", "bcc", "recipients"):
        value = message.get(key)
        for item in value if isinstance(value, list) else [value] if value else []:
            if isinstance(item, dict) and item.get("email"):
                found.append(item["email"])
    return found


class DevInbox:
    """The emulator and sandbox of this session; assertions read the sandbox inbox.

    Items are the sandbox's JSON messages (``{"to": {"email": ...}, "subject": ...}``).
    Delivery takes real time, so ``assert_sent`` waits (``timeout`` seconds) for a match.
    """

    mode = "dev"

    def __init__(self, servers: DevServers) -> None:
        self.servers = servers

    @property
    def qstash_url(self) -> str:
        return str(self.servers.emulator.url)

    @property
    def qstash_token(self) -> str:
        return str(self.servers.emulator.token)

    @property
    def autosend_url(self) -> str:
        return str(self.servers.sandbox.url)

    @property
    def api_key(self) -> str:
        return str(self.servers.api_key)

    def configure(self, app: Any) -> None:
        """Point a Celery app at these servers (the current app already is)."""
        self.servers.configure(app)

    def emails(self) -> list[dict[str, Any]]:
        """What the sandbox captured, oldest first."""
        return list(reversed(self.servers.emails()))

    def __len__(self) -> int:
        return len(self.servers.emails())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.emails())

    @property
    def last(self) -> dict[str, Any]:
        found = self.servers.emails()
        if not found:
            raise IndexError("the sandbox inbox is empty")
        return found[0]

    def wait_for_emails(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return list(reversed(self.servers.wait_for_emails(count, timeout)))

    def assert_sent(
        self,
        *,
        to: str | None = None,
        subject: str | None = None,
        count: int | None = None,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """As the outbox's, but waits up to ``timeout`` seconds for QStash to deliver."""
        deadline = time.monotonic() + timeout
        while True:
            emails = self.emails()
            seen = [(_addresses(m), m.get("subject")) for m in emails]
            hits = [emails[i] for i in _match(seen, to, subject)]
            done = bool(hits) if count is None else len(hits) >= count
            if done or time.monotonic() > deadline:
                _check(hits, count, to, subject, seen)
                return hits
            time.sleep(0.05)


#: What Django's ``setup_test_environment`` puts in place of the project's backend.
LOCMEM_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@contextmanager
def _quiet_email_backend_setting() -> Iterator[None]:
    # Django 6.1 warns on every read and write of EMAIL_BACKEND (deprecated for MAILERS):
    # the project chose that setting and hears about it from its settings module; putting
    # its own value back for a test is not a new use of it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The EMAIL_BACKEND setting is deprecated")
        yield


def _project_mail() -> tuple[str, Any] | None:
    """``(setting, the project's value)`` when Django's test environment swapped the
    project's celery-qstash backend for locmem: ``EMAIL_BACKEND``, or Django 6.1's
    ``MAILERS`` (every alias swapped); else ``None`` (nothing to route)."""
    import sys

    if "django" not in sys.modules:  # a project without Django never imports it here
        return None
    from django.conf import settings

    if not settings.configured:
        return None
    from django.test.utils import _TestState

    saved = getattr(_TestState, "saved_data", None)
    mailers = getattr(saved, "mailers", None)
    if isinstance(mailers, dict) and hasattr(settings, "MAILERS"):
        ours = any(
            isinstance(config, dict) and str(config.get("BACKEND", "")).startswith("celery_qstash.")
            for config in mailers.values()
        )
        return ("MAILERS", mailers) if ours else None
    with _quiet_email_backend_setting():
        if getattr(settings, "EMAIL_BACKEND", None) != LOCMEM_BACKEND:
            return None
    backend = getattr(saved, "email_backend", None)
    if isinstance(backend, str) and backend.startswith("celery_qstash."):
        return ("EMAIL_BACKEND", backend)
    return None


@contextmanager
def _django_mail_to_celery_qstash() -> Iterator[None]:
    """Route Django's mail to celery-qstash's backend for one test (see the module doc)."""
    found = _project_mail()
    if found is None:
        yield
        return
    from django.conf import settings

    name, value = found
    with _quiet_email_backend_setting():
        swapped = getattr(settings, name)
        setattr(settings, name, value)
    try:
        yield
    finally:
        with _quiet_email_backend_setting():
            setattr(settings, name, swapped)


def _refuse_both(request: pytest.FixtureRequest, other: str) -> None:
    # Eager mode wins over any URL, so with both every email would silently land in the
    # outbox and the inbox would stay empty: say so instead of letting the test mislead.
    # (The other may be static or requested through the autosend fixture.)
    if other in request.fixturenames:
        raise pytest.UsageError(
            f"{request.node.nodeid}: autosend_outbox (eager, in-process) and qstash_dev (end "
            "to end through the emulator) cannot be used by the same test; use one of them, "
            "or the autosend fixture with @pytest.mark.autosend('eager' or 'dev')"
        )


@pytest.fixture
def autosend_outbox(request: pytest.FixtureRequest) -> Iterator[OutboxFixture]:
    """Eager mode for this test: every QStash task and the Django backend write to the outbox."""
    from ..publish.transports.eager import force_eager

    _refuse_both(request, "qstash_dev")
    box = OutboxFixture()
    box.clear()
    force_eager(True)
    try:
        with _django_mail_to_celery_qstash():
            yield box
    finally:
        force_eager(False)
        box.clear()


@pytest.fixture(scope="session")
def _celery_qstash_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServers]:
    from ..testing import DevServers

    servers = DevServers(str(tmp_path_factory.mktemp("qstash-dev")))
    try:
        servers.start()
    except ImportError as exc:
        servers.stop()
        pytest.fail(
            f"qstash_dev needs the local extra: pip install 'celery-qstash[local]' ({exc})",
            pytrace=False,
        )
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def qstash_dev(
    request: pytest.FixtureRequest,
    _celery_qstash_servers: DevServers,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[DevInbox]:
    """The emulator + sandbox (one pair per session), emptied for this test, with the
    environment (``QSTASH_URL``, ``QSTASH_TOKEN``, ``AUTOSEND_API_KEY``) and the current
    Celery app pointed at them."""
    from celery import current_app

    _refuse_both(request, "autosend_outbox")
    servers = _celery_qstash_servers
    servers.reset()
    inbox = DevInbox(servers)
    monkeypatch.delenv("QSTASH_DEV", raising=False)
    for name, value in zip(_ENV, (inbox.qstash_url, inbox.qstash_token, inbox.api_key),
                           strict=True):
        monkeypatch.setenv(name, value)
    app = current_app._get_current_object()
    keys = ("qstash_url", "qstash_token", "autosend_api_key")
    before = {key: app.conf.get(key) for key in keys}
    servers.configure(app)
    try:
        with _django_mail_to_celery_qstash(), _django_settings_at(inbox):
            yield inbox
    finally:
        app.conf.update(before)


@contextmanager
def _django_settings_at(inbox: DevInbox) -> Iterator[None]:
    """Django settings win over the environment for the backend (``CELERY_QSTASH_URL``...):
    point the ones a project set at this session's servers too, for one test."""
    import sys

    if "django" not in sys.modules:
        yield
        return
    from django.conf import settings

    if not settings.configured:
        yield
        return
    wanted = {"CELERY_QSTASH_URL": inbox.qstash_url, "CELERY_QSTASH_TOKEN": inbox.qstash_token,
              "CELERY_AUTOSEND_API_KEY": inbox.api_key, "CELERY_QSTASH_DEV": False}
    saved = {name: getattr(settings, name) for name in wanted if hasattr(settings, name)}
    for name in saved:
        setattr(settings, name, wanted[name])
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(settings, name, value)


def _mode(request: pytest.FixtureRequest) -> str:
    marker = request.node.get_closest_marker("autosend")
    mode = (marker.args[0] if marker and marker.args else None) or (
        marker.kwargs.get("mode") if marker else None
    )
    mode = mode or request.config.getoption("--autosend-mode") or (
        request.config.getini("autosend_mode") or "eager"
    )
    if mode not in MODES:
        raise pytest.UsageError(f"autosend mode must be one of {MODES}, got {mode!r}")
    return str(mode)


@pytest.fixture
def autosend(request: pytest.FixtureRequest) -> Any:
    """``autosend_outbox`` or ``qstash_dev``, by marker, ``--autosend-mode`` or ini."""
    name = "qstash_dev" if _mode(request) == "dev" else "autosend_outbox"
    return request.getfixturevalue(name)
