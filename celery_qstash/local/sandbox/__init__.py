"""A local stand-in for AutoSend's email API (``https://api.autosend.com``).

It accepts ``POST /v1/mails/send`` and ``POST /v1/mails/bulk`` exactly as AutoSend
documents them (Bearer auth, the same validation as :mod:`celery_qstash.email`,
rate limits with ``X-RateLimit-*`` headers and 429 + ``retryAfter``,
``Idempotency-Key`` replays, the ``test`` flag) and, instead of delivering,
captures each email in an inbox you can open in a browser (``/``) or query as
JSON (``/api/v1/messages``). Faults can be scripted (``/api/v1/chaos``) to test
retries. With a webhook URL it sends AutoSend's signed webhooks for every accepted
email (``email.sent``, then ``email.delivered`` or a bounce: :mod:`.webhooks`).
See :mod:`.api` for the routes and the assumptions made where AutoSend
documents nothing.

Layout (moto's state / wire / routes split): :mod:`.store` is the state,
:mod:`.api` the wire and route table, :mod:`.render` fills ``{{placeholders}}``,
:mod:`.pages` is the HTML.

Use::

    with SandboxServer() as server:          # tests: real HTTP on a free port
        httpx.post(f"{server.url}/v1/mails/send", ...)
        server.sandbox.store.messages()

    serve(port=8625, data_dir=".qstash-dev/sandbox")   # development, blocks until Ctrl-C

API keys are kept only as sha256 digests and appear nowhere (per-key state is
keyed by a 16-hex fingerprint); any bearer key is accepted unless ``api_keys``
is given.

A web page must not drive the sandbox from a browser: :class:`SameSiteGuard`
refuses a ``Host`` outside ``allowed_hosts`` (421; :func:`serve` and
:class:`SandboxServer` set the loopback names when bound to loopback) and a
state-changing request from another origin (403). SDKs, curl and the QStash
emulator's deliveries send no ``Origin`` and are unaffected. A body over
``max_body`` (:data:`DEFAULT_MAX_BODY`) is a 413 in AutoSend's error shape,
refused before it is read whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from ...clock import Clock, SystemClock
from ...devserver import SANDBOX_PORT
from ..serving import BodyLimit, SameSiteGuard, ThreadedServer, local_hosts, run
from .api import SandboxAPI, Settings, error_body, http_error
from .store import IDEMPOTENCY_TTL, SandboxStore
from .webhooks import RETRY_SCHEDULE, WebhookEmitter

__all__ = ["DEFAULT_MAX_BODY", "Sandbox", "SandboxServer", "create_app", "serve"]

logger = logging.getLogger("celery_qstash.local.sandbox")

#: AutoSend documents no request size limit; 10 MB is what SES, Postmark and Azure
#: take per email, attachments included (``max_body``, ``--max-body``).
DEFAULT_MAX_BODY = 10 * 1000 * 1000


def _too_large(limit: int) -> Response:
    message = f"Request body is larger than the {limit}-byte limit"
    return JSONResponse(error_body(413, message), 413)


class Sandbox:
    """A sandbox's state (``store``) and its ASGI ``app``; ``close()`` releases the database.

    ``rate_per_second`` / ``rate_per_minute``: sliding-window limits per API key
    (``0`` or ``None`` turns one off; AutoSend documents both: 2 per second and 50 per
    minute per API key). The wait goes in the JSON ``retryAfter`` field, as AutoSend's
    docs show it; ``retry_after_header=True`` also sends ``Retry-After``, which QStash
    honours (production follows QStash's default backoff instead).
    ``verified_domains``: when given, a ``from`` on any other domain is refused with
    AutoSend's 403 "Domain not verified".
    ``allowed_hosts``: the ``Host`` names accepted (``None``: any); requests from
    another origin are refused either way (see :class:`SameSiteGuard`).
    ``max_body``: the largest request body in bytes (413 above it).
    ``webhook_url``/``webhook_secret``: send AutoSend's signed webhooks there (retried on
    ``webhook_schedule``); without them the events are only recorded for the inbox.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        api_keys: Iterable[str] | None = None,
        rate_per_second: int | None = 2,
        rate_per_minute: int | None = 50,
        retry_after_header: bool = False,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
        allowed_hosts: Sequence[str] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        verified_domains: Iterable[str] | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_schedule: Sequence[float] = RETRY_SCHEDULE,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.store = SandboxStore(
            data_dir,
            clock=self.clock,
            rate_limits=((rate_per_second or 0, 1.0), (rate_per_minute or 0, 60.0)),
            idempotency_ttl=idempotency_ttl,
        )
        self.settings = Settings.build(api_keys, retry_after_header, verified_domains)
        self.api = SandboxAPI(self.store, self.settings)
        self.webhooks = self.api.webhooks = WebhookEmitter(
            self.store, self.clock, url=webhook_url, secret=webhook_secret,
            schedule=webhook_schedule)
        self.app = Starlette(
            routes=self.api.routes,
            exception_handlers={HTTPException: http_error},
            middleware=[
                Middleware(SameSiteGuard, allowed_hosts=allowed_hosts),
                Middleware(BodyLimit, limit=max_body, too_large=_too_large),
            ],
        )
        self.app.state.sandbox = self

    def reset(self) -> None:
        self.store.reset()
        self.webhooks.clear_rules()

    def close(self) -> None:
        self.webhooks.close()
        self.store.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_app(
    data_dir: str | os.PathLike[str] | None = None,
    clock: Clock | None = None,
    api_keys: Iterable[str] | None = None,
    rate_per_second: int | None = 2,
    rate_per_minute: int | None = 50,
    retry_after_header: bool = False,
    allowed_hosts: Sequence[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    verified_domains: Iterable[str] | None = None,
) -> Starlette:
    """The sandbox as an ASGI app; its :class:`Sandbox` is ``app.state.sandbox``."""
    return Sandbox(
        data_dir=data_dir,
        clock=clock,
        api_keys=api_keys,
        rate_per_second=rate_per_second,
        rate_per_minute=rate_per_minute,
        retry_after_header=retry_after_header,
        allowed_hosts=allowed_hosts,
        max_body=max_body,
        verified_domains=verified_domains,
    ).app


class SandboxServer:
    """A :class:`Sandbox` served over real HTTP on a background thread (free port by default).

    ``SandboxServer(**sandbox_kwargs)`` or ``SandboxServer(sandbox=existing)``;
    ``url`` is ready once ``start()`` (or ``with``) returns. ``stop()`` also closes
    a sandbox it created itself.
    """

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        api_keys: Iterable[str] | None = None,
        rate_per_second: int | None = 2,
        rate_per_minute: int | None = 50,
        retry_after_header: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        verified_domains: Iterable[str] | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self._owns_sandbox = sandbox is None
        hosts = local_hosts(host)
        app: ASGIApp
        if sandbox is None:
            sandbox = Sandbox(
                data_dir=data_dir,
                clock=clock,
                api_keys=api_keys,
                rate_per_second=rate_per_second,
                rate_per_minute=rate_per_minute,
                retry_after_header=retry_after_header,
                allowed_hosts=hosts,
                max_body=max_body,
                verified_domains=verified_domains,
                webhook_url=webhook_url,
                webhook_secret=webhook_secret,
            )
            app = sandbox.app
        else:
            # The caller's sandbox was built for any host; this server knows where it listens.
            app = SameSiteGuard(sandbox.app, allowed_hosts=hosts)
        self.sandbox = sandbox
        self._server = ThreadedServer(app, host=host, port=port)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> SandboxServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._owns_sandbox:
            self.sandbox.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = SANDBOX_PORT,
    data_dir: str | os.PathLike[str] | None = None,
    api_keys: Iterable[str] | None = None,
    rate_per_second: int | None = 2,
    rate_per_minute: int | None = 50,
    retry_after_header: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    verified_domains: Iterable[str] | None = None,
    dashboard_url: str | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> None:
    """Serve the sandbox until Ctrl-C (``data_dir=None`` keeps the inbox in memory).

    ``dashboard_url``: the dashboard as a browser reaches it, so each captured email links
    to its task there (``celery-qstash dev`` sets it; ``None``: no link).
    """
    sandbox = Sandbox(
        data_dir=data_dir,
        api_keys=api_keys,
        rate_per_second=rate_per_second,
        rate_per_minute=rate_per_minute,
        retry_after_header=retry_after_header,
        allowed_hosts=local_hosts(host),
        max_body=max_body,
        verified_domains=verified_domains,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
    )
    sandbox.api.dashboard_url = dashboard_url
    where = sandbox.store.path or "memory"
    logger.info("AutoSend sandbox on http://%s:%s (inbox in %s)", host, port, where)
    if webhook_url:
        logger.info("webhooks to %s", webhook_url)
    try:
        run(sandbox.app, host, port)
    except KeyboardInterrupt:  # uvicorn handles SIGINT itself; this covers a second Ctrl-C
        pass
    finally:
        sandbox.close()
