"""``celery-qstash dev --app module:app`` hosts the app's receiver: email callbacks and
deferred tasks' bodies run in the dev process, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from children import INTERRUPTIBLE
from click.testing import CliRunner

from celery_qstash import Email, QStashTask
from celery_qstash.cli import main
from celery_qstash.cli.servers import RECEIVER_PATH, receiver_server
from celery_qstash.local.serving import free_port
from celery_qstash.signals import email_delivered
from celery_qstash.testing import DevServers

APP_MODULE = textwrap.dedent('''
    import os
    from celery import Celery
    from celery_qstash import DeferredTask, Email, QStashTask
    from celery_qstash.signals import email_delivered, email_event

    app = Celery("devloop")

    @app.task(base=QStashTask, name="devloop.send_welcome")
    def send_welcome(user_id):
        return Email(to=f"u{user_id}@example.com", from_="hi@acme.example",
                     subject="Welcome", text="Hi")

    @email_delivered.connect
    def record(sender, task_id, email_id, **kwargs):
        with open(os.environ["DEVLOOP_LOG"], "a") as log:
            log.write(f"{task_id} {email_id}\\n")

    from celery import signals
    opened = {}

    @signals.worker_process_init.connect
    def open_resources(sender=None, **kwargs):
        opened["by"] = "worker_process_init"

    @app.task(base=DeferredTask, name="devloop.tally", shared=False)
    def tally(n):
        with open(os.environ["DEVLOOP_RAN"], "a") as ran:
            ran.write(f"{os.getpid()} {n} {opened.get('by', 'nothing')}\\n")

    @email_event.connect
    def webhook(sender, event, task_id, **kwargs):
        with open(os.environ["DEVLOOP_EVENTS"], "a") as log:
            log.write(f"{task_id} {event}\\n")
''')


def test_the_hosted_receiver_runs_the_apps_handlers(tmp_path: Path) -> None:
    app = Celery("hosted", set_as_current=True)

    @app.task(base=QStashTask, name="hosted.send", shared=False)
    def send(user_id: int) -> Email:
        return Email(to="a@example.com", from_="hi@acme.example", subject="Hi", text="Hi")

    seen: list[dict[str, Any]] = []

    def record(sender: Any = None, **kwargs: Any) -> None:
        seen.append(kwargs)

    email_delivered.connect(record, weak=False)
    try:
        with DevServers(str(tmp_path)) as servers:
            keys = (servers.emulator.current_signing_key, servers.emulator.next_signing_key)
            with receiver_server(app, "127.0.0.1", 0, keys) as hosted:
                servers.configure(app)
                app.conf.qstash_callback_url = hosted.url + RECEIVER_PATH
                send.apply_async((1,), task_id="hosted-1")
                deadline = time.monotonic() + 15
                while not seen and time.monotonic() < deadline:
                    time.sleep(0.05)
                # Guarded like every dev server: a page on another site cannot post to it.
                refused = httpx.post(hosted.url + RECEIVER_PATH, content=b"{}",
                                     headers={"Origin": "https://evil.example"})
                wrong_host = httpx.post(hosted.url + RECEIVER_PATH, content=b"{}",
                                        headers={"Host": "evil.example"})
    finally:
        email_delivered.disconnect(record)
    assert [s["task_id"] for s in seen] == ["hosted-1"]
    assert refused.status_code == 403 and wrong_host.status_code == 421


def test_a_bad_app_path_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["dev", "--app", "no_such_module:app", "--data-dir",
                                       str(tmp_path), "--no-dashboard"])
    assert result.exit_code == 2
    assert "cannot load 'no_such_module:app'" in result.output


@pytest.mark.slow
def test_dev_with_app_closes_the_loop_offline(tmp_path: Path) -> None:
    (tmp_path / "devloop_app.py").write_text(APP_MODULE)
    log = tmp_path / "delivered.log"
    ran = tmp_path / "ran.log"
    events = tmp_path / "events.log"
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DEVLOOP_LOG": str(log),
           "DEVLOOP_RAN": str(ran), "DEVLOOP_EVENTS": str(events), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery_qstash", "dev", "--app", "devloop_app:app",
         "--port", str(ports[0]), "--sandbox-port", str(ports[1]),
         "--receiver-port", str(ports[2]), "--no-dashboard", "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        **INTERRUPTIBLE,
    )
    try:
        callback_url = f"http://127.0.0.1:{ports[2]}{RECEIVER_PATH}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None
            try:
                httpx.get(f"http://127.0.0.1:{ports[0]}/_emulator/health", timeout=1)
                httpx.get(callback_url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "dev did not come up"
                time.sleep(0.05)
        sys.path.insert(0, str(tmp_path))
        try:
            import devloop_app
        finally:
            sys.path.remove(str(tmp_path))
        # QSTASH_DEV-style settings (the dev token and keys), plus the two URLs dev printed.
        devloop_app.app.conf.update(qstash_dev=True, qstash_url=f"http://127.0.0.1:{ports[0]}",
                                    qstash_callback_url=callback_url,
                                    qstash_receiver_url=callback_url)
        devloop_app.send_welcome.apply_async((5,), task_id="devloop-5")
        devloop_app.tally.delay(7)
        deadline = time.monotonic() + 20
        while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.read_text().split()[0] == "devloop-5"
        # The sandbox's webhooks reach the app's endpoint in the dev process: sent, then
        # delivered a second later, both with the task's id.
        wanted = "devloop-5 email.sent\ndevloop-5 email.delivered\n"
        while not (events.exists() and events.read_text() == wanted):
            assert time.monotonic() < deadline + 10, events.read_text() if events.exists() else ""
            time.sleep(0.05)
        while not (ran.exists() and ran.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The deferred task's body ran in the dev process, not in the caller's, after the
        # worker signals its set-up hangs on.
        assert ran.read_text().split() == [str(proc.pid), "7", "worker_process_init"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        sys.modules.pop("devloop_app", None)
    assert f"export QSTASH_CALLBACK_URL={callback_url}" in out
    assert "export AUTOSEND_WEBHOOK_SECRET=" in out
    assert f"export QSTASH_RECEIVER_URL={callback_url}" in out
