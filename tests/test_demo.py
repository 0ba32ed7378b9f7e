"""The README's main command keeps working: the demo runs the whole path on this machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_sends_three_emails_through_the_dev_servers(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--no-keep-running",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "(after 1 retry)" in out
    assert "state right after publishing: PENDING" in out
    assert "The sandbox inbox holds 3 email(s)" in out
    assert out.count("SUCCESS") >= 3  # the status table
    for who in ("jane@example.com", "omar@example.com", "li@example.com"):
        assert who in out
