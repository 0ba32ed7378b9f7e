"""Cost of emulator ``tick()`` with N = 1,000 vs 10,000 messages on one flow-control key.

Flow control parks a key's waiting messages with one UPDATE and wakes them a slot
(or a rate period) at a time, so the first tick is linear in the backlog and every
later tick costs the same whatever the backlog (ratio close to 1). Before, each
waiting row ran its own in-flight COUNT (quadratic: ~12 s per tick at N = 10,000).
Deliveries go to an in-process mock transport (no network).
Run: ``python benchmarks/emulator_flow.py``.
"""

from __future__ import annotations

import time

import httpx

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import Emulator
from celery_qstash.local.emulator.publish import parse_publish_headers

SIZES = (1_000, 10_000)
STEADY_TICKS = 50
START = 1_800_000_000.0
FLOWS = {
    "parallelism=1": "parallelism=1",
    "rate=1/s": "rate=1,period=1s",
}


def _client() -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))


def measure(count: int, flow: str) -> tuple[float, float]:
    """(first tick, mean later tick) in seconds; each tick delivers one message."""
    emulator = Emulator(clock=FakeClock(START), http_client_factory=_client)
    options = parse_publish_headers(
        [("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", flow)], b"{}")
    store = emulator.store
    now_ms = store.now_ms()
    # One transaction for the whole fill keeps setup fast; ticks use the public path.
    with store._tx() as cur:
        for _ in range(count):
            store._publish(cur, "defaultUser", "https://example.invalid/x", options,
                           queue=None, schedule_id=None, caller_ip=None, kind="message",
                           now_ms=now_ms)
    started = time.perf_counter()
    assert emulator.tick() == 1
    first = time.perf_counter() - started
    total = 0.0
    for _ in range(STEADY_TICKS):
        emulator.clock.advance(1.0)
        started = time.perf_counter()
        assert emulator.tick() == 1
        total += time.perf_counter() - started
    emulator.close()
    return first, total / STEADY_TICKS


def main() -> None:
    small, large = SIZES
    print(f"{'flow':<15} {'tick':<7} {f'N={small:,} (ms)':>16} {f'N={large:,} (ms)':>17}"
          f" {'ratio':>7}")
    for label, flow in FLOWS.items():
        small_first, small_steady = measure(small, flow)
        large_first, large_steady = measure(large, flow)
        for name, a, b in (("first", small_first, large_first),
                           ("later", small_steady, large_steady)):
            print(f"{label:<15} {name:<7} {a * 1e3:>16.2f} {b * 1e3:>17.2f} {b / a:>7.2f}")
    print(f"(N grows {large // small}x: a ratio near {large // small} is linear, "
          "near 1 is constant)")


if __name__ == "__main__":
    main()
