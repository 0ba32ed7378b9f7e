"""``Upstash-Signature``: QStash's JWT, checked as the official SDK checks it, on the
receiver's own clock.

The same checks as ``qstash.Receiver.verify`` (HS256 with the current key, then the next
one; issuer ``Upstash``; ``sub`` is the URL QStash called; ``body`` is the base64url
SHA-256 of the raw body), with PyJWT doing the cryptography. The one difference: ``nbf``
and ``exp`` are compared with the receiver's clock (a parameter), the same clock its
duplicate ledger keeps time with, so no token outlives its ledger entry, and a test that
moves time moves both. A token whose claims are not the types QStash sends (a number
where a string belongs) is simply not valid: never an exception.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from collections.abc import Iterable

import jwt

__all__ = ["verify"]

log = logging.getLogger("celery_qstash.receiver")


def _body_hash(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")


def verify(
    signature: str, body: bytes, url: str, keys: Iterable[str], *, now: float,
    tolerance: float = 0,
) -> bool:
    """Is ``signature`` QStash's, for this body and URL, valid at ``now``?"""
    for key in keys:
        try:
            claims = jwt.decode(
                signature, key, algorithms=["HS256"], issuer="Upstash",
                options={"require": ["iss", "sub", "exp", "nbf"],
                         "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            continue  # another key may have signed it (rotation)
        return _claims_hold(claims, body, url, now, tolerance)
    log.info("QStash delivery refused: no signing key verifies the signature")
    return False


def _claims_hold(claims: dict[str, object], body: bytes, url: str, now: float,
                 tolerance: float) -> bool:
    nbf, exp, sub, digest = claims.get("nbf"), claims.get("exp"), claims.get("sub"), \
        claims.get("body")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (nbf, exp)):
        # NaN compares false both ways: an "exp": NaN token would never expire.
        log.info("QStash delivery refused: nbf/exp are not finite numbers")
        return False
    assert isinstance(nbf, (int, float)) and isinstance(exp, (int, float))
    if now + tolerance < nbf or now - tolerance >= exp:
        log.info("QStash delivery refused: the signature is not valid now (nbf/exp)")
        return False
    if sub != url:
        log.info("QStash delivery refused: signed for %r, received at %r", sub, url)
        return False
    if not isinstance(digest, str) or digest.rstrip("=") != _body_hash(body):
        log.info("QStash delivery refused: the body is not the one signed")
        return False
    return True
