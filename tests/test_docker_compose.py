"""docker-compose.yml and the Dockerfile, checked without Docker (not on this machine):
the file is parsed with a YAML parser and every service's command, port, health check,
volume and environment is checked against the code that will run in it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from celery_qstash.cli import main as cli_main
from celery_qstash.config import load_settings
from celery_qstash.devserver import AUTOSEND_URL, DEV_USERS

ROOT = Path(__file__).resolve().parent.parent
OURS = {"qstash": 8080, "autosend": 8025, "dashboard": 5555, "app": 8000}
OFFICIAL_IMAGE = "public.ecr.aws/upstash/qstash:latest"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


def _flag(command: list[str], name: str) -> str:
    for item in command:
        if item.startswith(f"--{name}="):
            return item.split("=", 1)[1]
    raise AssertionError(f"{command} has no --{name}")


def _published(service: dict[str, Any]) -> dict[int, str]:
    """container port -> host binding, from "HOST_IP:HOST_PORT:CONTAINER_PORT" entries."""
    out = {}
    for entry in service.get("ports", []):
        host_ip, host_port, container = str(entry).split(":")
        out[int(container)] = f"{host_ip}:{host_port}"
    return out


def _health_code(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return str(test[3])


def test_our_four_services_and_the_official_profile(services: dict[str, Any]) -> None:
    assert set(OURS) <= set(services)
    for name in OURS:
        assert "profiles" not in services[name], name  # started by a plain `docker compose up`
        assert services[name]["build"] == "."
    official = services["qstash-official"]
    assert official["image"] == OFFICIAL_IMAGE
    assert official["command"] == ["qstash", "dev"]
    assert official["profiles"] == ["official"]
    assert services["app-official"]["profiles"] == ["official"]


def test_ports_are_published_on_loopback_only(services: dict[str, Any]) -> None:
    for name, port in OURS.items():
        published = _published(services[name])
        assert published == {port: f"127.0.0.1:{port}"}, name
    for name in ("qstash-official", "app-official"):
        assert all(b.startswith("127.0.0.1:") for b in _published(services[name]).values())
    hosts = [b for s in services.values() for b in _published(s).values()]
    assert len(hosts) == len(set(hosts)), "two services publish the same host port"


@pytest.mark.parametrize("name", ["qstash", "autosend", "dashboard"])
def test_server_commands_parse_with_our_cli_and_listen_where_published(services: dict[str, Any], name: str) -> None:
    command = services[name]["command"]
    assert command[0] == "celery-qstash"
    sub = cli_main.commands[command[1]]
    with click.Context(cli_main) as parent:
        ctx = sub.make_context(command[1], list(command[2:]), parent=parent)  # unknown options raise
    assert ctx.params["host"] == "0.0.0.0"  # reachable from the other containers
    assert ctx.params["port"] == OURS[name]


def test_the_emulator_routes_autosend_to_the_sandbox_service(services: dict[str, Any]) -> None:
    from celery_qstash.local.emulator import parse_route

    prefix, target = parse_route(_flag(services["qstash"]["command"], "route"))  # as the CLI does
    assert prefix == AUTOSEND_URL
    target_url = urlsplit(target)
    assert target_url.hostname == "autosend" and target_url.port == OURS["autosend"]


def test_state_lives_on_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    for name, volume in (("qstash", "qstash-data"), ("autosend", "autosend-data")):
        assert f"{volume}:/data" in services[name]["volumes"], name
        assert volume in compose["volumes"]
        assert _flag(services[name]["command"], "data-dir").startswith("/data/")


def test_every_service_of_ours_has_a_health_check_on_its_own_port(services: dict[str, Any]) -> None:
    for name, port in OURS.items():
        service = services[name]
        code = _health_code(service)
        compile(code, f"{name} healthcheck", "exec")  # valid Python
        assert f"http://127.0.0.1:{port}/" in code, name
        assert service["healthcheck"]["interval"] and service["healthcheck"]["retries"] >= 3
    # Dependencies wait for health, not just for the container to start.
    for name in ("qstash", "dashboard", "app"):
        for dep, condition in services[name]["depends_on"].items():
            assert dep in services
            assert condition == {"condition": "service_healthy"}, (name, dep)


@pytest.mark.parametrize("name", ["qstash", "autosend"])
def test_the_health_checks_pass_against_the_real_servers(services: dict[str, Any], qstash_dev: Any, name: str) -> None:
    url = qstash_dev.qstash_url if name == "qstash" else qstash_dev.autosend_url
    code = _health_code(services[name]).replace(f"http://127.0.0.1:{OURS[name]}", url.rstrip("/"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_the_dashboard_health_check_uses_the_auth_the_dashboard_requires(services: dict[str, Any]) -> None:
    from celery_qstash.local.dashboard import ROUTES

    dashboard = services["dashboard"]
    auth_option = next(p for p in cli_main.commands["dashboard"].params if p.name == "auth_value")
    assert auth_option.envvar in dashboard["environment"]  # the compose variable is the CLI's
    assert re.fullmatch(r"\$\{DASHBOARD_AUTH:-[^:}]+:[^}]+\}", dashboard["environment"][auth_option.envvar])
    assert auth_option.envvar in _health_code(dashboard)
    assert "/healthcheck" in {route.path for route in ROUTES}


@pytest.mark.parametrize(("name", "qstash_service"), [("app", "qstash"), ("dashboard", "qstash"), ("app-official", "qstash-official")])
def test_environment_is_all_the_settings_need(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str, qstash_service: str) -> None:
    env = services[name]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings(None)  # what the shim, the backend and the dashboard read
    token = settings.require_token()
    assert token in DEV_USERS  # a token the emulator and `qstash dev` accept
    url = urlsplit(settings.qstash_url)
    assert url.hostname == qstash_service and url.port == 8080
    if name.startswith("app"):
        assert settings.require_api_key()
        assert "localhost" in env["DJANGO_ALLOWED_HOSTS"].split(",")
    if name == "app-official":  # the official server delivers itself: straight to the sandbox
        base = urlsplit(settings.autosend_base_url)
        assert (base.hostname, base.port) == ("autosend", OURS["autosend"])


def test_the_app_runs_the_example_django_project_from_the_image(services: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'pip install "?\.\[local\]"?', dockerfile)
    assert "WORKDIR /app" in dockerfile and "COPY examples ./examples" in dockerfile
    assert "COPY celery_qstash ./celery_qstash" in dockerfile
    for name in ("app", "app-official"):
        workdir = services[name]["working_dir"]
        assert workdir.startswith("/app/")
        assert (ROOT / workdir.removeprefix("/app/") / "manage.py").is_file()
        assert services[name]["command"][:3] == ["python", "manage.py", "runserver"]


def test_the_readme_says_how_to_run_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docker compose up --build" in readme
    assert "docker compose --profile official up" in readme


def test_every_server_checks_the_host_by_the_names_it_is_reached_at(
    services: dict[str, Any],
) -> None:
    # Bound to 0.0.0.0 the servers accept any Host unless told the names: without them a
    # DNS-rebinding page reaches the inbox, the emulator (public dev token) and the
    # dashboard (public dev:dev) through the ports published on 127.0.0.1.
    from celery_qstash.local.serving import ALLOWED_HOSTS_ENV

    reached: dict[str, set[str]] = {name: set() for name in ("qstash", "autosend", "dashboard")}
    text = yaml.safe_dump(services)
    for host in re.findall(r"https?://([a-z0-9-]+)(?::\d+)?", text):
        if host in reached:
            reached[host].add(host)
    for name, names in reached.items():
        env = services[name].get("environment") or {}
        allowed = {h.strip().lower() for h in str(env.get(ALLOWED_HOSTS_ENV, "")).split(",")}
        assert allowed - {""}, f"{name} sets no {ALLOWED_HOSTS_ENV}"
        assert names <= allowed, (name, names, allowed)
        assert "evil.example" not in allowed


def test_the_monitoring_profile_scrapes_the_dashboard_and_provisions_grafana(
    services: dict[str, Any],
) -> None:
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    assert _published(prometheus) == {9090: "127.0.0.1:9090"}
    assert _published(grafana) == {3000: "127.0.0.1:3000"}
    for service in (prometheus, grafana):
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    config = yaml.safe_load((ROOT / "examples/monitoring/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["dashboard:5555"]
    dashboard = services["dashboard"]
    # The scrape's basic auth is DASHBOARD_AUTH's default; Host "dashboard" is allowed.
    assert "${DASHBOARD_AUTH:-dev:dev}" in dashboard["environment"]["CELERY_QSTASH_DASHBOARD_AUTH"]
    assert f"{job['basic_auth']['username']}:{job['basic_auth']['password']}" == "dev:dev"
    assert dashboard["environment"]["CELERY_QSTASH_ALLOWED_HOSTS"] == "dashboard"
    assert _flag(dashboard["command"], "metrics-state").startswith("/data/")
    assert any(v.endswith(":/data") for v in dashboard["volumes"])
