"""Reading Prometheus' text format in tests (prometheus_client's own parser), and Debian's
``promtool``, which scripts/test installs."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by (name, labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The one sample called ``name`` with exactly these labels."""
    return samples(text)[(name, frozenset(labels.items()))]


def promtool_check_metrics(text: str) -> None:
    """``promtool check metrics`` passes on ``text`` (its lint included)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        # scripts/test installs Debian's prometheus; missing, it is a broken setup.
        pytest.fail("no promtool: run scripts/test, or apt-get install prometheus")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
