"""The README's main command keeps working: the demo runs the whole path on this machine."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def _demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("celery_qstash_demo", ROOT / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_says_aloud_when_it_uses_other_ports() -> None:
    demo = _demo_module()
    with socket.socket() as busy, socket.socket() as spare:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
        spare.close()  # free again: the demo may take it

        ports, notes = demo.choose_ports({"emulator": taken, "sandbox": free})

    assert ports["sandbox"] == free
    assert ports["emulator"] != taken
    assert notes == [
        f"port {taken} is in use, so the QStash emulator listens on {ports['emulator']} instead"
    ]


def _time_wait_port() -> int:
    """A loopback port left in TIME_WAIT, as a demo stopped a moment ago leaves its ports:
    the server side closes an accepted connection first. The listener sets SO_REUSEADDR,
    as uvicorn's does."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: its side of the pair waits
        client.recv(1)
        client.close()
    return port


def test_a_rerun_soon_after_ctrl_c_keeps_the_usual_ports() -> None:
    demo = _demo_module()
    port = _time_wait_port()
    # what the demo's probe did before: "in use"
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))

    ports, notes = demo.choose_ports({"emulator": port})

    assert ports == {"emulator": port} and notes == []


def test_the_suggested_command_runs_in_a_fresh_shell() -> None:
    # The venv is not active in a new shell: the line names the venv's own script.
    command = _demo_module().cli_command()
    assert command.endswith("celery-qstash") and command != "celery-qstash"
    found = subprocess.run([command, "--version"], capture_output=True, text=True,
                           check=False, env={"PATH": "/usr/bin:/bin"})
    assert found.returncode == 0, found.stderr
