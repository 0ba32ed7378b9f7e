"""The Upstash-Signature JWT, checked with the official SDK's Receiver."""

from __future__ import annotations

import time

import jwt
import pytest
from qstash import Receiver
from qstash.errors import SignatureError

from celery_qstash.devserver import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY
from celery_qstash.local.emulator.signing import body_hash, generate_signing_key, sign


def test_claims_are_exactly_what_qstash_sends() -> None:
    token = sign(DEV_CURRENT_SIGNING_KEY, "https://api.example.com/x", b"hello", 1_800_000_000.5)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, DEV_CURRENT_SIGNING_KEY, algorithms=["HS256"],
                        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims["iss"] == "Upstash"
    assert claims["sub"] == "https://api.example.com/x"
    assert claims["iat"] == claims["nbf"] == 1_800_000_000
    assert claims["exp"] == 1_800_000_300
    assert claims["jti"].startswith("jwt_")
    assert claims["body"] == body_hash(b"hello")
    assert "aud" not in claims


def test_official_receiver_accepts_current_and_next_key_and_rejects_wrong_url() -> None:
    # The SDK's Receiver checks exp/nbf against the real clock, so sign at "now".
    receiver = Receiver(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)
    for key in (DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY):
        token = sign(key, "https://a.example/x", b'{"a":1}', time.time())
        receiver.verify(signature=token, body='{"a":1}', url="https://a.example/x")
    token = sign(DEV_CURRENT_SIGNING_KEY, "https://a.example/x", b"body", time.time())
    with pytest.raises(SignatureError):
        receiver.verify(signature=token, body="body", url="https://other.example/x")
    with pytest.raises(SignatureError):
        receiver.verify(signature=token, body="tampered", url="https://a.example/x")
    with pytest.raises(SignatureError):
        Receiver(generate_signing_key(), generate_signing_key()).verify(
            signature=token, body="body")


def test_generated_keys_look_like_qstash_keys() -> None:
    key = generate_signing_key()
    assert key.startswith("sig_") and len(key) == 32
    assert key != generate_signing_key()
