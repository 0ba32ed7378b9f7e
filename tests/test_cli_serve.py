"""``celery-qstash serve -A module:app`` (and ``celery -A proj qstash serve``): the app's
receiver in a process of its own, where deferred tasks' bodies run, as on a worker.

The end-to-end tests start it as a real subprocess; the emulator (``DevServers``) runs
in the test process, which publishes, so the body runs in another process than the caller.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery.bin.celery import celery as celery_main
from click.testing import CliRunner
from waiting import wait_until

from celery_qstash.cli import main
from celery_qstash.local.emulator.signing import sign
from celery_qstash.local.serving import free_port
from celery_qstash.publish.message import MESSAGE_KIND
from celery_qstash.testing import DevServers

APP_MODULE = textwrap.dedent('''
    import os
    from celery import Celery
    from celery_qstash import DeferredTask

    from celery import signals

    app = Celery("servapp")
    pool = {}

    def note(event):
        if os.environ.get("SERVAPP_SIGNALS"):
            with open(os.environ["SERVAPP_SIGNALS"], "a") as log:
                log.write(f"{event}\\n")

    # What code moved off a worker hangs on its signals: a per-process resource.
    @signals.worker_process_init.connect
    def open_pool(sender=None, **kwargs):
        pool["connection"] = f"pool of {sender}"
        note(f"worker_process_init {sender}")

    @signals.worker_init.connect
    def started(sender=None, **kwargs):
        note(f"worker_init {sender.hostname}")

    @signals.worker_ready.connect
    def ready(sender=None, **kwargs):
        note("worker_ready")

    @signals.worker_shutdown.connect
    def stopped(sender=None, **kwargs):
        note("worker_shutdown")

    @app.task(base=DeferredTask, name="servapp.record", shared=False)
    def record(word):
        with open(os.environ["SERVAPP_LOG"], "a") as log:
            log.write(f"{os.getpid()} {word}\\n")
        note(f"ran {word} on {pool.get('connection')}")
        return word.upper()
''')

#: Runs `celery-qstash` with starlette unimportable: `serve` is for a production install,
#: which has uvicorn (the `serve` extra) but not the `[local]` extra.
WITHOUT_STARLETTE = textwrap.dedent('''
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "starlette":
                raise ImportError(f"{name} is blocked: no local extra")
    sys.meta_path.insert(0, Block())
    from celery_qstash.cli import main
    main(prog_name="celery-qstash")
''')


@pytest.fixture
def servapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    (tmp_path / "servapp.py").write_text(APP_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SERVAPP_LOG", str(tmp_path / "ran.log"))
    import servapp

    yield servapp
    servapp.app.close()
    sys.modules.pop("servapp", None)


def _start(tmp_path: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "AUTOSEND_"))}
    return subprocess.Popen(
        [sys.executable, "-c", WITHOUT_STARLETTE, "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**clean, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path), **env},
    )


def _wait_listening(proc: subprocess.Popen[str], url: str) -> None:
    def up() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            # Deliveries are POSTs: a GET proves the receiver answers, and runs nothing.
            return httpx.get(url, timeout=1).status_code == 405
        except httpx.TransportError:
            return False

    wait_until(up, f"serve listening at {url}", timeout=30)


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # The signal was not honoured (a background job ignores SIGINT): never leave the
        # server running; the test fails on the exit code it then reports.
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out


@pytest.mark.slow
def test_a_deferred_task_runs_once_in_the_serve_process(tmp_path: Path, servapp: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/qstash/receive"
    log = tmp_path / "ran.log"
    with DevServers(str(tmp_path / "dev")) as servers:
        keys = (servers.emulator.current_signing_key, servers.emulator.next_signing_key)
        proc = _start(tmp_path, ["-A", "servapp:app", "--port", str(port)], {
            "QSTASH_CURRENT_SIGNING_KEY": keys[0], "QSTASH_NEXT_SIGNING_KEY": keys[1],
            "QSTASH_RECEIVER_URL": url, "SERVAPP_LOG": str(log),
        })
        try:
            _wait_listening(proc, url)
            servers.configure(servapp.app)
            servapp.app.conf.update(qstash_receiver_url=url, result_backend="qstash://")
            result = servapp.record.delay("hello")
            # The body's return value comes back through QStash's logs: the delivery is done.
            assert result.get(timeout=30) == "HELLO"
            [line] = log.read_text().splitlines()
            assert line == f"{proc.pid} hello"  # the serve process ran it, not the caller

            body = json.dumps({"kind": MESSAGE_KIND, "task": "servapp.record", "id": "forged-1",
                               "args": ["forged"], "kwargs": {}, "retries": 0,
                               "delivery": "nonce-forged-1"}).encode()
            headers = {"Upstash-Message-Id": "msg_forged", "Content-Type": "application/json"}
            wrong_key = sign("sig_" + "x" * 28, url, body, time.time())
            forged = httpx.post(url, content=body,
                                headers={**headers, "Upstash-Signature": wrong_key})
            unsigned = httpx.post(url, content=body, headers=headers)
            # Guarded as every server of ours: another site's page, a rebinding Host.
            signed = {**headers, "Upstash-Signature": sign(keys[0], url, body, time.time())}
            cross_site = httpx.post(url, content=body,
                                    headers={**signed, "Origin": "https://evil.example"})
            rebound = httpx.post(url, content=body,
                                 headers={**signed, "Host": f"evil.example:{port}"})
            elsewhere = httpx.post(f"http://127.0.0.1:{port}/other", content=body, headers=signed)
        finally:
            code, out = _stop(proc, signal.SIGINT)
    assert (forged.status_code, unsigned.status_code) == (401, 401)
    assert (cross_site.status_code, rebound.status_code, elsewhere.status_code) == (403, 421, 404)
    assert log.read_text().splitlines() == [f"{proc.pid} hello"]  # nothing else ran
    assert code == 0, out
    assert f"listening on {url}" in out
    assert f"export QSTASH_RECEIVER_URL={url}" in out
    assert "stopped" in out.splitlines()[-1]
    assert keys[0] not in out and keys[1] not in out


@pytest.mark.slow
def test_with_qstash_dev_it_starts_on_the_dev_keys_and_sigterm_stops_it(tmp_path: Path) -> None:
    (tmp_path / "servapp.py").write_text(APP_MODULE)
    port = free_port()
    url = f"http://127.0.0.1:{port}/tasks"
    signals = tmp_path / "signals.log"
    proc = _start(tmp_path, ["-A", "servapp:app", "--port", str(port), "--path", "/tasks",
                             "-n", "receiver1@%h", "-c", "2"],
                  {"QSTASH_DEV": "true", "SERVAPP_LOG": str(tmp_path / "ran.log"),
                   "SERVAPP_SIGNALS": str(signals)})
    try:
        _wait_listening(proc, url)
        body = json.dumps({"kind": MESSAGE_KIND, "task": "servapp.record", "id": "dev-1",
                           "args": ["dev"], "kwargs": {}, "retries": 0,
                           "delivery": "nonce-dev-1"}).encode()
        from celery_qstash.devserver import DEV_CURRENT_SIGNING_KEY

        answer = httpx.post(url, content=body, headers={
            "Upstash-Signature": sign(DEV_CURRENT_SIGNING_KEY, url, body, time.time()),
            "Upstash-Message-Id": "msg_dev"})
    finally:
        code, out = _stop(proc, signal.SIGTERM)
    assert answer.status_code == 200 and answer.json()["result"] == "DEV"
    assert code == 0, out
    assert "(the public dev signing keys: for `celery-qstash dev` only)" in out
    assert out.splitlines()[-1] == "stopped"
    # A worker's signals, in a worker's order, around the body that needed them.
    node = f"receiver1@{socket.gethostname()}"
    assert signals.read_text().splitlines() == [
        f"worker_init {node}", f"worker_process_init {node}", "worker_ready",
        f"ran dev on pool of {node}", "worker_shutdown",
    ]


def test_without_signing_keys_it_refuses_to_start(tmp_path: Path, servapp: Any) -> None:
    result = CliRunner().invoke(main, ["serve", "-A", "servapp:app", "--port", "0"])
    assert result.exit_code == 1
    assert "QSTASH_CURRENT_SIGNING_KEY" in result.output
    assert "listening" not in result.output


def test_without_uvicorn_it_names_the_extra(servapp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what a missing package looks like
    result = CliRunner().invoke(main, ["serve", "-A", "servapp:app"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "celery-qstash serve needs an ASGI server: pip install 'celery-qstash[serve]'"]


def test_a_busy_port_is_one_line(servapp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("QSTASH_DEV", "true")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "-A", "servapp:app", "--port", str(port)])
    assert result.exit_code == 1
    assert f"port {port} (receiver) on 127.0.0.1 is in use: pick another with --port PORT" \
        in result.output


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_concurrency_is_a_whole_number_of_at_least_one(servapp: Any, value: str) -> None:
    result = CliRunner().invoke(main, ["serve", "-A", "servapp:app", "-c", value])
    assert result.exit_code == 2 and "--concurrency" in result.output


@pytest.mark.parametrize("path", ["receive", "/a?b=1"])
def test_a_path_must_be_a_url_path(servapp: Any, path: str) -> None:
    result = CliRunner().invoke(main, ["serve", "-A", "servapp:app", "--path", path])
    assert result.exit_code == 2 and "a URL path starting with /" in result.output


def test_under_celery_it_serves_the_app_given_with_dash_a(servapp: Any) -> None:
    runner = CliRunner()
    assert "serve" in runner.invoke(celery_main, ["qstash", "--help"]).output
    # The app comes from `celery -A`: without keys in its conf, that is what is missing...
    result = runner.invoke(celery_main, ["-A", "servapp", "qstash", "serve", "--port", "0"])
    assert result.exit_code == 1 and "QSTASH_CURRENT_SIGNING_KEY" in result.output
    # ... and a key in that app's conf is what it reads (then the port decides).
    servapp.app.conf.qstash_current_signing_key = "sig_" + "k" * 28
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(celery_main, ["-A", "servapp", "qstash", "serve", "--port",
                                             str(port)])
    assert result.exit_code == 1 and f"port {port} (receiver)" in result.output
