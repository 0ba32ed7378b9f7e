"""Well-known values of the local development setup.

The token and signing keys are the official ``qstash dev`` server's public,
deterministic dev-only credentials, so an app configured for ``qstash dev``
works unchanged against our emulator. They are not secrets.
"""

from __future__ import annotations

__all__ = [
    "AUTOSEND_URL",
    "DASHBOARD_PORT",
    "DEV_AUTOSEND_API_KEY",
    "DEV_CURRENT_SIGNING_KEY",
    "DEV_NEXT_SIGNING_KEY",
    "DEV_TOKEN",
    "DEV_USERS",
    "DEV_WEBHOOK_SECRET",
    "EMULATOR_PORT",
    "SANDBOX_PORT",
]

DEV_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"

#: token -> (user id, current signing key, next signing key), as in ``qstash dev``.
DEV_USERS: dict[str, tuple[str, str, str]] = {
    DEV_TOKEN: ("defaultUser", DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY),
    "eyJVc2VySUQiOiJ0ZXN0VXNlcjEiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9": (
        "testUser1",
        "sig_7GVPjvuwsfqF65iC8fSrs1dfYruM",
        "sig_5NoELc3EFnZn4DVS5bDs2Nk4b7Ua",
    ),
    "eyJVc2VySUQiOiJ0ZXN0VXNlcjIiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9": (
        "testUser2",
        "sig_6jWGaWRxHsw4vMSPJprXadyvrybF",
        "sig_7qHbvhmahe5GwfePDiS5Lg3pi6Qx",
    ),
    "eyJVc2VySUQiOiJ0ZXN0VXNlcjMiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9": (
        "testUser3",
        "sig_5T8FcSsynBjn9mMLBsXhpacRovJf",
        "sig_7GFR4YaDshFcqsxWRZpRB161jguD",
    ),
}

#: The sandbox accepts any bearer key by default; this one is what ``celery-qstash dev`` prints.
DEV_AUTOSEND_API_KEY = "AS_sandbox_dev_key"

#: What ``celery-qstash dev`` signs the sandbox's webhooks with (public, dev only).
DEV_WEBHOOK_SECRET = "whsec_celery_qstash_dev_webhooks"

AUTOSEND_URL = "https://api.autosend.com"
#: ``qstash dev``'s own port, which ``QSTASH_DEV=true`` and the SDKs' dev mode point at.
EMULATOR_PORT = 8080
#: Not Mailpit's 8025 nor Flower's 5555: a project often runs those beside this one (the
#: Django app's mail in Mailpit, its remaining Celery workers in Flower). 86 followed by
#: the last two digits of the tool each one imitates.
SANDBOX_PORT = 8625
DASHBOARD_PORT = 8655
