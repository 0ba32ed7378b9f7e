"""A local, durable QStash emulator that the official ``qstash`` SDK can talk to.

Use it in three ways:

- in-process and deterministic: ``Emulator(clock=FakeClock())`` then ``emulator.tick()``;
- on a background server for tests: ``with EmulatorServer() as server: QStash(server.token,
  base_url=server.url)``;
- as a dev server: ``serve(port=8080, data_dir=".qstash")`` (what the CLI runs).

It accepts the public ``qstash dev`` credentials (``celery_qstash.devserver``),
so apps configured for ``qstash dev`` work unchanged. ``routes`` rewrite where
deliveries really go (``{"https://api.autosend.com": "http://127.0.0.1:8025"}``)
while messages, logs and signatures keep the original URL.

A web page must not drive the emulator: as the sandbox and the dashboard do, it
refuses a ``Host`` outside ``allowed_hosts`` (421; :class:`EmulatorServer` and
:func:`serve` set the loopback names when bound to loopback) and a
state-changing request from another origin (403). A request body over
``max_body`` (default QStash's 1 MB message limit, :data:`DEFAULT_MAX_BODY`) is a
413, refused before it is read whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette

from celery_qstash import devserver
from celery_qstash.clock import Clock, SystemClock
from celery_qstash.local.serving import ThreadedServer, local_hosts, run

from .delivery import DEFAULT_CONCURRENCY, DEFAULT_MAX_TIMEOUT_MS, DeliveryLoop, resolve_route
from .plans import PLANS, Plan, Quotas
from .publish import MAX_DELAY_MS, Limits
from .routes import build_app
from .store import DLQ_RETENTION_S, Store

__all__ = [
    "DEFAULT_MAX_BODY",
    "ROUTES_ENV",
    "Emulator",
    "EmulatorServer",
    "create_app",
    "parse_route",
    "resolve_route",
    "routes_from_env",
    "serve",
]

ROUTES_ENV = "CELERY_QSTASH_ROUTES"
#: QStash's message size limit on the Free and pay-as-you-go plans, "1MB"
#: (https://upstash.com/docs/qstash/overall/pricing), read as 1 MiB; larger plans
#: allow 10 MB or 50 MB (``max_body``, ``--max-body``).
DEFAULT_MAX_BODY = 1024 * 1024
log = logging.getLogger("celery_qstash.local.emulator")

Tokens = Mapping[str, str] | Iterable[str]


def parse_route(spec: str) -> tuple[str, str]:
    """``"https://api.autosend.com=http://127.0.0.1:8025"`` -> (prefix, target)."""
    match = re.fullmatch(r"\s*(https?://\S+?)=(https?://\S+)\s*", spec)
    if not match:
        raise ValueError(f"invalid route {spec!r}: expected PREFIX=URL, both http(s) URLs")
    return match.group(1), match.group(2)


def routes_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Routes from ``CELERY_QSTASH_ROUTES`` (comma- or whitespace-separated PREFIX=URL)."""
    value = (os.environ if environ is None else environ).get(ROUTES_ENV, "")
    return dict(parse_route(item) for item in re.split(r"[,\s]+", value) if item)


def _user_table(tokens: Tokens | None) -> dict[str, tuple[str, tuple[str, str] | None]]:
    """token -> (user id, fixed signing keys or None to generate and store them)."""
    table: dict[str, tuple[str, tuple[str, str] | None]] = {
        token: (user, (current, nxt)) for token, (user, current, nxt) in devserver.DEV_USERS.items()
    }
    if tokens is None:
        return table
    items = tokens.items() if isinstance(tokens, Mapping) else ((t, None) for t in tokens)
    for token, user in items:
        if not token or token in table:
            continue
        # The user id is derived from the token so it is stable across restarts
        # without ever writing the token itself anywhere.
        table[token] = (user or "user_" + hashlib.sha256(token.encode()).hexdigest()[:12], None)
    return table


class Emulator:
    """Store + delivery loop + Starlette app. Nothing runs in the background until asked."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        clock: Clock | None = None,
        routes: Mapping[str, str] | None = None,
        tokens: Tokens | None = None,
        http_client_factory: Callable[[], httpx.Client] | None = None,
        max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS,
        start_delivery: bool = False,
        allowed_hosts: Sequence[str] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        dlq_retention_s: float = DLQ_RETENTION_S,
        plan: str | Plan | None = None,
        delivery_concurrency: int = DEFAULT_CONCURRENCY,
        max_delay_ms: int = MAX_DELAY_MS,
        allow_link_local: bool = False,
    ) -> None:
        if max_body <= 0:
            raise ValueError("max_body must be a positive number of bytes")
        if max_delay_ms <= 0:
            raise ValueError("max_delay_ms must be a positive number of milliseconds")
        self.allowed_hosts = allowed_hosts
        self.max_body = max_body
        self.clock: Clock = clock or SystemClock()
        #: QStash's plan quotas, when asked for (``--plan``); None: no quota at all.
        self.quotas = Quotas(PLANS[plan] if isinstance(plan, str) else plan) if plan else None
        self.store = Store(data_dir, self.clock, dlq_retention_s=dlq_retention_s)
        # URL groups check their endpoints, and every publish to one, against the flag.
        self.store.db.allow_link_local = allow_link_local
        #: What a publish may ask (``--max-delay``, ``--allow-link-local``, the plan's timeout).
        self.limits = Limits(max_timeout_ms=max_timeout_ms, max_delay_ms=max_delay_ms,
                             allow_link_local=allow_link_local, clock=self.clock)
        self._users = _user_table(tokens)
        self._default_keys = {user: keys for user, keys in self._users.values()}
        self.loop = DeliveryLoop(
            self.store, self.clock, http_client_factory, routes,
            signing_keys=self.signing_keys, max_timeout_ms=max_timeout_ms,
            workers=delivery_concurrency,
        )
        self.store.on_change = self.loop.wake
        self.start_delivery = start_delivery
        self.app: Starlette = build_app(self, self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.start_delivery:
            self.start_background()
        try:
            yield
        finally:
            if self.start_delivery:
                self.loop.stop()

    @property
    def routes(self) -> dict[str, str]:
        return self.loop.routes

    def authenticate(self, token: str) -> str | None:
        """The user id of ``token`` (creating its signing keys on first use), or None."""
        entry = self._users.get(token)
        if entry is None:
            return None
        self.signing_keys(entry[0])
        return entry[0]

    def signing_keys(self, user: str) -> tuple[str, str]:
        return self.store.signing_keys(user, self._default_keys.get(user))

    def tick(self, now: float | None = None) -> int:
        """Deliver everything due now (or at ``now``); returns the number of attempts."""
        return self.loop.tick(now)

    def reset(self) -> None:
        self.store.reset()

    def start_background(self) -> None:
        self.loop.start_background()

    def stop(self) -> None:
        """Stop background delivery (state stays; ``close()`` also releases the database)."""
        self.loop.stop()

    def close(self) -> None:
        self.loop.close()
        self.store.close()


def create_app(
    store_path: str | Path | None = None,
    *,
    clock: Clock | None = None,
    routes: Mapping[str, str] | None = None,
    tokens: Tokens | None = None,
    start_delivery: bool = True,
    allowed_hosts: Sequence[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> Starlette:
    """An ASGI app for the emulator; delivery runs during the app's lifespan if asked."""
    return Emulator(store_path, clock=clock, routes=routes, tokens=tokens,
                    start_delivery=start_delivery, allowed_hosts=allowed_hosts,
                    max_body=max_body).app


class EmulatorServer:
    """An :class:`Emulator` served on a free local port (tests, demos)."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        clock: Clock | None = None,
        routes: Mapping[str, str] | None = None,
        tokens: Tokens | None = None,
        http_client_factory: Callable[[], httpx.Client] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_delivery: bool = True,
        max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS,
        max_body: int = DEFAULT_MAX_BODY,
        plan: str | Plan | None = None,
        delivery_concurrency: int = DEFAULT_CONCURRENCY,
        max_delay_ms: int = MAX_DELAY_MS,
        allow_link_local: bool = False,
    ) -> None:
        self.emulator = Emulator(data_dir, clock=clock, routes=routes, tokens=tokens,
                                 http_client_factory=http_client_factory,
                                 max_timeout_ms=max_timeout_ms,
                                 start_delivery=start_delivery,
                                 allowed_hosts=local_hosts(host), max_body=max_body,
                                 plan=plan, delivery_concurrency=delivery_concurrency,
                                 max_delay_ms=max_delay_ms, allow_link_local=allow_link_local)
        self._server = ThreadedServer(self.emulator.app, host, port)
        self.token = devserver.DEV_TOKEN

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def current_signing_key(self) -> str:
        return self.emulator.signing_keys(devserver.DEV_USERS[self.token][0])[0]

    @property
    def next_signing_key(self) -> str:
        return self.emulator.signing_keys(devserver.DEV_USERS[self.token][0])[1]

    def start(self) -> EmulatorServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self.emulator.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = devserver.EMULATOR_PORT,
    data_dir: str | Path | None = None,
    routes: Mapping[str, str] | None = None,
    extra_tokens: Iterable[str] = (),
    max_body: int = DEFAULT_MAX_BODY,
    plan: str | None = None,
    max_delay_ms: int = MAX_DELAY_MS,
    allow_link_local: bool = False,
) -> None:
    """Run the emulator until Ctrl-C. Every acknowledged publish is already committed,
    so stopping (or being killed) loses nothing; unfinished attempts are retried on restart.
    """
    effective_routes = dict(routes) if routes is not None else routes_from_env()
    emulator = Emulator(data_dir, routes=effective_routes, tokens=list(extra_tokens),
                        start_delivery=True, allowed_hosts=local_hosts(host),
                        max_body=max_body, plan=plan, max_delay_ms=max_delay_ms,
                        allow_link_local=allow_link_local)
    where = "in memory" if data_dir is None else f"in {data_dir}"
    print(f"QStash emulator is running at http://{host}:{port} (state {where})", flush=True)
    for prefix, target in effective_routes.items():
        print(f"  route {prefix} -> {target}", flush=True)
    try:
        run(emulator.app, host, port)
    finally:
        emulator.close()
