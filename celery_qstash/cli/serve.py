"""``celery-qstash serve -A module:app``: the app's signed receiver, on its own.

For an app without a web server of its own, started the way ``celery worker`` is: QStash
delivers each deferred task (and each email callback) here, and the body runs in this
process, through Celery's tracer (:mod:`celery_qstash.receiver`). It needs an ASGI
server, the ``serve`` extra (uvicorn), imported inside the command only; it imports
nothing from ``local/``, so a production install runs it without the ``[local]`` extra.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import click

from ..config import Settings, load_settings
from ..devserver import DEV_CURRENT_SIGNING_KEY
from ..errors import ConfigurationError
from ..guard import Receive, SameSiteGuard, Scope, Send, local_hosts, send_text
from ..receiver import CallbackReceiver
from ..receiver.adapters import ReceiverASGI
from ..receiver.lifecycle import worker_lifecycle
from .beat import _celery_cli_app, _load_app
from .servers import bind_port

__all__ = ["DEFAULT_PATH", "DEFAULT_PORT", "INSTALL_HINT", "receiver_app", "serve"]

DEFAULT_PORT = 8000
DEFAULT_PATH = "/qstash/receive"
INSTALL_HINT = "pip install 'celery-qstash[serve]'"


class OnePath:
    """ASGI: the receiver answers at ``path`` only; any other path is a 404."""

    def __init__(self, app: Callable[..., Awaitable[None]], path: str) -> None:
        self.app = app
        self.path = path.rstrip("/") or "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"].rstrip("/") or "/") != self.path:
            await send_text(send, 404, "Not found: QStash delivers to " + self.path)
            return
        await self.app(scope, receive, send)


def allowed_hosts(bind_host: str, settings: Settings) -> tuple[str, ...] | None:
    """The ``Host`` names to answer: the local servers' rule (:func:`local_hosts`), plus the
    host of the configured receiver and callback URLs (a proxy on this machine that keeps
    the public Host, as nginx does, must get through)."""
    hosts = local_hosts(bind_host)
    if hosts is None:
        return None
    configured = (urlsplit(u).hostname for u in (settings.receiver_url, settings.callback_url)
                  if u)
    return (*hosts, *(h.lower() for h in configured if h))


def receiver_app(celery_app: Any, path: str, hosts: Sequence[str] | None,
                 concurrency: int | None = None) -> SameSiteGuard:
    """The app's receiver at ``path``, guarded like every server of ours. Signing keys and
    the URL signatures name are read from the app's settings per request; at most
    ``concurrency`` deliveries run at once (None: asyncio's default thread pool)."""
    receiver = ReceiverASGI(CallbackReceiver(celery_app), concurrency=concurrency)
    return SameSiteGuard(OnePath(receiver, path), allowed_hosts=hosts)


def _url(host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


def _settings(celery_app: Any) -> Settings:
    try:
        settings = load_settings(celery_app.conf)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    if not settings.current_signing_key:
        raise click.ClickException(
            "no signing keys: the receiver runs only what QStash signed. Set "
            "QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY (or the Celery settings "
            "qstash_current_signing_key / qstash_next_signing_key) to your QStash signing "
            "keys, or QSTASH_DEV=true for `celery-qstash dev`'s"
        )
    return settings


def _check_path(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.startswith("/") or "?" in value or "#" in value:
        raise click.BadParameter(f"a URL path starting with /, got {value!r}")
    return value


def _ignore(signum: int, frame: Any) -> None:
    """After its graceful shutdown uvicorn raises the signal it caught again: this makes a
    SIGTERM a normal return (SIGINT comes back as KeyboardInterrupt)."""


@click.command("serve")
@click.option("--app", "-A", "app_path", default=None, metavar="MODULE:APP",
              envvar="CELERY_QSTASH_APP",
              help="the Celery app whose tasks run here (under `celery -A proj qstash`, that app)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", default=DEFAULT_PORT, show_default=True,
              type=click.IntRange(0, 65535), help="port to bind (0: any free port)")
@click.option("--path", default=DEFAULT_PATH, show_default=True, callback=_check_path,
              help="the path QStash delivers to (QSTASH_RECEIVER_URL's)")
@click.option("--loglevel", "-l", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="as `celery worker -l`: INFO logs each task run")
@click.option("--hostname", "-n", default=None, metavar="NAME",
              help="the node name worker signals carry, as `celery worker -n` "
                   "[default: celery@<host>]")
@click.option("--concurrency", "-c", default=None, type=click.IntRange(min=1), metavar="N",
              help="run at most N deliveries at once, as `celery worker -c N` (more wait "
                   "their turn) [default: asyncio's thread pool, min(32, cores + 4)]")
def serve(app_path: str | None, host: str, port: int, path: str, loglevel: str,
          hostname: str | None, concurrency: int | None) -> None:
    """Run the app's QStash receiver: deferred tasks' bodies run here, as on a worker.

    Sends a worker's signals (worker_init, worker_process_init, worker_ready, then
    worker_shutdown...), so set-up hung on them runs. Refuses to start without signing
    keys (QSTASH_DEV=true uses the dev ones). Ctrl-C or SIGTERM stops it once the
    deliveries in progress are answered.
    """
    try:
        import uvicorn
    except ImportError:
        click.echo(f"celery-qstash serve needs an ASGI server: {INSTALL_HINT}", err=True)
        raise SystemExit(2) from None
    celery_app = _load_app(app_path) if app_path else _celery_cli_app()
    settings = _settings(celery_app)
    # Bound before uvicorn starts: the port is known (--port 0), and a busy one is one line.
    sock = bind_port(host, port, "--port", "receiver")
    try:
        bound = sock.getsockname()[1]
        # Bound to every address: this machine reaches it on loopback (a container's
        # publisher, by its service name: the line printed says to use the public URL).
        _announce(celery_app, _url(host, bound, path),
                  _url("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, bound, path),
                  path, settings)
        level = loglevel.upper()
        logging.basicConfig(level=level, format="[%(levelname)s] %(name)s: %(message)s")
        app = receiver_app(celery_app, path, allowed_hosts(host, settings), concurrency)
        # No access log: the tracer's own lines say what ran, refusals are logged by the
        # receiver. No lifespan: the receiver holds nothing that needs starting.
        server = uvicorn.Server(uvicorn.Config(app, log_level=level.lower(), access_log=False,
                                               lifespan="off"))
        previous = signal.signal(signal.SIGTERM, _ignore)
        try:
            # The socket already listens: deliveries that arrive during start-up wait in
            # its backlog until worker_ready's handlers have run.
            with worker_lifecycle(celery_app, hostname, host=host, port=bound, path=path,
                                  concurrency=concurrency):
                server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        sock.close()
    click.echo("stopped")


def _announce(celery_app: Any, listening: str, url: str, path: str, settings: Settings) -> None:
    name = celery_app.main or "app"
    dev_keys = settings.current_signing_key == DEV_CURRENT_SIGNING_KEY
    keys = " (the public dev signing keys: for `celery-qstash dev` only)" if dev_keys else ""
    click.echo(f"Receiver of {name} listening on {listening}{keys}")
    configured = settings.receiver_url or settings.callback_url
    if configured:
        click.echo(f"Signatures must name {configured} (the configured receiver URL).")
        if urlsplit(configured).path.rstrip("/") != path.rstrip("/"):
            click.echo(f"note: its path is not {path}: a proxy in front must map one to the other")
        click.echo(f"\nIn the app that publishes:\nexport QSTASH_RECEIVER_URL={configured}")
    else:
        click.echo(
            "\nIn the app that publishes, and here (in production, the public https URL "
            "QStash reaches this server at; until it is set here, a signature is checked "
            f"against the URL each request names):\nexport QSTASH_RECEIVER_URL={url}"
        )
    click.echo("\nCtrl-C stops it once the deliveries in progress are answered.")
