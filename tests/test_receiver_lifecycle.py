"""``worker_lifecycle``: a receiver process tells the app it starts and stops, as a
Celery worker does, so set-up hung on worker signals (and Celery's Django fix-up) runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, signals

from celery_qstash.receiver.lifecycle import ReceiverWorker, worker_lifecycle

SIGNALS = (
    "celeryd_init", "worker_init", "celeryd_after_setup", "worker_process_init",
    "worker_ready", "worker_shutting_down", "worker_process_shutdown", "worker_shutdown",
)


@pytest.fixture
def heard() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    events: list[tuple[str, Any, dict[str, Any]]] = []
    handlers = []
    for name in SIGNALS:
        def handler(sender: Any = None, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            events.append((_name, sender, kwargs))

        getattr(signals, name).connect(handler, weak=False)
        handlers.append((name, handler))
    yield events
    for name, handler in handlers:
        getattr(signals, name).disconnect(handler)


def test_a_workers_signals_in_a_workers_order(
    heard: list[tuple[str, Any, dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The `imports` setting is loaded on start, as `celery worker` loads it.
    (tmp_path / "lifecycle_tasks.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lifecycle_tasks", raising=False)
    app = Celery("lifecycle", set_as_current=False)
    app.conf.imports = ["lifecycle_tasks"]

    with worker_lifecycle(app, "receiver@%h", port=8000) as worker:
        assert "lifecycle_tasks" in sys.modules
        started = [name for name, _, _ in heard]
        assert app.finalized
    assert isinstance(worker, ReceiverWorker) and worker.app is app
    assert worker.hostname.startswith("receiver@") and "%h" not in worker.hostname
    assert started == list(SIGNALS[:5])
    assert [name for name, _, _ in heard] == list(SIGNALS)
    by_name = {name: (sender, kwargs) for name, sender, kwargs in heard}
    assert by_name["celeryd_init"] == (worker.hostname, {
        "instance": worker, "conf": app.conf, "options": {"port": 8000}})
    assert by_name["worker_init"][0] is worker and by_name["worker_ready"][0] is worker
    assert by_name["worker_process_init"][0] == worker.hostname
    assert by_name["worker_shutting_down"][1]["exitcode"] == 0
    assert by_name["worker_process_shutdown"][1]["exitcode"] == 0


def test_an_error_inside_still_shuts_down_and_says_so(
    heard: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    app = Celery("lifecycle-error", set_as_current=False)
    with pytest.raises(RuntimeError, match="server died"), worker_lifecycle(app):
        raise RuntimeError("server died")
    by_name = {name: kwargs for name, _, kwargs in heard}
    assert by_name["worker_shutting_down"]["exitcode"] == 1
    assert by_name["worker_process_shutdown"]["exitcode"] == 1
    assert "worker_shutdown" in by_name


# Celery's Django fix-up closes a task's stale database connection after it ran, once a
# worker started (it hooks task_postrun on worker_init). In a process of its own: the
# fix-up's handlers stay connected to Celery's signals for the life of the process.
DJANGO_PROBE = textwrap.dedent('''
    import json, os, sys, time
    os.environ["DJANGO_SETTINGS_MODULE"] = "probe_settings"
    import django
    django.setup()
    from celery import Celery
    from django.db import connection
    from celery_qstash import DeferredTask
    from celery_qstash.local.emulator.signing import sign
    from celery_qstash.publish.message import MESSAGE_KIND
    from celery_qstash.receiver import CallbackReceiver, ReceivedRequest
    from celery_qstash.receiver.lifecycle import worker_lifecycle

    KEY, URL = "sig_" + "k" * 28, "https://app.example/qstash/receive"
    app = Celery("probe")
    app.conf.update(qstash_current_signing_key=KEY, qstash_next_signing_key=KEY,
                    qstash_receiver_url=URL, qstash_token="t")

    @app.task(base=DeferredTask, name="probe.query", shared=False)
    def query():
        with connection.cursor() as cursor:
            cursor.execute("select 1")
        return connection.connection is not None

    def deliver(nonce):
        body = json.dumps({"kind": MESSAGE_KIND, "task": "probe.query", "id": nonce,
                           "args": [], "kwargs": {}, "retries": 0, "delivery": nonce}).encode()
        answer = CallbackReceiver(app).handle(ReceivedRequest("POST", URL, {
            "Upstash-Signature": sign(KEY, URL, body, time.time()),
            "Upstash-Message-Id": "msg_" + nonce}, body))
        assert answer.status == 200, answer.payload
        return connection.connection is None  # closed after the task?

    before = deliver("before")
    with worker_lifecycle(app):
        during = deliver("during")
    print(json.dumps({"before": before, "during": during}))
''')


def test_celerys_django_fixup_closes_stale_connections_after_each_task(tmp_path: Path) -> None:
    (tmp_path / "probe_settings.py").write_text(textwrap.dedent(f'''
        SECRET_KEY = "probe"
        INSTALLED_APPS = []
        USE_TZ = True
        DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3",
                                  "NAME": {str(tmp_path / "db.sqlite3")!r},
                                  "CONN_MAX_AGE": 0}}}}
    '''))
    (tmp_path / "probe.py").write_text(DJANGO_PROBE)
    done = subprocess.run([sys.executable, "probe.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    # Outside a worker's lifecycle the connection the body opened stays open; inside
    # it, the fix-up closes it after the task, as on `celery worker`.
    assert outcome == {"before": False, "during": True}
