"""docker-compose.yml's services run as real processes, without a container runtime.

Each service's own command, environment and health check are read from the compose file
and run here, rewritten only where a container differs from this machine: every service
gets a free loopback port (``http://qstash:8080`` and the published ``127.0.0.1:8655``
both become ``http://127.0.0.1:<its port>``), ``--host=0.0.0.0`` binds 127.0.0.1, and
``/data`` is a temporary directory. Upstash's official image is not here: the emulator
stands in for ``qstash-official`` (its address is the emulator's), so the ``official``
profile's app, dashboard and health checks run too. Prometheus and Grafana (the
``monitoring`` profile) are other projects' images and are not run.

Then what a person does with the stack: every health check passes against the running
servers; a sign-up on the Django app lands in the inbox, the email links to its task on
the dashboard, and the task links back to its email; the second app's email shows on the
second dashboard.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from celery_qstash.local.serving import free_port
from tests.children import INTERRUPTIBLE
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: The official image's stand-in: the emulator, reached at the official server's name.
STAND_IN = {"qstash-official": "qstash"}
BIN = Path(sys.executable).parent


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}``, with nothing set in the environment."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


class Stack:
    """The compose services as processes on loopback."""

    def __init__(self, services: dict[str, Any], data: Path) -> None:
        # Ours: built from this repository's Dockerfile (Prometheus and Grafana, in the
        # monitoring profile, are other projects' images and have no health check here).
        self.services = {n: s for n, s in services.items() if "build" in s}
        self.port = {name: free_port("127.0.0.1") for name in self.services}
        for name, real in STAND_IN.items():
            self.port[name] = self.port[real]
        # container port and published host port of every service, for the rewriting
        self.inner: dict[str, int] = {}
        self.published: dict[int, str] = {}
        for name, service in services.items():
            if name not in self.port:
                continue
            for entry in service.get("ports", []):
                _, host_port, container = str(entry).split(":")
                self.inner[name] = int(container)
                self.published[int(host_port)] = name
        self.data = data
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port[name]}"

    def rewrite(self, name: str, text: str, *, inside: bool) -> str:
        """A value of service ``name`` as it must read on this machine. ``inside``: a
        health check, where ``127.0.0.1:<port>`` is the service itself (in its container);
        elsewhere it is a published port, as a browser on the host reaches it."""
        text = _interpolate(text)
        for other, port in self.inner.items():
            text = text.replace(f"http://{other}:{port}", self.url(other))
        own = self.inner.get(name)
        if own is not None:
            text = text.replace(f"--port={own}", f"--port={self.port[name]}")
            text = text.replace(f"0.0.0.0:{own}", f"127.0.0.1:{self.port[name]}")
            if inside:
                text = text.replace(f"127.0.0.1:{own}", f"127.0.0.1:{self.port[name]}")
        if not inside:
            text = re.sub(r"127\.0\.0\.1:(\d+)",
                          lambda m: (self.url(self.published[int(m[1])]).removeprefix("http://")
                                     if int(m[1]) in self.published else m[0]), text)
        text = text.replace("--host=0.0.0.0", "--host=127.0.0.1")
        return text.replace("/data/", f"{self.data / name}/")

    def environment(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("QSTASH_", "AUTOSEND_", "CELERY_", "DJANGO_"))}
        for key, value in (self.services[name].get("environment") or {}).items():
            env[key] = self.rewrite(name, str(value), inside=False)
        return env

    def command(self, name: str) -> list[str]:
        command = [self.rewrite(name, str(part), inside=False)
                   for part in self.services[name]["command"]]
        program = {"celery-qstash": str(BIN / "celery-qstash"), "python": sys.executable}
        return [program.get(command[0], command[0]), *command[1:]]

    def start(self, name: str) -> None:
        workdir = self.services[name].get("working_dir")
        cwd = ROOT / workdir.removeprefix("/app/") if workdir else ROOT
        log = (self.data / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(self.command(name), cwd=cwd, env=self.environment(name),
                                            stdout=log, stderr=subprocess.STDOUT, **INTERRUPTIBLE)

    def health_check(self, name: str) -> subprocess.CompletedProcess[str]:
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        argv = [self.rewrite(name, str(part), inside=True) for part in test[1:]]
        argv[0] = {"python": sys.executable}.get(argv[0], argv[0])
        return subprocess.run(argv, env=self.environment(name), capture_output=True, text=True,
                              timeout=30)

    def healthy(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            log = (self.data / f"{name}.log").read_text(errors="replace")
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{log[-3000:]}")
        return self.health_check(name).returncode == 0

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _order(services: dict[str, Any]) -> list[str]:
    """Services in ``depends_on`` order, as compose starts them."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for dep in services[name].get("depends_on") or {}:
            visit(dep)
        done.append(name)

    for name in services:
        visit(name)
    return done


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    services = _compose()["services"]
    running = Stack(services, tmp_path_factory.mktemp("compose"))
    try:
        for name in _order(services):
            if name not in running.services:
                continue
            running.start(name)
            # compose waits for service_healthy before starting what depends on it
            if "healthcheck" in services[name]:
                wait_until(lambda n=name: running.healthy(n), f"{name} healthy", timeout=60)
        yield running
    finally:
        running.stop()


def test_every_service_with_a_health_check_passes_it_against_the_running_servers(
    stack: Stack,
) -> None:
    services = _compose()["services"]
    checked = [n for n in services if "healthcheck" in services[n]]
    # ours, and the official profile's two (the official image itself has no Python)
    assert set(checked) == {"qstash", "autosend", "dashboard", "app", "app-official",
                            "dashboard-official"}
    for name in checked:
        done = stack.health_check(name)
        assert done.returncode == 0, (name, done.stderr)


def test_each_health_check_fails_when_its_server_is_down(stack: Stack, tmp_path: Path) -> None:
    # A check that passed for any reason would prove nothing: against a dead port it fails.
    services = _compose()["services"]
    dead = Stack(services, tmp_path)  # the same rewriting, over ports nothing listens on
    for name in ("qstash", "autosend", "dashboard", "app", "dashboard-official"):
        done = dead.health_check(name)
        assert done.returncode != 0, name


def _signup(stack: Stack, app: str, address: str) -> dict[str, Any]:
    answer = httpx.post(f"{stack.url(app)}/signup/", data={"email": address, "name": "Jane"})
    assert answer.status_code == 202, answer.text

    def arrived() -> Any:
        listing = httpx.get(f"{stack.url('autosend')}/api/v1/messages").json()["messages"]
        return next((m for m in listing if m["to"]["email"] == address), None)

    return wait_until(arrived, f"the email to {address} in the inbox", timeout=30)  # type: ignore[no-any-return]


def _auth() -> tuple[str, str]:
    value = _interpolate(str(_compose()["services"]["dashboard"]["environment"]
                             ["CELERY_QSTASH_DASHBOARD_AUTH"]))
    user, _, password = value.partition(":")
    return user, password


def test_an_email_links_to_its_task_and_the_task_to_its_email(stack: Stack) -> None:
    email = _signup(stack, "app", "jane@compose.example")
    task_id = email["idempotencyKey"]
    page = httpx.get(f"{stack.url('autosend')}/inbox/{email['id']}").text
    task_url = f"{stack.url('dashboard')}/tasks/{task_id}"
    assert f'id="task-link" href="{task_url}"' in page

    def delivered() -> str | None:
        answer = httpx.get(task_url, auth=_auth())
        return answer.text if answer.status_code == 200 and "SUCCESS" in answer.text else None

    task_page = wait_until(delivered, "the task delivered on the dashboard", timeout=30)
    assert f'id="inbox-link" href="{stack.url("autosend")}/inbox?key={task_id}"' in task_page


def test_the_official_profiles_app_shows_on_its_own_dashboard(stack: Stack) -> None:
    email = _signup(stack, "app-official", "joe@official.example")
    answer = httpx.get(f"{stack.url('dashboard-official')}/tasks/{email['idempotencyKey']}",
                       auth=_auth())
    assert answer.status_code == 200
    assert 'id="inbox-link"' in answer.text
