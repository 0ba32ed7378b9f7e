"""The sandbox's HTTP surface: parse the request, ask the store, answer in AutoSend's JSON.

Routes::

    POST   /v1/mails/send            AutoSend: one email (validated with ``Email``)
    POST   /v1/mails/bulk            AutoSend: one email per recipient (``BulkEmail``)
    GET    /  and  /inbox            inbox page, newest first: ?q= search, ?key=, ?page=, ?refresh=
    GET    /inbox/{id}               one captured email: ?tab=html|text|source|headers|request
    POST   /inbox/{id}/delete        the page's Delete button (form token)
    POST   /inbox/clear              the page's Clear all button (form token + confirm)
    GET    /rejected                 refused mail requests, newest first, with the reason
    GET    /api/v1/messages          ?limit=&offset=&to=&subject=&batchId= -> {"total", "messages"}
    GET    /api/v1/messages/{id}     one message (404 if unknown)
    DELETE /api/v1/messages[/{id}]   delete all (or one) *
    GET    /api/v1/stats             {"received", "accepted", "replayed", "rejected", "emails"}
    GET|POST|DELETE /api/v1/chaos    fault injection for the mail endpoints (POST, DELETE *);
                                     {"bounce": "to@x"} turns emails to it into bounces
    GET    /api/v1/messages/{id}/events  the email's webhook events (webhooks.py)
    POST   /_sandbox/reset           forget everything *
    GET    /_sandbox/health          {"ok": true}

``*``: destructive, so it takes the key a send takes, as ``Authorization: Bearer``
(401 in AutoSend's error shape otherwise); the inbox page's own buttons carry a
per-process form token instead.

A mail request goes through, in order: authentication (401), chaos rules,
rate limits (429), content type and JSON (400), the idempotency record (replay
or 409), validation (400: first the wire shape, :func:`celery_qstash.email.wire_errors`,
then the models' rules), then it is stored and answered 200. Only that last
step stores an email or an idempotency record; every step counts in the stats.

Response bodies carry both shapes AutoSend has documented: the legacy top-level
``message``/``errors``/``retryAfter`` and the current ``error: {message, code,
details}`` envelope, so a client written against either one works.

Assumptions where AutoSend documents nothing (see the reference notes):

- Idempotency records last 24 h from the first successful response, are scoped
  to the API key, and bind the key to the endpoint plus the JSON body (compared
  after parsing, so whitespace and key order do not matter). The same key with
  a different body answers **409** ``IDEMPOTENCY_CONFLICT``; keys longer than
  256 characters are a 400. Only a 200 is recorded: a request that failed
  validation, was rate limited or hit a chaos rule can be retried with the same key.
- ``X-RateLimit-Limit/Remaining/Reset`` describe the longest window configured
  (AutoSend's reference, "Rate Limits": 2 requests per second and 50 per minute per
  key, so the minute window by default, as its ``X-RateLimit-Limit: 50`` example shows),
  ``Reset`` in epoch seconds.
  ``retryAfter`` in the body is the wait imposed by whichever window refused the
  request; a ``Retry-After`` header is sent only when asked (``retry_after_header``):
  AutoSend does not document one, and QStash honours it, so by default a 429
  is retried on QStash's own backoff, as in production.
- Chaos rules apply before the rate limiter, so injected failures do not use up
  the quota a client needs for its retry.
- JSON nested more than ``MAX_JSON_DEPTH`` (64) levels is a 400 on ``body``: no
  email needs it, and deeper input would only exercise recursion limits.
- AutoSend documents no size limit (attachments travel base64 inside the JSON, so
  the request size bounds them too). The sandbox refuses a request body over
  ``max_body``, 10 MB by default (what SES, Postmark and Azure allow per email),
  with **413** ``PAYLOAD_TOO_LARGE`` in AutoSend's error shape, before reading it whole.
- ``POST /api/v1/chaos`` takes ``application/json`` only, so a page elsewhere
  cannot script failures with a form or a "simple" ``fetch``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...email import BULK_PATH, SEND_PATH, Address, BulkEmail, Email, wire_errors
from ...errors import EmailValidationError
from ..live import SCRIPT_PATH, favicon
from ..live import script as live_script
from ..serving import MAX_JSON_DEPTH, BodyTooLarge, JSONBodyError, Notices, parse_json
from . import pages
from .render import merge_data, render
from .store import ChaosRule, Message, RateDecision, SandboxStore
from .webhooks import BounceRule, WebhookEmitter

__all__ = ["MAX_JSON_DEPTH", "SandboxAPI", "Settings", "fingerprint", "key_digest"]

logger = logging.getLogger("celery_qstash.local.sandbox")

MAX_IDEMPOTENCY_KEY = 256  # Resend's limit; AutoSend documents none
MAX_PAGE = 1000
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer
MAX_CHAOS_DELAY_MS = 300_000

_CODES = {
    400: ("Validation failed", "VALIDATION_FAILED"),
    401: ("Unauthorized", "UNAUTHORIZED"),
    402: ("Please upgrade your plan to access these resources.", "PLAN_UPGRADE_REQUIRED"),
    403: ("Forbidden", "FORBIDDEN"),
    404: ("Not found", "NOT_FOUND"),
    409: ("Idempotency key reused with a different body", "IDEMPOTENCY_CONFLICT"),
    413: ("Request body too large", "PAYLOAD_TOO_LARGE"),
    429: ("Rate limit exceeded", "RATE_LIMIT_EXCEEDED"),
    500: ("Internal server error", "SERVER_ERROR"),
    503: ("Service unavailable", "SERVICE_UNAVAILABLE"),
}


def key_digest(api_key: str) -> str:
    """Full sha256 of an API key: what a configured key list is kept as."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def fingerprint(api_key: str) -> str:
    """A short, non-reversible name for an API key (per-key state, shown in the API)."""
    return key_digest(api_key)[:16]


@dataclass(frozen=True)
class Settings:
    """Request-handling switches; the keys are kept only as sha256 digests."""

    key_digests: frozenset[str] | None = None  # None: any bearer key is accepted
    retry_after_header: bool = False
    #: Sender domains accepted in ``from`` (lower case); None: any domain.
    verified_domains: frozenset[str] | None = None

    @classmethod
    def build(cls, api_keys: Iterable[str] | None, retry_after_header: bool = False,
              verified_domains: Iterable[str] | None = None) -> Settings:
        digests = None if api_keys is None else frozenset(key_digest(k) for k in api_keys)
        domains = None if verified_domains is None else frozenset(
            d.strip().lower() for d in verified_domains if d.strip())
        return cls(key_digests=digests, retry_after_header=retry_after_header,
                   verified_domains=domains or None)


def error_body(status: int, message: str | None = None, **extra: Any) -> dict[str, Any]:
    """AutoSend's error JSON in both documented shapes (top level and ``error``)."""
    try:
        fallback = (HTTPStatus(status).phrase, HTTPStatus(status).name)
    except ValueError:  # a status http.HTTPStatus has no name for
        fallback = ("Error", f"HTTP_{status}")
    default_message, code = _CODES.get(status, fallback)
    message = message or default_message
    error: dict[str, Any] = {"message": message, "code": code}
    body: dict[str, Any] = {"success": False, "message": message}
    if "details" in extra:
        body["errors"] = extra["details"]
        error["details"] = extra["details"]
    if extra.get("retryAfter") is not None:
        body["retryAfter"] = extra["retryAfter"]
        error["retryAfter"] = extra["retryAfter"]
    body["error"] = error
    return body


def validation_failed(errors: list[dict[str, str]]) -> dict[str, Any]:
    return error_body(400, details=errors)


def _iso(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _object_id(now: float) -> str:
    # MongoDB ObjectId layout (4-byte seconds, then 8 random bytes), as AutoSend's ids look.
    return f"{int(now) & 0xFFFFFFFF:08x}{secrets.token_hex(8)}"


def _address(address: Address) -> dict[str, Any]:
    return {"email": address.email, "name": address.name}


def _parse_json(raw: bytes) -> tuple[Any, list[dict[str, str]]]:
    """``(value, [])`` for acceptable JSON, else ``(None, errors on "body")``."""
    try:
        return parse_json(raw, max_depth=MAX_JSON_DEPTH), []
    except JSONBodyError as exc:
        return None, [{"field": "body", "message": f"Malformed JSON: {exc}"}]


#: AutoSend's optional per-email switches (its send and bulk references: "Enable or disable
#: click tracking", "... open tracking", "Custom email headers ... as key-value pairs").
#: The sandbox checks their types and keeps them in the captured request; it sends nothing.
SEND_OPTIONS: dict[str, type] = {"clickTracking": bool, "openTracking": bool, "headers": dict}


def _option_errors(payload: dict[str, Any]) -> list[dict[str, str]]:
    errors = []
    for key, kind in SEND_OPTIONS.items():
        value = payload.get(key)
        if value is None:
            continue
        if not isinstance(value, kind):
            errors.append({"field": key, "message": f"must be a {kind.__name__}"})
        elif isinstance(value, dict) and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            errors.append({"field": key, "message": "must map header names to strings"})
    return errors


def _has_json_type(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == "application/json"


_CONTENT_TYPE_ERROR = [{"field": "Content-Type", "message": "must be application/json"}]


def _rate_headers(decision: RateDecision | None) -> dict[str, str]:
    if decision is None:
        return {}
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset),
    }


class SandboxAPI:
    """Request handlers over one :class:`SandboxStore`; ``routes`` is the route table."""

    def __init__(self, store: SandboxStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        # A chaos delay must really delay (a client's timeout has to fire), so it is
        # the event loop's sleep, not the Clock's; tests swap in a recorder.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        #: The dashboard, to link an email to its task (``celery-qstash dev`` sets it).
        self.dashboard_url: str | None = None
        # The inbox's forms carry this; a page on another site cannot read it, so it
        # cannot make a browser delete emails (SameSiteGuard refuses such POSTs too).
        self.page_token = secrets.token_urlsafe(24)
        #: What the inbox says after a delete: the redirect carries a token, never text.
        self.notices = Notices()
        #: AutoSend's webhook events for accepted emails (:mod:`.webhooks`).
        self.webhooks: WebhookEmitter | None = None

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route(SEND_PATH, self.send, methods=["POST"]),
            Route(BULK_PATH, self.bulk, methods=["POST"]),
            Route("/", self.inbox_page, methods=["GET"]),
            Route("/inbox", self.inbox_page, methods=["GET"]),
            Route("/inbox/clear", self.clear_page, methods=["POST"]),
            Route("/inbox/{id}", self.message_page, methods=["GET"]),
            Route("/inbox/{id}/delete", self.delete_page, methods=["POST"]),
            Route("/rejected", self.rejected_page, methods=["GET"]),
            Route(SCRIPT_PATH, live_script, methods=["GET"]),
            Route("/favicon.ico", favicon, methods=["GET"]),
            Route("/api/v1/messages", self.list_messages, methods=["GET"]),
            Route("/api/v1/messages", self._keyed(self.delete_messages), methods=["DELETE"]),
            Route("/api/v1/messages/{id}", self.get_message, methods=["GET"]),
            Route("/api/v1/messages/{id}/events", self.message_events, methods=["GET"]),
            Route("/api/v1/messages/{id}", self._keyed(self.delete_message),
                  methods=["DELETE"]),
            Route("/api/v1/stats", self.stats, methods=["GET"]),
            Route("/api/v1/chaos", self.get_chaos, methods=["GET"]),
            Route("/api/v1/chaos", self._keyed(self.add_chaos), methods=["POST"]),
            Route("/api/v1/chaos", self._keyed(self.clear_chaos), methods=["DELETE"]),
            Route("/_sandbox/reset", self._keyed(self.reset), methods=["POST"]),
            Route("/_sandbox/health", self.health, methods=["GET"]),
        ]

    def _keyed(self, handler: Callable[[Request], Awaitable[Response]]
               ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the key a send needs (the destructive JSON endpoints).

        As the emulator's ``/_emulator/reset``: only the ``Authorization`` header counts,
        which a page on another origin cannot set without a preflight never granted.
        Not counted in the stats or the Rejected view: those describe mail requests.
        """
        async def endpoint(request: Request) -> Response:
            if self._api_key(request) is None:
                return JSONResponse(
                    error_body(401, "Unauthorized: an Authorization: Bearer header with "
                                    "the sandbox's API key is required"),
                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)

        return endpoint

    # -- AutoSend endpoints --------------------------------------------------

    async def send(self, request: Request) -> Response:
        return await self._remember_refusal(request, await self._mail(request, bulk=False))

    async def bulk(self, request: Request) -> Response:
        return await self._remember_refusal(request, await self._mail(request, bulk=True))

    async def _remember_refusal(self, request: Request, response: Response) -> Response:
        """A refused mail request goes to the Rejected view, with the reason it was given."""
        if response.status_code < 400:
            return response
        self.store.record_rejection(
            refusal(response, await request.body(), request.url.path,
                    request.headers.get("idempotency-key"))
        )
        return response

    def _reject(
        self, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        self.store.count(f"rejected.{status}")
        return JSONResponse(body, status_code=status, headers=headers)

    def _api_key(self, request: Request) -> str | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        if self.settings.key_digests is None:
            return key
        digest = key_digest(key)
        # Compare every configured digest so timing says nothing about which one is close.
        matches = [hmac.compare_digest(digest, d) for d in self.settings.key_digests]
        return key if any(matches) else None

    async def _mail(self, request: Request, *, bulk: bool) -> Response:
        store = self.store
        store.count("received")
        api_key = self._api_key(request)
        if api_key is None:
            return self._reject(401, error_body(401), {"WWW-Authenticate": "Bearer"})
        key_fp = fingerprint(api_key)
        del api_key  # from here on only the fingerprint exists

        rule = store.chaos.take()
        if rule is not None:
            if rule.delay_ms:
                await self.sleep(rule.delay_ms / 1000)
            if rule.status is not None:
                peek = store.limiter.hit(key_fp, record=False)
                return self._chaos_response(rule, _rate_headers(peek))

        decision = store.limiter.hit(key_fp)
        headers = _rate_headers(decision)
        if decision is not None and not decision.allowed:
            if self.settings.retry_after_header:
                headers["Retry-After"] = str(decision.retry_after)
            return self._reject(429, error_body(429, retryAfter=decision.retry_after), headers)

        if not _has_json_type(request):
            return self._reject(400, validation_failed(_CONTENT_TYPE_ERROR), headers)
        payload, errors = _parse_json(await request.body())
        if errors:
            return self._reject(400, validation_failed(errors), headers)

        idem_key = request.headers.get("idempotency-key", "").strip() or None
        request_hash = ""
        if idem_key is not None:
            if len(idem_key) > MAX_IDEMPOTENCY_KEY:
                message = f"at most {MAX_IDEMPOTENCY_KEY} characters"
                errors = [{"field": "Idempotency-Key", "message": message}]
                return self._reject(400, validation_failed(errors), headers)
            canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
            path = BULK_PATH if bulk else SEND_PATH
            request_hash = hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()
            record = store.idempotency(key_fp, idem_key)
            if record is not None:
                if record.request_hash != request_hash:
                    return self._reject(409, error_body(409), headers)
                store.count("accepted", "replayed")
                replay_headers = {**headers, "Idempotent-Replayed": "true"}
                return JSONResponse(record.response, record.status, headers=replay_headers)

        # AutoSend's wire shapes first: the models also take friendlier input
        # ("Name <a@b.com>", a single cc, snake_case) that AutoSend would refuse.
        fields = payload
        if isinstance(payload, dict):
            errors = _option_errors(payload)
            fields = {k: v for k, v in payload.items() if k not in SEND_OPTIONS}
            errors += wire_errors(fields, bulk=bulk)
            if errors:
                return self._reject(400, validation_failed(errors), headers)
        try:
            model: Email | BulkEmail = (BulkEmail if bulk else Email).model_validate(fields)
        except EmailValidationError as exc:
            return self._reject(400, validation_failed(exc.errors), headers)
        except RecursionError:
            errors = [{"field": "body", "message": f"nested more than {MAX_JSON_DEPTH} levels"}]
            return self._reject(400, validation_failed(errors), headers)

        domain = model.from_.email.rpartition("@")[2].lower()
        verified = self.settings.verified_domains
        if verified is not None and domain not in verified:
            # AutoSend: "Sender email address (must be from a verified domain)"; its error
            # message for an unverified one is "Domain not verified".
            details = [{"field": "from.email", "message": f"{domain} is not a verified domain"}]
            return self._reject(403, error_body(403, "Domain not verified", details=details),
                                headers)

        now = store.clock.now()
        if isinstance(model, BulkEmail):
            messages, body = self._accept_bulk(model, payload, idem_key, key_fp, now)
        else:
            messages, body = self._accept_send(model, payload, idem_key, key_fp, now)
        idempotency = (key_fp, idem_key, request_hash) if idem_key is not None else None
        store.save(messages, idempotency=idempotency, status=200, response=body)
        store.count("accepted")
        if self.webhooks is not None:
            self.webhooks.accepted(messages)
        for msg in messages:
            logger.info(
                "captured %s to %s: %r%s",
                msg["id"],
                msg["to"]["email"],
                msg["renderedSubject"],
                " [test]" if msg["test"] else "",
            )
        return JSONResponse(body, headers=headers)

    def _message(
        self,
        model: Email | BulkEmail,
        payload: Any,
        *,
        to: Address,
        data: dict[str, Any],
        batch_id: str | None,
        idem_key: str | None,
        key_fp: str,
        now: float,
    ) -> Message:
        wire = model.to_autosend()
        email_id = _object_id(now)
        cc = model.cc if isinstance(model, Email) else None
        bcc = model.bcc if isinstance(model, Email) else None
        attachments = [
            {
                "fileName": a.file_name,
                "contentType": a.content_type,
                "disposition": a.disposition,
                "fileUrl": a.file_url,
                "size": len(a.content) if a.content is not None else None,
            }
            for a in model.attachments or ()
        ]
        return {
            "id": email_id,
            "emailId": email_id,
            "batchId": batch_id,
            "endpoint": BULK_PATH if batch_id else SEND_PATH,
            "status": "queued",
            "from": _address(model.from_),
            "to": _address(to),
            "cc": [_address(a) for a in cc or ()],
            "bcc": [_address(a) for a in bcc or ()],
            "replyTo": _address(model.reply_to) if model.reply_to else None,
            "subject": model.subject,
            "html": model.html,
            "text": model.text,
            "renderedSubject": render(model.subject, data, html=False),
            "renderedHtml": render(model.html, data, html=True),
            "renderedText": render(model.text, data, html=False),
            "dynamicData": data,
            "templateId": model.template_id,
            "categories": list(model.categories or ()),
            "scheduledAt": wire.get("scheduledAt"),
            "campaignName": model.campaign_name,
            "unsubscribeGroupId": model.unsubscribe_group_id,
            "attachments": attachments,
            "test": model.test,
            "createdAt": _iso(now),
            "idempotencyKey": idem_key,
            "apiKeyFingerprint": key_fp,
            "request": payload,
        }

    def _accept_send(
        self, model: Email, payload: Any, idem_key: str | None, key_fp: str, now: float
    ) -> tuple[list[Message], dict[str, Any]]:
        data = dict(model.dynamic_data or {})
        msg = self._message(
            model,
            payload,
            to=model.to,
            data=data,
            batch_id=None,
            idem_key=idem_key,
            key_fp=key_fp,
            now=now,
        )
        body = {
            "success": True,
            "message": "Email queued successfully",
            "data": {
                "emailId": msg["emailId"],
                "message": "Email queued successfully.",
                "status": "queued",
                "queuedAt": msg["createdAt"],
                "totalRecipients": model.recipients_count,
            },
        }
        return [msg], body

    def _accept_bulk(
        self, model: BulkEmail, payload: Any, idem_key: str | None, key_fp: str, now: float
    ) -> tuple[list[Message], dict[str, Any]]:
        batch_id = str(uuid.uuid4())
        messages = [
            self._message(
                model,
                payload,
                to=r,
                data=merge_data(model.dynamic_data, r.dynamic_data),
                batch_id=batch_id,
                idem_key=idem_key,
                key_fp=key_fp,
                now=now,
            )
            for r in model.recipients
        ]
        body = {
            "success": True,
            "message": "Emails queued successfully",
            "data": {
                "batchId": batch_id,
                "message": "Emails queued successfully.",
                "status": "queued",
                "queuedAt": _iso(now),
                "totalRecipients": len(messages),
                "successCount": len(messages),
                "failedCount": 0,
                "emailIds": [m["emailId"] for m in messages],
            },
        }
        return messages, body

    def _chaos_response(self, rule: ChaosRule, headers: dict[str, str]) -> JSONResponse:
        status = rule.status or 500
        headers["X-Sandbox-Chaos"] = "true"  # says the failure was injected, not real
        if rule.retry_after is not None and self.settings.retry_after_header:
            headers["Retry-After"] = str(rule.retry_after)
        body = rule.body
        if body is None:
            body = error_body(status, retryAfter=rule.retry_after)
        return self._reject(status, body, headers)

    # -- chaos ---------------------------------------------------------------

    async def get_chaos(self, request: Request) -> Response:
        rules = self.store.chaos.pending()
        bounces = self.webhooks.bounce_rules() if self.webhooks is not None else []
        return JSONResponse({"rules": rules, "remaining": sum(r["remaining"] for r in rules),
                             "bounces": bounces})

    async def add_chaos(self, request: Request) -> Response:
        # JSON only: a cross-site form or "simple" fetch (text/plain) cannot script faults.
        if not _has_json_type(request):
            return JSONResponse(validation_failed(_CONTENT_TYPE_ERROR), 400)
        payload, errors = _parse_json(await request.body() or b"{}")
        if errors:
            return JSONResponse(validation_failed(errors), 400)
        try:
            if isinstance(payload, dict) and "bounce" in payload and self.webhooks is not None:
                self.webhooks.add_bounce_rule(_bounce_rule(payload))
                return await self.get_chaos(request)
            rule = _chaos_rule(payload)
        except EmailValidationError as exc:
            return JSONResponse(validation_failed(exc.errors), 400)
        self.store.chaos.add(rule)
        return await self.get_chaos(request)

    async def clear_chaos(self, request: Request) -> Response:
        self.store.chaos.clear()
        if self.webhooks is not None:
            self.webhooks.clear_rules()
        return await self.get_chaos(request)

    # -- JSON API ------------------------------------------------------------

    async def list_messages(self, request: Request) -> Response:
        query = request.query_params
        try:
            limit = _int_param(query.get("limit"), "limit", default=50, low=1, high=MAX_PAGE)
            offset = _int_param(query.get("offset"), "offset", default=0, low=0, high=MAX_OFFSET)
        except EmailValidationError as exc:
            return JSONResponse(validation_failed(exc.errors), 400)
        total, messages = self.store.messages(
            limit=limit,
            offset=offset,
            to=query.get("to") or None,
            subject=query.get("subject") or None,
            batch_id=query.get("batchId") or query.get("batch_id") or None,
        )
        return JSONResponse(
            {"total": total, "limit": limit, "offset": offset, "messages": messages}
        )

    async def get_message(self, request: Request) -> Response:
        msg = self.store.get(request.path_params["id"])
        if msg is None:
            return JSONResponse(error_body(404, "Message not found"), 404)
        return JSONResponse(msg)

    async def delete_messages(self, request: Request) -> Response:
        return JSONResponse({"success": True, "deleted": self.store.delete()})

    async def delete_message(self, request: Request) -> Response:
        if not self.store.delete(request.path_params["id"]):
            return JSONResponse(error_body(404, "Message not found"), 404)
        return JSONResponse({"success": True, "deleted": 1})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.store.stats())

    async def reset(self, request: Request) -> Response:
        self.store.reset()
        if self.webhooks is not None:
            self.webhooks.clear_rules()
        return JSONResponse({"success": True})

    async def message_events(self, request: Request) -> Response:
        msg_id = request.path_params["id"]
        if self.store.get(msg_id) is None:
            return JSONResponse(error_body(404, "Message not found"), 404)
        events = self.webhooks.events(msg_id) if self.webhooks is not None else []
        return JSONResponse({"emailId": msg_id, "events": events})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    # -- pages ---------------------------------------------------------------

    async def inbox_page(self, request: Request) -> Response:
        query = request.query_params
        try:
            page = _int_param(query.get("page"), "page", default=1, low=1, high=10**9)
            refresh = _int_param(query.get("refresh"), "refresh", default=pages.REFRESH,
                                 low=0, high=3600)
        except EmailValidationError as exc:
            return _page(pages.bad_request(exc.errors), 400)
        search, key = (query.get("q") or "").strip(), (query.get("key") or "").strip()
        total, messages = self.store.messages(
            limit=pages.PER_PAGE, offset=(page - 1) * pages.PER_PAGE,
            search=search or None, idempotency_key=key or None,
        )
        if key and total == 1 and not search and page == 1:
            # A task's "email in the inbox" link: the email itself, not a one-row list.
            return RedirectResponse(f"/inbox/{quote(messages[0]['id'], safe='')}",
                                    status_code=303)
        rejected, _ = self.store.rejections(limit=1)
        view = pages.InboxView(total=total, messages=messages, page=page, search=search,
                               key=key, refresh=refresh, token=self.page_token,
                               rejected=rejected,
                               done=(self.notices.get(query.get("notice")) or ("", ""))[1])
        return _page(pages.inbox(view))

    async def message_page(self, request: Request) -> Response:
        msg = self.store.get(request.path_params["id"])
        if msg is None:
            return _page(pages.not_found(request.path_params["id"]), 404)
        tab = request.query_params.get("tab") or (
            "html" if msg.get("renderedHtml") is not None else "text")
        width = request.query_params.get("width") or "desktop"
        if tab not in pages.TABS or width not in pages.WIDTHS:
            errors = [{"field": "tab", "message": f"one of {', '.join(pages.TABS)}"}]
            return _page(pages.bad_request(errors), 400)
        newer, older = self.store.neighbours(msg["id"])
        remote = request.query_params.get("remote") == "1"
        events = self.webhooks.events(msg["id"]) if self.webhooks is not None else None
        return _page(pages.message(msg, tab=tab, width=width, newer=newer, older=older,
                                   token=self.page_token, dashboard_url=self.dashboard_url,
                                   remote=remote, events=events), remote_content=remote)

    async def rejected_page(self, request: Request) -> Response:
        try:
            page = _int_param(request.query_params.get("page"), "page", default=1, low=1,
                              high=10**9)
        except EmailValidationError as exc:
            return _page(pages.bad_request(exc.errors), 400)
        total, rows = self.store.rejections(limit=pages.PER_PAGE,
                                            offset=(page - 1) * pages.PER_PAGE)
        return _page(pages.rejected(total, rows, page=page, dashboard_url=self.dashboard_url))

    async def _form_ok(self, request: Request) -> dict[str, str] | None:
        """The posted form if it carries this sandbox's page token, else ``None``."""
        body = await request.body()
        if len(body) > 4096:
            return None
        try:
            form = dict(parse_qsl(body.decode("utf-8")))
        except (UnicodeDecodeError, ValueError):
            return None
        token = form.get("token", "")
        return form if hmac.compare_digest(token.encode(), self.page_token.encode()) else None

    async def delete_page(self, request: Request) -> Response:
        if await self._form_ok(request) is None:
            return _page(pages.forbidden(), 403)
        message_id = request.path_params["id"]
        deleted = self.store.delete(message_id)
        done = "Deleted 1 email." if deleted else "That email was already gone."
        return RedirectResponse("/inbox?" + urlencode({"notice": self.notices.add(done)}),
                                status_code=303)

    async def clear_page(self, request: Request) -> Response:
        form = await self._form_ok(request)
        if form is None:
            return _page(pages.forbidden(), 403)
        if form.get("confirm") != "yes":
            return RedirectResponse("/inbox", status_code=303)
        deleted = self.store.delete()
        done = f"Deleted {deleted} email{'s' if deleted != 1 else ''}."
        return RedirectResponse("/inbox?" + urlencode({"notice": self.notices.add(done)}),
                                status_code=303)


#: What a previewed email may load: nothing from another host unless the reader asked
#: for this email's remote content (as mail clients do: a tracking pixel would fire from
#: the developer's browser). The ``srcdoc`` iframe inherits the page's policy.
_LOCAL_CONTENT = "img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self' data:"
_REMOTE_CONTENT = ("img-src 'self' data: http: https:; "
                   "style-src 'self' 'unsafe-inline' http: https:; "
                   "font-src 'self' data: http: https:")


def _page(content: str, status: int = 200, *, remote_content: bool = False) -> HTMLResponse:
    # Captured HTML is shown only inside <iframe sandbox> (no script runs there); our
    # pages run one script, our own /live.js (no inline script, no eval, no other
    # origin), and the only forms post back here (delete, clear all).
    csp = (f"default-src 'self'; {_REMOTE_CONTENT if remote_content else _LOCAL_CONTENT}; "
           "script-src 'self'; connect-src 'self'; media-src 'none'; object-src 'none'; "
           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return HTMLResponse(content, status, headers={"Content-Security-Policy": csp})


_KINDS = {400: "validation", 401: "auth", 409: "idempotency", 429: "rate limit"}


def refusal(response: Response, raw: bytes, path: str, idempotency_key: str | None
            ) -> dict[str, Any]:
    """What the Rejected view shows of one refused request: when, what, why, to whom."""
    try:
        answer = json.loads(bytes(response.body))
    except (ValueError, TypeError):
        answer = None
    reason = ""
    if isinstance(answer, dict):
        # Either shape AutoSend has documented, or a chaos rule's own body: the legacy
        # top-level message/errors, the current error: {message, details}, a bare string.
        nested = answer.get("error")
        nested = nested if isinstance(nested, dict) else {"message": nested}
        reason = str(answer.get("message") or nested.get("message") or "")
        details = answer.get("errors") or nested.get("details")
        if not reason:
            reason = json.dumps(answer, sort_keys=True)[:200]
        if isinstance(details, list):
            parts = [f"{d.get('field')}: {d.get('message')}" for d in details
                     if isinstance(d, dict)]
            reason = f"{reason} ({'; '.join(parts)})" if parts else reason
    if response.headers.get("x-sandbox-chaos"):
        kind = "chaos"
    else:
        kind = _KINDS.get(response.status_code, "error")
    payload, errors = _parse_json(raw) if raw and len(raw) <= 1_000_000 else (None, ["skip"])
    to = subject = None
    if not errors and isinstance(payload, dict):
        target = payload.get("to")
        if isinstance(target, dict) and isinstance(target.get("email"), str):
            to = target["email"]
        elif isinstance(payload.get("recipients"), list):
            to = f"{len(payload['recipients'])} recipients"
        subject = payload.get("subject") if isinstance(payload.get("subject"), str) else None
    return {
        "status": response.status_code,
        "kind": kind,
        "reason": reason[:500],
        "endpoint": path,
        "to": to,
        "subject": subject,
        "idempotencyKey": (idempotency_key or "").strip()[:256] or None,
        "retryAfter": answer.get("retryAfter") if isinstance(answer, dict) else None,
    }


_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,30}\s*")


def _int_param(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    """A query parameter as an integer in ``[low, high]`` (ASCII digits, optional sign)."""
    if value is None or value == "":
        return default
    # int() would also take "1_000" and non-ASCII digits; 30 digits is beyond any bound here.
    number = int(value) if _INTEGER.fullmatch(value) else low - 1
    if not low <= number <= high:
        message = f"must be an integer between {low} and {high}"
        raise EmailValidationError([{"field": name, "message": message}])
    return number


_CHAOS_KEYS = {
    "fail_next": "fail_next",
    "failNext": "fail_next",
    "status": "status",
    "delay_ms": "delay_ms",
    "delayMs": "delay_ms",
    "body": "body",
    "retry_after": "retry_after",
    "retryAfter": "retry_after",
}


def _chaos_rule(payload: Any) -> ChaosRule:
    """``{"fail_next", "status", "delay_ms", "body", "retry_after"}`` as a rule (camelCase too)."""
    if not isinstance(payload, dict):
        raise EmailValidationError([{"field": "body", "message": "must be a JSON object"}])
    errors: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in payload.items():
        if key not in _CHAOS_KEYS:
            errors.append({"field": key, "message": "unknown chaos option"})
        else:
            values[_CHAOS_KEYS[key]] = value

    def integer(name: str, low: int, high: int, *, nullable: bool) -> None:
        value = values.get(name)
        if value is None and nullable:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors.append({"field": name, "message": f"must be an integer from {low} to {high}"})

    values.setdefault("fail_next", 1)
    values.setdefault("status", 500)
    values.setdefault("delay_ms", 0)
    integer("fail_next", 1, 1_000_000, nullable=False)
    integer("status", 200, 599, nullable=True)
    integer("delay_ms", 0, MAX_CHAOS_DELAY_MS, nullable=False)
    integer("retry_after", 0, 86_400, nullable=True)
    if errors:
        raise EmailValidationError(errors)
    return ChaosRule(
        remaining=values["fail_next"],
        status=values["status"],
        delay_ms=values["delay_ms"],
        body=values.get("body"),
        retry_after=values.get("retry_after"),
    )


def _bounce_rule(payload: dict[str, Any]) -> BounceRule:
    """``{"bounce": "to@example.com" | "*", "bounce_type": "Permanent", "fail_next": 1}``."""
    errors: list[dict[str, str]] = []
    unknown = sorted(set(payload) - {"bounce", "bounce_type", "bounceType", "fail_next",
                                     "failNext"})
    errors += [{"field": key, "message": "unknown bounce rule option"} for key in unknown]
    to = payload.get("bounce")
    if not isinstance(to, str) or not (to == "*" or "@" in to):
        errors.append({"field": "bounce", "message": "an email address, or * for anyone"})
    kind = payload.get("bounce_type", payload.get("bounceType", "Permanent"))
    if kind not in ("Permanent", "Transient"):
        errors.append({"field": "bounce_type", "message": "Permanent or Transient"})
    count = payload.get("fail_next", payload.get("failNext", 1))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1_000_000:
        errors.append({"field": "fail_next", "message": "must be an integer from 1 to 1000000"})
    if errors:
        raise EmailValidationError(errors)
    return BounceRule(to=str(to), bounce_type=str(kind), remaining=int(count))


async def http_error(request: Request, exc: Exception) -> Response:
    """404/405 and friends: AutoSend's JSON under the API prefixes, plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(("/v1/", "/api/", "/_sandbox/")):
        message = exc.detail if isinstance(exc, BodyTooLarge) else None
        body = error_body(exc.status_code, message)
        return JSONResponse(body, exc.status_code, headers=exc.headers)
    return Response(exc.detail, exc.status_code, headers=exc.headers, media_type="text/plain")
