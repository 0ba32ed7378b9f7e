"""Cost of one emulator ``tick()`` with 0 vs 100,000 pending future-delayed messages.

The delivery loop finds due work through the ``messages(due_ms)`` index, so a
tick with nothing due should cost the same no matter how many messages wait in
the future (ratio close to 1). Run: ``python benchmarks/emulator_tick.py``.
"""

from __future__ import annotations

import time
import tracemalloc

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import Emulator
from celery_qstash.local.emulator.publish import parse_publish_headers

PENDING = 100_000
TICKS = 2_000
START = 1_800_000_000.0


def fill(emulator: Emulator, count: int) -> None:
    options = parse_publish_headers([("Upstash-Delay", "1d")], b"{}")
    store = emulator.store
    now_ms = store.now_ms()
    # One transaction for the whole fill keeps setup fast; ticks use the public path.
    with store._tx() as cur:
        for _ in range(count):
            store._publish(cur, "defaultUser", "https://example.invalid/x", options,
                           queue=None, schedule_id=None, caller_ip=None, kind="message",
                           now_ms=now_ms)


def measure(pending: int) -> tuple[float, int]:
    emulator = Emulator(clock=FakeClock(START))
    fill(emulator, pending)
    emulator.tick()  # warm up caches
    tracemalloc.start()
    started = time.perf_counter()
    for _ in range(TICKS):
        assert emulator.tick() == 0
    elapsed = (time.perf_counter() - started) / TICKS
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    emulator.close()
    return elapsed, peak


def main() -> None:
    empty_time, empty_peak = measure(0)
    full_time, full_peak = measure(PENDING)
    print(f"{'pending':>10} {'tick (us)':>12} {'peak (KiB)':>12}")
    print(f"{0:>10} {empty_time * 1e6:>12.1f} {empty_peak / 1024:>12.1f}")
    print(f"{PENDING:>10} {full_time * 1e6:>12.1f} {full_peak / 1024:>12.1f}")
    peak_ratio = full_peak / max(1, empty_peak)
    print(f"ratio (time) {full_time / empty_time:.2f}   ratio (peak) {peak_ratio:.2f}")


if __name__ == "__main__":
    main()
