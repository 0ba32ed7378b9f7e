"""The one redaction rule: which header names carry credentials, and how they are shown.

Used wherever headers or URLs reach a person: the CLI, the dashboard, errors, and by the
local servers (the emulator keeps such headers apart and shows them redacted in its
logs, DLQ, URL groups and schedules, wherever they came from, while still delivering
them; the sandbox's inbox hides them).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["REDACTED", "is_secret_name", "redact_headers", "safe_url"]


#: ``Authorization``, ``Proxy-Authorization``, ``Cookie``/``Set-Cookie``, and any name that
#: mentions a key, a token, a secret, a password or a signature.
_SECRET_HEADER = re.compile(r"authorization|cookie|key|token|secret|password|signature", re.I)
REDACTED = "[redacted]"


#: Names that match the pattern but that we set ourselves with a public value (the task id).
_PUBLIC_NAMES = frozenset({"idempotency-key", "upstash-forward-idempotency-key"})


@lru_cache(maxsize=1024)  # the same few names come with every message the emulator takes
def is_secret_name(name: str) -> bool:
    """Does a header or parameter name suggest its value is a secret?"""
    return name.lower() not in _PUBLIC_NAMES and bool(_SECRET_HEADER.search(name))


def redact_headers(headers: Any) -> dict[str, str]:
    """Headers as ``name -> value`` with every secret-bearing value replaced.

    A header whose name mentions authorization, cookie, key, token, secret, password or
    signature is never shown, whatever its value (QStash's own ``REDACTED:<hash>``
    included: the hash of a short key can be brute-forced).
    """
    out: dict[str, str] = {}
    if not isinstance(headers, dict):
        return out
    for name, value in headers.items():
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        out[str(name)] = REDACTED if is_secret_name(str(name)) else text
    return out


def safe_url(url: str) -> str:
    """A destination URL fit to show: no userinfo, no fragment, secret-looking query
    parameters (``api_key``, ``token``...) replaced by :data:`REDACTED`."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    pairs = [(k, REDACTED if is_secret_name(k) else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(pairs), ""))
