"""A real Prometheus (Debian's ``prometheus``, installed by scripts/test) scrapes the
dashboard over loopback while tasks run through the emulator and the sandbox (successes,
a failure that ends in the dead letter queue, retries, a 429, a scheduled task, one started
through Flower's launching API). Then every expression of Flower's Grafana dashboard,
unchanged, and of ours is asked through Prometheus' HTTP API, and the series and labels
each needs are there with the right values. The alert rules are loaded by that server too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from waiting import wait_until

from celery_qstash import Email, QStashTask
from celery_qstash.config import load_settings
from celery_qstash.local.dashboard import create_app
from celery_qstash.local.serving import ThreadedServer, free_port
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.status import StatusClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "examples" / "monitoring"
FLOWER_DASHBOARD = MONITORING / "flower" / "celery-monitoring-grafana-dashboard.json"
OUR_DASHBOARD = MONITORING / "celery-qstash-grafana-dashboard.json"
SANDBOX_AUTH = {"Authorization": "Bearer AS_test"}
TASK = "prom.send"
AUTOSEND = "api.autosend.com"
#: Grafana's variables, as a dashboard showing everything would fill them.
GRAFANA_VARIABLES = {"$worker": ".*", "$task": ".*", "$__range": "30m",
                     "$__rate_interval": "10m"}


def expressions(dashboard: Path) -> list[tuple[str, str]]:
    """("type:title", expression) of every panel target of a Grafana dashboard file (a
    stat and a time series may share a title)."""
    found = []
    for panel in json.loads(dashboard.read_text())["panels"]:
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"{panel['type']}:{panel['title']}", target["expr"]))
    return found


def variables(dashboard: Path) -> list[str]:
    """The ``label_values(...)`` queries of a dashboard's template variables."""
    out = []
    for item in json.loads(dashboard.read_text())["templating"]["list"]:
        if item.get("type") == "query":
            query = item["query"]
            out.append(query["query"] if isinstance(query, dict) else query)
    return out


def grafana(expr: str) -> str:
    for name, replacement in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, replacement)
    return expr


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def one(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        # scripts/test installs Debian's prometheus; missing, it is a broken setup.
        pytest.fail("no prometheus: run scripts/test, or apt-get install prometheus")
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Prometheus, str]]:
    from celery_qstash.local.emulator import EmulatorServer
    from celery_qstash.local.sandbox import SandboxServer

    binary = _prometheus_binary()
    folder = tmp_path_factory.mktemp("prometheus")
    with SandboxServer(rate_per_second=None, rate_per_minute=None) as sandbox, \
            EmulatorServer(routes={"https://api.autosend.com": sandbox.url}) as emulator:
        app = Celery("prom", set_as_current=False)
        app.conf.update(qstash_url=emulator.url, qstash_token=emulator.token,
                        autosend_api_key="AS_test", autosend_rate_limit="off")

        @app.task(base=QStashTask, name=TASK, max_retries=1, default_retry_delay=0)
        def send(to: str) -> Email:
            return Email(to=to, from_="hello@acme.example", subject="Hi", text="Hello")

        status = StatusClient(client_for(load_settings(app.conf)))
        board = create_app(status, celery_app=app, auth=("prom", "etheus"),
                           secrets=load_settings(app.conf).secrets)
        with ThreadedServer(board) as server:
            target = server.url.removeprefix("http://")
            (folder / "alerts.yml").write_text((MONITORING / "alerts.yml").read_text())
            (folder / "prometheus.yml").write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "rule_files: [alerts.yml]\n"
                "scrape_configs:\n  - job_name: dashboard\n"
                f"    static_configs: [{{targets: ['{target}']}}]\n"
                "    basic_auth: {username: prom, password: etheus}\n")
            port = free_port()
            process = subprocess.Popen(
                [binary, f"--config.file={folder / 'prometheus.yml'}",
                 f"--storage.tsdb.path={folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                prom = Prometheus(f"http://127.0.0.1:{port}")
                wait_until(lambda: _ready(prom.url), "Prometheus to be ready", timeout=60)
                yield sandbox, send, prom, server.url
            finally:
                process.terminate()
                process.wait(timeout=30)
        app.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _seen(prom: Prometheus, kind: str, count: int) -> bool:
    found = prom.query(f'flower_events_total{{task="{TASK}", type="{kind}"}}')
    return bool(found) and float(found[0]["value"][1]) >= count


@pytest.fixture(scope="module")
def scraped(world: tuple[Any, Any, Prometheus, str]) -> Prometheus:
    """Two waves of tasks, each seen by Prometheus: the first makes every series, the
    second moves them (increase() needs a sample before and after)."""
    sandbox, send, prom, board = world
    wait_until(lambda: prom.query('up{job="dashboard"} == 1'), "a first scrape", timeout=30)
    for n in range(2):
        send.delay(f"warm{n}@example.com").get(timeout=20)
    wait_until(lambda: _seen(prom, "task-succeeded", 2), "the first wave in Prometheus")

    for n in range(3):
        send.delay(f"ok{n}@example.com").get(timeout=20)
    chaos = f"{sandbox.url}/api/v1/chaos"
    httpx.post(chaos, headers=SANDBOX_AUTH, json={"fail_next": 2, "status": 500})
    with pytest.raises(Exception, match="500"):
        send.delay("dead@example.com").get(timeout=20)  # both attempts fail: a dead letter
    httpx.post(chaos, headers=SANDBOX_AUTH, json={"fail_next": 1, "status": 429})
    send.delay("limited@example.com").get(timeout=20)  # a 429, retried, then delivered
    send.apply_async(("later@example.com",), countdown=3600)  # scheduled, not due
    launched = httpx.post(f"{board}/api/task/apply/{TASK}?timeout=20", auth=("prom", "etheus"),
                          json={"args": ["api@example.com"]})
    assert launched.json()["state"] == "SUCCESS", launched.text
    wait_until(lambda: _seen(prom, "task-succeeded", 7) and _seen(prom, "task-failed", 1),
               "the second wave in Prometheus", timeout=30)
    return prom


Answers = dict[str, list[dict[str, Any]]]


def _single(answers: Answers, title: str) -> float:
    [only] = answers[title]
    return float(only["value"][1])


def _labelled(answers: Answers, title: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in answers[title]}


def test_the_raw_series_hold_the_counts(scraped: Prometheus) -> None:
    counts = scraped.by(f'flower_events_total{{task="{TASK}", worker="{AUTOSEND}"}}', "type")
    # 2 + 3 + the 429 one + the launched one succeeded; the dead one failed; its retry and
    # the 429's; 9 published (the scheduled one too), 10 attempts; nothing revoked.
    assert counts == {"task-received": 9, "task-started": 10, "task-succeeded": 7,
                      "task-failed": 1, "task-retried": 2, "task-revoked": 0}
    assert scraped.one(f'celery_qstash_dead_letters_total{{task="{TASK}"}}') == 1
    codes = scraped.by(f'celery_qstash_responses_total{{worker="{AUTOSEND}"}}', "code")
    assert codes == {"200": 7, "500": 2, "429": 1}
    assert scraped.one(f'celery_qstash_scheduled_messages{{task="{TASK}"}}') == 1
    assert scraped.one(f'flower_task_runtime_seconds_count{{task="{TASK}"}}') == 7
    assert scraped.one(f'celery_qstash_lateness_seconds_count{{task="{TASK}"}}') == 10


def test_every_expression_of_flowers_dashboard_has_data(scraped: Prometheus) -> None:
    panels = expressions(FLOWER_DASHBOARD)
    assert len(panels) == 12  # the file as Flower ships it
    answers = {title: scraped.query(grafana(expr)) for title, expr in panels}
    for title, result in answers.items():
        assert result, f"Flower's panel {title!r} has no data"

    def single(title: str) -> float:
        return _single(answers, title)

    def by_worker(title: str) -> dict[str, float]:
        return _labelled(answers, title, "worker")

    assert single("stat:Online Workers") == 1
    assert single("stat:Offline Workers") == 0
    # Increases over the range: the second wave (5 succeeded, 1 failed) at least, as
    # Prometheus extrapolates a little past the samples.
    assert 6 <= single("stat:Processed Tasks") <= 9
    assert 1 <= single("stat:Failed Tasks") <= 1.5
    assert 6 <= by_worker("timeseries:Processed Tasks")[AUTOSEND] <= 9
    assert 1 <= by_worker("timeseries:Failed Tasks")[AUTOSEND] <= 1.5
    assert 2 <= by_worker("timeseries:Retried Tasks")[AUTOSEND] <= 3
    assert by_worker("timeseries:Active Tasks") == {AUTOSEND: 0}
    assert by_worker("timeseries:Prefetched Tasks") == {AUTOSEND: 0}
    for title in ("Prefetch Time", "Task Runtime", "P95 Task Runtime"):
        assert [r["metric"]["task"] for r in answers[f"timeseries:{title}"]] == [TASK], title
    runtime = float(answers["timeseries:Task Runtime"][0]["value"][1])
    assert 0 < runtime < 10


def test_flowers_variables_list_our_workers_and_tasks(scraped: Prometheus) -> None:
    assert variables(FLOWER_DASHBOARD) == ["label_values(flower_worker_online, worker)",
                                           "label_values(flower_events_total, task)"]
    assert _label_values(scraped, "flower_worker_online", "worker") == [AUTOSEND]
    assert _label_values(scraped, "flower_events_total", "task") == [TASK]


def _label_values(prom: Prometheus, metric: str, label: str) -> list[str]:
    answer = httpx.get(f"{prom.url}/api/v1/label/{label}/values",
                       params={"match[]": metric}, timeout=10).json()
    return list(answer["data"])


def test_every_expression_of_our_dashboard_has_the_right_data(scraped: Prometheus) -> None:
    panels = expressions(OUR_DASHBOARD)
    answers = {title: scraped.query(grafana(expr)) for title, expr in panels}
    for title, result in answers.items():
        assert result, f"our panel {title!r} has no data"

    def single(title: str) -> float:
        return _single(answers, title)

    def labelled(title: str, label: str) -> dict[str, float]:
        return _labelled(answers, title, label)

    assert 1 <= single("stat:Dead Letters") <= 1.5
    assert 1 <= single("stat:AutoSend 429s") <= 1.5
    assert single("stat:Scheduled") == 1
    assert single("stat:QStash Logs Readable") == 1
    assert set(labelled("timeseries:Dead Letters by Task", "task")) == {TASK}
    assert set(labelled("timeseries:Retries by Task", "task")) == {TASK}
    outcomes = labelled("timeseries:Delivery Attempts by Outcome", "outcome")
    assert set(outcomes) == {"delivered", "refused", "unanswered"}
    assert outcomes["unanswered"] == 0 < outcomes["refused"] < outcomes["delivered"]
    assert set(labelled("timeseries:AutoSend Answers by Status", "code")) == {"200", "429", "500"}
    assert set(labelled("timeseries:P95 Lateness", "task")) == {TASK}
    assert 0 < single("timeseries:AutoSend 429 Ratio") < 1
    assert variables(OUR_DASHBOARD) == ["label_values(flower_events_total, task)"]


def test_the_alert_rules_load_and_evaluate(scraped: Prometheus) -> None:
    rules = httpx.get(f"{scraped.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"]: rule for group in rules for rule in group["rules"]}
    assert set(loaded) == {"CeleryWorkerOffline", "TaskFailureRatioTooHigh",
                           "TaskPrefetchTimeTooHigh", "DeadLettersGrowing", "DeliveriesLate",
                           "AutoSendRateLimited", "QStashLogsUnreadable"}
    wait_until(lambda: _firing(scraped, "DeadLettersGrowing"),
               "the dead-letter alert to fire (it has no `for`)", timeout=30)
    assert all(rule["health"] == "ok" for rule in loaded.values()), loaded


def _firing(prom: Prometheus, name: str) -> bool:
    rules = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    return any(rule["name"] == name and rule["state"] == "firing"
               for group in rules for rule in group["rules"])


def test_grafana_variables_are_all_substituted() -> None:
    for dashboard in (FLOWER_DASHBOARD, OUR_DASHBOARD):
        for _, expr in expressions(dashboard):
            assert not re.search(r"\$\w+", grafana(expr)), expr
