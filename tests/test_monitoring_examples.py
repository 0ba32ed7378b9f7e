"""examples/monitoring: Flower's Grafana dashboard unchanged (with its licence), ours, the
alert rules and the Prometheus config, checked by Prometheus' own ``promtool``. (That a
real Prometheus answers every panel: tests/integration/test_prometheus.py.)"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "examples" / "monitoring"
FLOWER = MONITORING / "flower"
#: Flower's examples/celery-monitoring-grafana-dashboard.json at mher/flower 2b5759c.
FLOWER_SHA256 = "cbcbdd6e01607ba7580fbd3faa7fac2f020eef6ef49cf2f8db498a1e750b074e"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        # scripts/test installs Debian's prometheus; missing, it is a broken setup.
        pytest.fail("no promtool: run scripts/test, or apt-get install prometheus")
    return found


def test_flowers_dashboard_is_flowers_file_with_its_licence() -> None:
    data = (FLOWER / "celery-monitoring-grafana-dashboard.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == FLOWER_SHA256
    licence = (FLOWER / "LICENSE").read_text()
    assert "Mher Movsisyan" in licence and "Redistributions of source code" in licence
    assert FLOWER_SHA256 in (FLOWER / "README.md").read_text()


def test_promtool_accepts_the_alert_rules_and_the_config() -> None:
    promtool = _promtool()
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        done = subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_alerts_cover_failures_dead_letters_and_lateness() -> None:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    exprs = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}
    assert "flower_events_total" in exprs["TaskFailureRatioTooHigh"]
    assert "celery_qstash_dead_letters_total" in exprs["DeadLettersGrowing"]
    assert "celery_qstash_lateness_seconds_bucket" in exprs["DeliveriesLate"]
    assert 'code="429"' in exprs["AutoSendRateLimited"]


def test_grafana_is_provisioned_with_both_dashboards_and_the_prometheus_source() -> None:
    provisioning = MONITORING / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())[
        "providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    ours = json.loads((MONITORING / "celery-qstash-grafana-dashboard.json").read_text())
    assert ours["uid"] == "celery-qstash"
    # Both pick the default Prometheus through a datasource variable, as Flower's does.
    for dashboard in (ours, json.loads(
            (FLOWER / "celery-monitoring-grafana-dashboard.json").read_text())):
        names = [v["name"] for v in dashboard["templating"]["list"]]
        assert "datasource" in names
