"""Server commands: ``dev`` (everything), ``emulator``, ``sandbox``.

They need the ``local`` extra; the imports are inside the commands so that
``celery-qstash status`` works in a production install without uvicorn.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from ..devserver import (
    AUTOSEND_URL,
    DASHBOARD_PORT,
    DEV_AUTOSEND_API_KEY,
    DEV_TOKEN,
    DEV_WEBHOOK_SECRET,
    EMULATOR_PORT,
    SANDBOX_PORT,
)
from ..receiver.lifecycle import worker_lifecycle
from .output import http_url

__all__ = [
    "RECEIVER_PATH", "RECEIVER_PORT", "WEBHOOK_PATH", "bind_port", "dev", "emulator",
    "receiver_server", "sandbox",
]

#: Where ``dev --app`` hosts the app's receiver (callbacks and deferred tasks alike).
RECEIVER_PORT = 8090
RECEIVER_PATH = "/qstash/callback"
#: Where ``dev --app`` hosts the app's AutoSend webhook endpoint (the sandbox sends there).
WEBHOOK_PATH = "/autosend/webhooks"

F = TypeVar("F", bound=Callable[..., Any])

_host = click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
_route = click.option(
    "--route",
    "route_specs",
    multiple=True,
    metavar="PREFIX=URL",
    help="deliver URLs starting with PREFIX to URL instead (repeatable; also CELERY_QSTASH_ROUTES)",
)


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from ..local.serving import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _max_body(what: str, default: str) -> Callable[[F], F]:
    return click.option(
        "--max-body",
        default=None,
        callback=_size,
        metavar="SIZE",
        help=f"largest request body {what} accepts, in bytes or with KB/MB/KiB/MiB "
        f"(default {default}); larger ones get 413",
    )


def _data_dir(default: str) -> Callable[[F], F]:
    return click.option(
        "--data-dir",
        default=default,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="where state is kept (SQLite)",
    )


def _routes(specs: tuple[str, ...]) -> dict[str, str]:
    from ..local.emulator import parse_route, routes_from_env

    routes = routes_from_env()
    for spec in specs:
        try:
            prefix, target = parse_route(spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--route") from None
        routes[prefix] = target
    return routes


class _UnsafeData(click.ClickException):
    """A data folder that is not the user's alone: one line, exit 2 (a usage problem)."""

    exit_code = 2


@contextmanager
def _refusing_unsafe_data() -> Iterator[None]:
    """A data folder or database file that is not the user's alone (``local/files.py``)
    becomes one line naming it, what is wrong and the fix, and exit status 2."""
    from ..local.files import UnsafeDataDir

    try:
        yield
    except UnsafeDataDir as exc:
        raise _UnsafeData(str(exc)) from None


def _need_local() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise click.ClickException(
            'the local servers need the "local" extra: pip install "celery-qstash[local]"'
        ) from None


def _state_dir(path: Path) -> None:
    """Create the state directory (0700, the user's alone: ``local/files.py``; else one
    line and exit 2) with a ``.gitignore`` of ``*`` in it (as pytest does for
    ``.pytest_cache``), so a ``.qstash-dev/`` in a project's checkout never shows up in
    ``git status``; an existing ``.gitignore`` is left alone."""
    from ..local.files import private_dir

    with _refusing_unsafe_data():
        private_dir(path)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Created by celery-qstash: local emulator and sandbox state.\n*\n")


def _port_problem(host: str, port: int, flag: str, what: str) -> str | None:
    """Why ``port`` cannot be bound, in one line naming the flag that changes it; ``None``
    when it can. Bound as uvicorn binds (``SO_REUSEADDR``), so a port in TIME_WAIT (a
    server stopped a moment ago) is not called busy."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            why = "is in use" if in_use else f"cannot be bound ({exc.strerror})"
            return f"port {port} ({what}) on {host} {why}: pick another with {flag} PORT"
    return None


def _check_ports(host: str, *wanted: tuple[int, str, str]) -> None:
    """Every busy port at once (one line each), instead of uvicorn's traceback, and
    instead of one per run."""
    problems = [found for port, flag, what in wanted
                if (found := _port_problem(host, port, flag, what))]
    if problems:
        raise click.ClickException("\n".join(problems))


def bind_port(host: str, port: int, flag: str, what: str) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet), for a server that is handed its
    socket (``serve``: the port is known before it starts); otherwise the one line of
    :func:`_port_problem`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        problem = _port_problem(host, port, flag, what)
        raise click.ClickException(
            problem or f"port {port} ({what}) on {host} cannot be bound ({exc.strerror})"
        ) from None
    return sock


def _logging() -> None:
    # A time on each line: a delivery log is read against what the app did when.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # One line per delivery comes from the emulator itself; httpx would repeat each.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM (both stop cleanly)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


_verified = click.option(
    "--verified-domain", "verified_domains", multiple=True,
    help="sandbox: accept only this sender domain in `from` (repeatable; default: any)",
)
_retry_after = click.option(
    "--retry-after/--no-retry-after", default=False, show_default=True,
    help="sandbox: send a Retry-After header on 429 (AutoSend documents only the body's "
    "retryAfter, so production retries on QStash's own backoff)",
)
_per_minute = click.option(
    "--rate-per-minute", type=click.IntRange(min=0), default=50, show_default=True,
    help="sandbox: the per-minute limit per key, besides 2 per second (AutoSend's "
    "documented limits; 0: off)",
)


def _http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http(s) URL")
    return value


_webhook_url = click.option(
    "--webhook-url", metavar="URL", default=None, callback=_http_url,
    help="sandbox: send AutoSend's signed webhooks (email.sent, email.delivered, bounces) "
    "here",
)
_webhook_secret = click.option(
    "--webhook-secret", metavar="SECRET", envvar="AUTOSEND_WEBHOOK_SECRET", default=None,
    help="sandbox: sign webhooks with this (default: the public dev secret)",
)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from ..local.emulator.errors import BadRequest
    from ..local.emulator.validate import parse_duration_ms

    try:
        ms = parse_duration_ms(value, "--max-delay", strict=True)
    except BadRequest as exc:
        raise click.BadParameter(exc.message) from None
    if ms <= 0:
        raise click.BadParameter("must be longer than 0s")
    return ms


_max_delay = click.option(
    "--max-delay", default=None, callback=_duration, metavar="DURATION",
    help="emulator: the longest Upstash-Delay, and the furthest Upstash-Not-Before from "
    "now (default 365d, QStash's pay-as-you-go maximum); longer ones get 400",
)
_link_local = click.option(
    "--allow-link-local", is_flag=True,
    help="emulator: deliver to link-local and cloud metadata addresses (169.254.0.0/16, "
    "fe80::/10, ...); refused with 400 by default",
)


_plan = click.option(
    "--plan", type=click.Choice(["free", "payg", "pro"]), default=None,
    help="emulator: enforce this QStash plan's quotas (daily messages, per-second burst, "
    "queue/schedule/group caps); default: none",
)


@click.command()
@_host
@click.option("--port", default=EMULATOR_PORT, show_default=True, help="QStash emulator port")
@click.option(
    "--sandbox-port", default=SANDBOX_PORT, show_default=True, help="AutoSend sandbox port"
)
@click.option("--dashboard-port", default=DASHBOARD_PORT, show_default=True, help="dashboard port")
@click.option("--no-dashboard", is_flag=True, help="do not start the dashboard")
@_data_dir(".qstash-dev")
@_route
@_verified
@_retry_after
@_per_minute
@_plan
@click.option(
    "--app", "-A", "app_path", metavar="MODULE:APP", default=None,
    help="also host this Celery app's receiver: deferred tasks' bodies and the email "
    "callbacks (on_success, email_delivered...) run here; export the QSTASH_RECEIVER_URL "
    "and QSTASH_CALLBACK_URL it prints in the app",
)
@click.option("--receiver-port", default=RECEIVER_PORT, show_default=True,
              help="port of the app's receiver (with --app)")
@_max_body("the emulator", "1MiB, QStash's message size limit")
@_max_delay
@_link_local
@_webhook_url
@_webhook_secret
def dev(
    host: str,
    port: int,
    sandbox_port: int,
    dashboard_port: int,
    no_dashboard: bool,
    data_dir: Path,
    route_specs: tuple[str, ...],
    verified_domains: tuple[str, ...],
    retry_after: bool,
    rate_per_minute: int,
    plan: str | None,
    app_path: str | None,
    receiver_port: int,
    max_body: int | None,
    max_delay: int | None,
    allow_link_local: bool,
    webhook_url: str | None,
    webhook_secret: str | None,
) -> None:
    """Start the QStash emulator, the AutoSend sandbox and the dashboard.

    AutoSend-bound messages are routed to the sandbox, so what the shim publishes
    here is byte for byte what it publishes in production.
    """
    _need_local()
    celery_app = None
    if app_path:
        from .beat import _load_app

        celery_app = _load_app(app_path, param_hint="--app")
    from ..local.emulator import DEFAULT_MAX_BODY, EmulatorServer
    from ..local.emulator.publish import MAX_DELAY_MS
    from ..local.files import UnsafeDataDir
    from ..local.sandbox import SandboxServer
    from ..local.serving import ThreadedServer

    if not no_dashboard:
        from ..errors import ConfigurationError
        from ..local.dashboard import check_bind

        try:
            # The dev dashboard has no auth: it stays on loopback (`dashboard --auth` otherwise).
            check_bind(host, None, False)
        except ConfigurationError as exc:
            raise click.UsageError(f"{exc} (or pass --no-dashboard)") from None
    extra_routes = _routes(route_specs)  # a usage error comes before a busy port
    _check_ports(host, (port, "--port", "QStash emulator"),
                 (sandbox_port, "--sandbox-port", "AutoSend sandbox"),
                 *([] if no_dashboard else [(dashboard_port, "--dashboard-port", "dashboard")]))
    _logging()
    _state_dir(data_dir)
    servers: list[Any] = []
    lifecycle = ExitStack()
    try:
        box = SandboxServer(host=host, port=sandbox_port, data_dir=data_dir / "sandbox",
                            verified_domains=verified_domains or None,
                            retry_after_header=retry_after,
                            rate_per_minute=rate_per_minute or None).start()
        servers.append(box)
        routes = {AUTOSEND_URL: box.url, **extra_routes}
        qstash = EmulatorServer(data_dir / "emulator", host=host, port=port, routes=routes,
                                max_body=max_body or DEFAULT_MAX_BODY, plan=plan,
                                max_delay_ms=max_delay or MAX_DELAY_MS,
                                allow_link_local=allow_link_local).start()
        servers.append(qstash)
        store = None
        if celery_app is not None:
            from ..webhooks import event_store_for

            # The dashboard shows the events this process's webhook endpoint keeps.
            store = event_store_for(celery_app)
        board_url = None
        if not no_dashboard:
            board = ThreadedServer(_dashboard_app(qstash.url, host, box.url, celery_app,
                                                  data_dir / "dashboard-metrics.json", store),
                                   host, dashboard_port).start()
            servers.append(board)
            board_url = board.url
            box.sandbox.api.dashboard_url = board_url  # the inbox links emails to their tasks
        keys = (qstash.current_signing_key, qstash.next_signing_key)
        callback_url = None
        secret = webhook_secret or DEV_WEBHOOK_SECRET
        if celery_app is not None:
            # Deferred bodies run in this process: tell the app so, as a worker would.
            lifecycle.enter_context(worker_lifecycle(celery_app))
            hosted = receiver_server(celery_app, host, receiver_port, keys,
                                     webhook_secret=secret).start()
            servers.append(hosted)
            callback_url = hosted.url + RECEIVER_PATH
            webhook_url = webhook_url or hosted.url + WEBHOOK_PATH
        if webhook_url:
            box.sandbox.webhooks.configure(webhook_url, secret)
        click.echo(f"QStash emulator   {qstash.url}   (state in {data_dir / 'emulator'}; "
                   "git ignores it)")
        for prefix, target in routes.items():
            click.echo(f"  route {prefix} -> {target}")
        click.echo(f"AutoSend sandbox  {box.url}   (inbox: {box.url}/)")
        if board_url:
            click.echo(f"Dashboard         {board_url}/")
        if callback_url:
            click.echo(f"App receiver      {callback_url}   (app {app_path}: callbacks and "
                       "deferred tasks run here)")
        if webhook_url:
            click.echo(f"Sandbox webhooks  -> {webhook_url}")
        click.echo(
            "\nPoint an app here with QSTASH_DEV=true, or export these (public dev values):\n"
            f"export QSTASH_URL={qstash.url}\n"
            f"export QSTASH_TOKEN={DEV_TOKEN}\n"
            f"export QSTASH_CURRENT_SIGNING_KEY={keys[0]}\n"
            f"export QSTASH_NEXT_SIGNING_KEY={keys[1]}\n"
            f"export AUTOSEND_API_KEY={DEV_AUTOSEND_API_KEY}\n"
            + ("\nand for the app's receiver (with QSTASH_DEV=true too):\n"
               f"export QSTASH_RECEIVER_URL={callback_url}\n"
               f"export QSTASH_CALLBACK_URL={callback_url}\n" if callback_url else "")
            + (f"export AUTOSEND_WEBHOOK_SECRET={secret}\n" if webhook_url else "")
            + "\nCtrl-C stops; nothing acknowledged is lost.",
        )
        _wait_for_stop()
    except UnsafeDataDir as exc:
        for server in reversed(servers):
            server.stop()
        servers.clear()  # nothing to say but the refusal
        raise _UnsafeData(str(exc)) from None
    finally:
        for server in reversed(servers):
            server.stop()
        lifecycle.close()  # worker_shutdown, once no delivery can arrive
        if servers:
            click.echo("stopped")


def receiver_server(celery_app: Any, host: str, port: int, keys: tuple[str, str], *,
                    webhook_secret: str = DEV_WEBHOOK_SECRET) -> Any:
    """``celery_app``'s receiver at ``RECEIVER_PATH`` and its AutoSend webhook endpoint at
    ``WEBHOOK_PATH``, guarded like every dev server.

    It verifies against the URL it is served at and the emulator's signing keys (and the
    sandbox's webhook secret), so the app's own settings need nothing but
    ``QSTASH_RECEIVER_URL`` (deferred tasks) and ``QSTASH_CALLBACK_URL`` (email outcomes).
    """
    from starlette.applications import Starlette

    from ..local.serving import SameSiteGuard, ThreadedServer, free_port, local_hosts
    from ..receiver import fastapi_route
    from ..webhooks import fastapi_route as webhook_route

    port = port or free_port(host)
    url = f"http://{host}:{port}{RECEIVER_PATH}"
    web = Starlette()
    fastapi_route(web, RECEIVER_PATH, celery_app, url=url,
                  current_signing_key=keys[0], next_signing_key=keys[1])
    webhook_route(web, WEBHOOK_PATH, celery_app, secret=webhook_secret)
    return ThreadedServer(SameSiteGuard(web, allowed_hosts=local_hosts(host)), host, port)


def _dashboard_app(qstash_url: str, host: str, inbox_url: str | None = None,
                   celery_app: Any = None, metrics_state: Path | None = None,
                   event_store: Any = None) -> Any:
    from qstash import QStash

    from ..local.dashboard import create_app, local_hosts
    from ..status import StatusClient

    return create_app(
        StatusClient(QStash(DEV_TOKEN, retry=False, base_url=qstash_url)),
        allowed_hosts=local_hosts(host),
        inbox_url=inbox_url,
        celery_app=celery_app,
        metrics_state=metrics_state,
        event_store=event_store,
    )


@click.command()
@_host
@click.option("--port", default=EMULATOR_PORT, show_default=True)
@_data_dir(".qstash-dev/emulator")
@_route
@click.option("--token", "tokens", multiple=True, help="accept this QStash token too (repeatable)")
@_max_body("the emulator", "1MiB, QStash's message size limit")
@_plan
@_max_delay
@_link_local
def emulator(
    host: str,
    port: int,
    data_dir: Path,
    route_specs: tuple[str, ...],
    tokens: tuple[str, ...],
    max_body: int | None,
    plan: str | None,
    max_delay: int | None,
    allow_link_local: bool,
) -> None:
    """Start the QStash emulator alone (the official SDK works against it)."""
    _need_local()
    from ..local.emulator import DEFAULT_MAX_BODY, serve
    from ..local.emulator.publish import MAX_DELAY_MS

    routes = _routes(route_specs)  # a usage error comes before a busy port
    _check_ports(host, (port, "--port", "QStash emulator"))
    _logging()
    _state_dir(data_dir)
    with _refusing_unsafe_data():
        serve(host=host, port=port, data_dir=data_dir, routes=routes,
              extra_tokens=tokens, max_body=max_body or DEFAULT_MAX_BODY, plan=plan,
              max_delay_ms=max_delay or MAX_DELAY_MS, allow_link_local=allow_link_local)


@click.command()
@_host
@click.option("--port", default=SANDBOX_PORT, show_default=True)
@_data_dir(".qstash-dev/sandbox")
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="accept only these AutoSend keys (repeatable; default: any key)",
)
@_max_body("the sandbox", "10MB")
@_verified
@_retry_after
@_per_minute
@click.option("--dashboard-url", envvar="CELERY_QSTASH_DASHBOARD_URL", metavar="URL",
              callback=http_url,
              help="the dashboard as a browser reaches it, to link each email to its task")
@_webhook_url
@_webhook_secret
def sandbox(host: str, port: int, data_dir: Path, api_keys: tuple[str, ...],
            max_body: int | None, verified_domains: tuple[str, ...], retry_after: bool,
            rate_per_minute: int, dashboard_url: str | None, webhook_url: str | None,
            webhook_secret: str | None) -> None:
    """Start the AutoSend sandbox alone (captures emails; inbox at /)."""
    _need_local()
    from ..local.sandbox import DEFAULT_MAX_BODY, serve

    _check_ports(host, (port, "--port", "AutoSend sandbox"))
    _logging()
    _state_dir(data_dir)
    with _refusing_unsafe_data():
        serve(host=host, port=port, data_dir=data_dir, api_keys=list(api_keys) or None,
              max_body=max_body or DEFAULT_MAX_BODY,
              verified_domains=verified_domains or None, retry_after_header=retry_after,
              rate_per_minute=rate_per_minute or None, dashboard_url=dashboard_url,
              webhook_url=webhook_url,
              webhook_secret=(webhook_secret or DEV_WEBHOOK_SECRET) if webhook_url else None)
