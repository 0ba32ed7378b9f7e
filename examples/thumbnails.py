"""A non-email task moved off the broker: product thumbnails (the saleor shape).

Before, on Celery with Redis and a worker::

    @shared_task(bind=True, autoretry_for=(CdnBusy,), retry_backoff=1, max_retries=4)
    def fetch_image(self, url): ...
    @shared_task
    def make_thumbnail(image, size): ...
    @shared_task
    def record_thumbnail(thumb, product_id): ...

    (fetch_image.s(url) | make_thumbnail.s(256) | record_thumbnail.s(product_id)).delay()

After: ``@shared_task`` becomes ``@qstash_task``; nothing else changes. Each step runs at
delivery on the app's receiver, through Celery's own tracer: ``autoretry_for`` retries a
busy CDN with Celery's backoff (``self.retry`` publishes the next attempt), each step's
result is the next step's first argument, and ``result.get()`` reads the last step's
return value from QStash's logs (``result_backend = "qstash://"``). Arguments and results
travel as JSON: a dict for the image, not a PIL object.

Run it offline: ``python -m examples.thumbnails``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celery import Celery

from celery_qstash import qstash_task

if TYPE_CHECKING:
    from celery_qstash.testing import DevServers

app = Celery("shop")
app.conf.result_backend = "qstash://"

PRODUCTS: dict[int, dict[str, Any]] = {7: {"name": "Mug", "thumbnail": None}}
#: How many more times the CDN answers "busy" (a transient fault).
CDN_BUSY = {"left": 1}


class CdnBusy(Exception):
    pass


@qstash_task(bind=True, autoretry_for=(CdnBusy,), retry_backoff=1, retry_jitter=False,
             max_retries=4, name="examples.thumbnails.fetch_image")
def fetch_image(self: Any, url: str) -> dict[str, Any]:
    if CDN_BUSY["left"] > 0:
        CDN_BUSY["left"] -= 1
        raise CdnBusy(url)
    return {"url": url, "width": 1024, "height": 768, "attempts": self.request.retries + 1}


@qstash_task(name="examples.thumbnails.make_thumbnail")
def make_thumbnail(image: dict[str, Any], size: int) -> dict[str, Any]:
    ratio = size / max(image["width"], image["height"])
    return {"url": f"{image['url']}?w={size}", "width": round(image["width"] * ratio),
            "height": round(image["height"] * ratio)}


@qstash_task(name="examples.thumbnails.record_thumbnail")
def record_thumbnail(thumb: dict[str, Any], product_id: int) -> str:
    PRODUCTS[product_id]["thumbnail"] = thumb["url"]
    return str(thumb["url"])


def on_product_saved(product_id: int, url: str) -> Any:
    return (fetch_image.s(url) | make_thumbnail.s(256) | record_thumbnail.s(product_id)).delay()


@contextmanager
def offline() -> Iterator[DevServers]:
    """The emulator and the app's receiver on loopback (real time: the retry is a second)."""
    from celery_qstash.testing import DevServers

    with DevServers() as servers, servers.receiver(app):
        servers.configure(app)
        yield servers


def main() -> None:
    with offline():
        started = time.monotonic()
        result = on_product_saved(7, "https://cdn.example/mug.jpg")
        print("thumbnail:", result.get(timeout=30))
        print(f"product 7: {PRODUCTS[7]} ({time.monotonic() - started:.1f}s, one CDN retry)")


if __name__ == "__main__":
    main()
