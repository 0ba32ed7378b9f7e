"""``celery-qstash dev`` as a user runs it: a real process, Ctrl-C, a restart, nothing lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery import Celery
from children import INTERRUPTIBLE
from click.testing import CliRunner

from celery_qstash import Email, QStashTask
from celery_qstash.cli import main
from celery_qstash.devserver import DEV_AUTOSEND_API_KEY, DEV_TOKEN
from celery_qstash.local.serving import free_port


class Dev:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = [free_port() for _ in range(3)]
        self.proc: subprocess.Popen[str] | None = None

    @property
    def emulator(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def sandbox(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports[2]}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery_qstash", "dev", "--port", str(self.ports[0]),
             "--sandbox-port", str(self.ports[1]), "--dashboard-port", str(self.ports[2]),
             "--data-dir", str(self.data_dir), "--max-body", "64KiB"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **INTERRUPTIBLE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
            try:
                httpx.get(f"{self.dashboard}/healthcheck", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("celery-qstash dev did not come up")

    def interrupt(self) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return self.proc.returncode, out

    def emails(self) -> list[dict[str, object]]:
        messages: list[dict[str, object]] = httpx.get(f"{self.sandbox}/api/v1/messages").json()["messages"]
        return messages


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    server = Dev(tmp_path / "dev")
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


@pytest.mark.slow
def test_ctrl_c_loses_nothing_and_a_restart_delivers(dev: Dev) -> None:
    dev.start()
    app = Celery("dev_cli", set_as_current=True)
    app.conf.update(qstash_dev=True, qstash_url=dev.emulator)

    @app.task(base=QStashTask, name="devcli.reminder", shared=False)
    def reminder(to: str) -> Email:
        return Email(to=to, from_="hi@acme.example", subject="Reminder", text="See you")

    result = reminder.apply_async(("kim@example.com",), countdown=2)
    code, out = dev.interrupt()  # before the message is due

    assert code == 0, out
    assert "stopped" in out
    assert f"export QSTASH_TOKEN={DEV_TOKEN}" in out
    assert f"export AUTOSEND_API_KEY={DEV_AUTOSEND_API_KEY}" in out
    assert "route https://api.autosend.com -> " + dev.sandbox in out

    dev.start()  # same data directory
    assert result.get(timeout=20)["emailId"]
    [email] = dev.emails()
    assert email["to"]["email"] == "kim@example.com"
    inbox_page = httpx.get(f"{dev.sandbox}/").text
    assert "Reminder" in inbox_page and "kim@example.com" in inbox_page
    tasks = httpx.get(f"{dev.dashboard}/api/tasks").json()
    assert tasks[result.id]["state"] == "SUCCESS"

    # The emulator is guarded like the others, with the --max-body it was given.
    auth = {"Authorization": f"Bearer {DEV_TOKEN}"}
    big = httpx.post(f"{dev.emulator}/v2/publish/https://example.com/x", headers=auth,
                     content=b"x" * (64 * 1024 + 1))
    assert big.status_code == 413
    assert httpx.post(f"{dev.emulator}/_emulator/reset").status_code == 401
    assert httpx.post(f"{dev.emulator}/_emulator/reset", headers={
        **auth, "Origin": "http://localhost:3000"}).status_code == 403
    assert httpx.get(f"{dev.emulator}/v2/events", headers={
        **auth, "Host": "rebound.example"}).status_code == 421
    assert len(dev.emails()) == 1


def test_a_bad_route_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["emulator", "--route", "nonsense"])
    assert result.exit_code == 2
    assert "PREFIX=URL" in result.output


@pytest.mark.parametrize(("command", "flag"), [("sandbox", "--dashboard-url"),
                                              ("dashboard", "--inbox-url")])
@pytest.mark.parametrize("url", ["127.0.0.1:8655", "javascript:alert(1)", "ftp://host/"])
def test_the_cross_links_take_http_urls_only(command: str, flag: str, url: str) -> None:
    # The URL becomes a link on every page: only a web address, said at start-up.
    result = CliRunner().invoke(main, [command, flag, url])
    assert result.exit_code == 2
    assert "expected an http:// or https:// URL" in result.output


@pytest.mark.parametrize("command", ["dev", "emulator", "sandbox"])
def test_a_bad_max_body_is_a_usage_error(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--max-body", "lots"])
    assert result.exit_code == 2
    assert "invalid size 'lots'" in result.output


def test_dev_refuses_a_public_dashboard_without_auth(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["dev", "--host", "0.0.0.0", "--port", str(free_port()), "--sandbox-port",
               str(free_port()), "--dashboard-port", str(free_port()), "--data-dir", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "--no-dashboard" in result.output


@pytest.mark.parametrize(
    ("busy_index", "flag", "what"),
    [(0, "--port", "QStash emulator"), (1, "--sandbox-port", "AutoSend sandbox"),
     (2, "--dashboard-port", "dashboard")],
)
def test_dev_with_a_port_in_use_says_which_and_how_to_change_it(
    tmp_path: Path, busy_index: int, flag: str, what: str
) -> None:
    # Before issue 7 this was uvicorn's "address already in use" traceback.
    ports = [free_port() for _ in range(3)]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[busy_index]))
        busy.listen()
        result = CliRunner().invoke(
            main, ["dev", "--port", str(ports[0]), "--sandbox-port", str(ports[1]),
                   "--dashboard-port", str(ports[2]), "--data-dir", str(tmp_path / "d")],
        )
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: port {ports[busy_index]} ({what}) on 127.0.0.1 is in use: "
        f"pick another with {flag} PORT"
    ]
    assert not (tmp_path / "d").exists()  # refused before anything started


def test_dev_names_every_busy_port_at_once(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    with socket.socket() as one, socket.socket() as other:
        for sock, port in ((one, ports[0]), (other, ports[2])):
            sock.bind(("127.0.0.1", port))
            sock.listen()
        result = CliRunner().invoke(
            main, ["dev", "--port", str(ports[0]), "--sandbox-port", str(ports[1]),
                   "--dashboard-port", str(ports[2]), "--data-dir", str(tmp_path / "d")],
        )
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: port {ports[0]} (QStash emulator) on 127.0.0.1 is in use: "
        "pick another with --port PORT",
        f"port {ports[2]} (dashboard) on 127.0.0.1 is in use: pick another with "
        "--dashboard-port PORT",
    ]


@pytest.mark.parametrize("command", ["emulator", "sandbox"])
def test_single_servers_with_a_port_in_use_say_so(tmp_path: Path, command: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            main, [command, "--port", str(port), "--data-dir", str(tmp_path)]
        )
    assert result.exit_code == 1
    assert f"port {port}" in result.output and "--port PORT" in result.output
    assert "Traceback" not in result.output


def test_ctrl_c_reaches_a_child_even_when_the_suite_ignores_it() -> None:
    # `scripts/test &` starts the suite with SIGINT ignored; its children inherit that.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time\ntry:\n    time.sleep(60)\n"
             "except KeyboardInterrupt:\n    print('interrupted')"],
            stdout=subprocess.PIPE, text=True, **INTERRUPTIBLE)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        # Early or late, SIGINT stops it: killed by it, or as KeyboardInterrupt.
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode in (0, -signal.SIGINT)
    assert child.returncode == -signal.SIGINT or out.strip() == "interrupted"


@pytest.mark.parametrize("command", ["emulator", "sandbox"])
def test_the_state_directory_ignores_itself_in_git(tmp_path: Path, command: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from celery_qstash.cli import servers

    monkeypatch.setattr(servers, "_check_ports", lambda *a: None)
    started: list[Path] = []
    module = "celery_qstash.local.emulator" if command == "emulator" \
        else "celery_qstash.local.sandbox"
    monkeypatch.setattr(f"{module}.serve", lambda **kw: started.append(kw["data_dir"]))
    state = tmp_path / ".qstash-dev" / command
    result = CliRunner().invoke(main, [command, "--data-dir", str(state)])
    assert result.exit_code == 0, result.output
    assert started == [state]
    assert (state / ".gitignore").read_text().splitlines()[-1] == "*"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    ignored = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                             cwd=tmp_path, check=True, capture_output=True, text=True)
    assert ignored.stdout == ""  # nothing under .qstash-dev/ shows up


@pytest.mark.parametrize("command", ["dev", "sandbox"])
def test_a_webhook_url_must_be_http(command: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [command, "--webhook-url", "ftp://x.example/",
                                       "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Invalid value for '--webhook-url': must be an http(s) URL" in result.output
    assert not any(tmp_path.iterdir())  # refused before any server or folder was made
