"""The demo behind ``scripts/demo``: the whole path on this machine, nothing on the internet.

1. starts ``celery-qstash dev`` (QStash emulator, AutoSend sandbox, dashboard);
2. sends the example emails of ``examples/after_qstash.py`` through the shim:
   one now, one that the sandbox fails first (so QStash retries it), one with a countdown;
3. waits for each through ``AsyncResult.get()`` (QStash's logs API) and lists what
   arrived in the sandbox inbox, then says where to look.

``--keep-running`` (the default on a terminal) leaves the servers up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from celery_qstash.devserver import DEV_AUTOSEND_API_KEY

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _port(preferred: int) -> int:
    """The preferred port if it is free, else any free one.

    Probed as the servers bind (``SO_REUSEADDR``): a port left in TIME_WAIT by a demo
    stopped a moment ago is free for them, so a re-run keeps the usual ports."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def cli_command() -> str:
    """How to run ``celery-qstash`` from a fresh shell: the virtualenv's own script (the
    venv is not active there), relative to the current directory when it is inside it."""
    script = Path(sys.executable).parent / "celery-qstash"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


DEFAULT_PORTS = {"emulator": 8080, "sandbox": 8025, "dashboard": 5555}
_WHAT = {"emulator": "QStash emulator", "sandbox": "AutoSend sandbox", "dashboard": "dashboard"}


def choose_ports(
    preferred: dict[str, int] | None = None,
) -> tuple[dict[str, int], list[str]]:
    """The ports to use, and one line for each that is not the usual one (said aloud,
    so that nobody opens :8080 and finds another program there)."""
    ports, notes = {}, []
    for name, usual in (preferred or DEFAULT_PORTS).items():
        ports[name] = _port(usual)
        if ports[name] != usual:
            notes.append(
                f"port {usual} is in use, so the {_WHAT[name]} listens on {ports[name]} instead"
            )
    return ports, notes


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"celery-qstash dev exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep-running",
        action=argparse.BooleanOptionalAction,
        default=sys.stdin.isatty(),
        help="leave the servers up until Ctrl-C",
    )
    parser.add_argument("--data-dir", default=None, help="where the dev servers keep their data")
    args = parser.parse_args()

    ports, notes = choose_ports()
    for note in notes:
        print(f"Note: {note}")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="celery-qstash-demo-")
    command = [
        sys.executable,
        "-m",
        "celery_qstash",
        "dev",
        "--port",
        str(ports["emulator"]),
        "--sandbox-port",
        str(ports["sandbox"]),
        "--dashboard-port",
        str(ports["dashboard"]),
        "--data-dir",
        data_dir,
    ]
    log_path = Path(data_dir) / "dev.log"
    print("$ celery-qstash dev", " ".join(command[4:]))
    print(f"  (its output goes to {log_path})", flush=True)
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    emulator = f"http://127.0.0.1:{ports['emulator']}"
    sandbox = f"http://127.0.0.1:{ports['sandbox']}"
    dashboard = f"http://127.0.0.1:{ports['dashboard']}"
    try:
        _wait_until_up(f"{sandbox}/api/v1/messages", proc)
        _wait_until_up(f"{dashboard}/api/task/types", proc)
        # QSTASH_DEV=true is all an app needs; the URL is only set because a port may differ.
        os.environ.update({"QSTASH_DEV": "true", "QSTASH_URL": emulator})
        from examples.after_qstash import send_password_reset, send_welcome

        print("\n1. send_welcome.delay(...) -> published now")
        first = send_welcome.delay(1, "jane@example.com", "Jane")
        print(f"   task {first.id}  QStash message {first.message_id}")
        print(f"   result.get() -> {first.get(timeout=30)}")

        print("\n2. the sandbox will fail the next request with 500, so QStash retries it")
        # Destructive sandbox endpoints take the API key the app sends with.
        httpx.post(
            f"{sandbox}/api/v1/chaos", json={"fail_next": 1, "status": 500},
            headers={"Authorization": f"Bearer {DEV_AUTOSEND_API_KEY}"},
        ).raise_for_status()
        second = send_password_reset.delay("omar@example.com", "https://acme.example/reset/abc")
        print(f"   task {second.id}")
        print(f"   result.get() -> {second.get(timeout=60)}  (after {second.retries} retry)")

        print("\n3. send_welcome.apply_async(..., countdown=3) -> delivered 3 s later")
        third = send_welcome.apply_async((2, "li@example.com", "Li"), countdown=3)
        print(f"   state right after publishing: {third.state}")
        print(f"   result.get() -> {third.get(timeout=60)}")

        print("\n$ celery-qstash status")
        status = subprocess.run(
            [sys.executable, "-m", "celery_qstash", "status"],
            capture_output=True,
            text=True,
            check=False,
        )
        print(status.stdout.rstrip() or status.stderr.rstrip())

        inbox = httpx.get(f"{sandbox}/api/v1/messages").json()
        print(f"\nThe sandbox inbox holds {inbox['total']} email(s):")
        for message in inbox["messages"]:
            print(
                f"   {message['createdAt']}  to {message['to']['email']:<20} {message['subject']}"
            )
        url = "" if ports["emulator"] == DEFAULT_PORTS["emulator"] else f" QSTASH_URL={emulator}"
        print(f"""
Where to look:
   inbox       {sandbox}/            (each email rendered)
   dashboard   {dashboard}/            (tasks, timelines, DLQ)
   status      QSTASH_DEV=true{url} {cli_command()} status
""")
        if args.keep_running:
            print("Servers keep running; Ctrl-C stops them.")
            proc.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
