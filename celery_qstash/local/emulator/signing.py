"""The ``Upstash-Signature`` JWT that QStash puts on every delivery.

HS256 with the user's current signing key as the HMAC secret. Claims follow
qstash-api.md §4: iss ``Upstash``, sub = the URL as the publisher gave it (never
the routed local URL: receivers verify against their public URL), exp = now +
300 s, nbf = iat = now, jti ``jwt_<random>``, body = base64url(sha256(body)).
No ``aud`` claim: a non-empty one makes PyJWT reject the token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

import jwt

__all__ = ["body_hash", "generate_signing_key", "sign"]

TOKEN_LIFETIME_SECONDS = 300
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def body_hash(body: bytes) -> str:
    """base64url(sha256(body)), with padding as in the QStash docs sample."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii")


def sign(signing_key: str, url: str, body: bytes, now: float) -> str:
    """A signed token for a delivery of ``body`` to ``url`` at time ``now`` (epoch s)."""
    issued = int(now)
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": issued + TOKEN_LIFETIME_SECONDS,
        "nbf": issued,
        "iat": issued,
        "jti": "jwt_" + secrets.token_hex(12),
        "body": body_hash(body),
    }
    return jwt.encode(claims, signing_key, algorithm="HS256")


def generate_signing_key() -> str:
    """A fresh key shaped like QStash's (``sig_`` + 28 base58 characters)."""
    return "sig_" + "".join(secrets.choice(_ALPHABET) for _ in range(28))
