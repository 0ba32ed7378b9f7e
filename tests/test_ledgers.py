"""The delivery ledger's contract, run against every implementation.

One suite, three ledgers: :class:`MemoryLedger` (time is a :class:`FakeClock`),
:class:`RedisLedger` on the session's own ``redis-server`` and :class:`DjangoCacheLedger`
on Django's ``LocMemCache``. The last two expire keys on the server's clock, not on the
``now`` they are passed, so for them "after the lease" means waiting (bounded by
``wait_until``) until the server has dropped the key; they get short leases for it.
Then what only a shared ledger promises (a release never drops another process's
lease), ``ledger_from_url``, and two processes racing on one Redis.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
from celery import Celery
from waiting import wait_until

from celery_qstash.errors import ConfigurationError
from celery_qstash.receiver.ledger import (
    Claim,
    DeliveryLedger,
    MemoryLedger,
    claim_once,
    ledger_from_settings,
)
from celery_qstash.receiver.ledgers import DjangoCacheLedger, RedisLedger, ledger_from_url
from celery_qstash.testing import FakeClock

if TYPE_CHECKING:
    from conftest import RedisServer

#: A lease or window the test outlives (Django's caches round it up to one second).
SHORT = 0.2
#: A lease or window no test outlives.
LONG = 600.0

LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ledgers"}
DUMMY = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}


@dataclass
class Subject:
    """One implementation under test: ``make`` builds a ledger (for a shared one, another
    object on the same store, as another process would); ``clock`` gives ``now``."""

    make: Callable[..., DeliveryLedger]
    clock: FakeClock
    server_clock: bool

    def now(self) -> float:
        return self.clock.now()

    def after(self, seconds: float, attempt: Callable[[], Claim]) -> Claim:
        """``attempt()``'s answer once ``seconds`` have passed on the ledger's clock: the
        fake clock is moved; a server's clock is waited on until ``attempt`` runs."""
        if not self.server_clock:
            self.clock.advance(seconds)
            return attempt()
        claim: Claim = wait_until(
            lambda: attempt() == "run" and "run", f"the server to expire a {seconds} s key"
        )
        return claim


@pytest.fixture
def django_caches(django_settings: None) -> Iterator[None]:
    """``ledger`` (a LocMemCache), ``dummy`` (a DummyCache) and a LocMemCache default."""
    from django.core.cache import caches
    from django.test import override_settings

    with override_settings(CACHES={"default": LOCMEM, "ledger": LOCMEM, "dummy": DUMMY}):
        yield
        caches["ledger"].clear()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: the session's Redis outlives every test."""
    return f"test:{uuid.uuid4().hex[:12]}:"


def _memory(request: pytest.FixtureRequest, prefix: str) -> Subject:
    return Subject(lambda window=LONG: MemoryLedger(window=window), FakeClock(), False)


def _redis(request: pytest.FixtureRequest, prefix: str) -> Subject:
    url = request.getfixturevalue("redis_url")
    return Subject(
        lambda window=LONG: RedisLedger.from_url(url, window=window, prefix=prefix),
        FakeClock(),
        True,
    )


def _django_cache(request: pytest.FixtureRequest, prefix: str) -> Subject:
    request.getfixturevalue("django_caches")
    return Subject(
        lambda window=LONG: DjangoCacheLedger("ledger", window=window, prefix=prefix),
        FakeClock(),
        True,
    )


@pytest.fixture(params=[_memory, _redis, _django_cache], ids=["memory", "redis", "django"])
def subject(request: pytest.FixtureRequest, prefix: str) -> Subject:
    make: Callable[[pytest.FixtureRequest, str], Subject] = request.param
    return make(request, prefix)


@pytest.fixture(params=[_redis, _django_cache], ids=["redis", "django"])
def shared(request: pytest.FixtureRequest, prefix: str) -> Subject:
    make: Callable[[pytest.FixtureRequest, str], Subject] = request.param
    return make(request, prefix)


# -- the contract --------------------------------------------------------------------------


def test_run_then_busy_while_running_then_done_once_finished(subject: Subject) -> None:
    ledger = subject.make()
    now = subject.now()
    assert ledger.begin("msg_1", now, LONG) == "run"
    assert ledger.begin("msg_1", now, LONG) == "busy"
    assert ledger.begin("msg_2", now, LONG) == "run"  # keys are independent
    ledger.finish("msg_1", now)
    assert ledger.begin("msg_1", now, LONG) == "done"
    assert ledger.begin("msg_1", now, LONG) == "done"
    assert ledger.begin("msg_2", now, LONG) == "busy"


def test_release_lets_the_next_delivery_run(subject: Subject) -> None:
    ledger = subject.make()
    now = subject.now()
    assert ledger.begin("msg_1", now, LONG) == "run"
    ledger.release("msg_1")
    assert ledger.begin("msg_1", now, LONG) == "run"  # QStash's retry runs the body again
    ledger.finish("msg_1", now)
    assert ledger.begin("msg_1", now, LONG) == "done"


def test_finish_after_release_records_done_and_release_after_finish_keeps_it(
    subject: Subject,
) -> None:
    ledger = subject.make()
    now = subject.now()
    assert ledger.begin("msg_1", now, LONG) == "run"
    ledger.release("msg_1")
    ledger.finish("msg_1", now)
    assert ledger.begin("msg_1", now, LONG) == "done"
    ledger.release("msg_1")  # a release never drops a done marker
    assert ledger.begin("msg_1", now, LONG) == "done"
    ledger.release("never_begun")  # nothing held: nothing happens
    assert ledger.begin("never_begun", now, LONG) == "run"


def test_an_expired_lease_lets_a_new_delivery_in(subject: Subject) -> None:
    """A process killed mid-body never releases: its lease runs out by itself."""
    ledger = subject.make()
    assert ledger.begin("msg_1", subject.now(), SHORT) == "run"
    assert subject.after(SHORT, lambda: ledger.begin("msg_1", subject.now(), LONG)) == "run"
    assert ledger.begin("msg_1", subject.now(), LONG) == "busy"  # the new lease holds


def test_a_done_marker_expires_after_the_window(subject: Subject) -> None:
    ledger = subject.make(window=SHORT)
    assert ledger.begin("msg_1", subject.now(), LONG) == "run"
    ledger.finish("msg_1", subject.now())
    assert subject.after(SHORT, lambda: ledger.begin("msg_1", subject.now(), LONG)) == "run"


def _race(ledger: DeliveryLedger, key: str, now: float, threads: int = 32) -> Counter[Claim]:
    """Every thread's answer to ``begin(key)``, all released at once by a barrier."""
    barrier = threading.Barrier(threads)
    answers: list[Claim] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        claim = ledger.begin(key, now, LONG)
        with lock:
            answers.append(claim)

    started = [threading.Thread(target=race) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(30)
    return Counter(answers)


def test_32_threads_racing_on_one_key_get_exactly_one_run(subject: Subject) -> None:
    ledger = subject.make()
    for round_ in range(5):
        assert _race(ledger, f"race-{round_}", subject.now()) == {"run": 1, "busy": 31}, round_


def test_claim_once_takes_a_key_once(subject: Subject) -> None:
    ledger = subject.make()
    assert claim_once(ledger, "jti_1", subject.now())
    assert not claim_once(ledger, "jti_1", subject.now())


# -- what only a shared ledger promises ----------------------------------------------------


def test_a_lease_or_window_must_be_a_positive_number_of_seconds(shared: Subject) -> None:
    ledger = shared.make()
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="lease must be a positive number of seconds"):
            ledger.begin("msg_1", shared.now(), bad)
        with pytest.raises(ValueError, match="window must be a positive number of seconds"):
            shared.make(window=bad)


def test_a_late_release_never_drops_the_lease_another_process_took(shared: Subject) -> None:
    """Process A's body ran past its lease; B took the key; A's release leaves B's lease."""
    a, b, c = shared.make(), shared.make(), shared.make()
    now = shared.now()
    assert a.begin("msg_1", now, SHORT) == "run"
    assert shared.after(SHORT, lambda: b.begin("msg_1", now, LONG)) == "run"
    a.release("msg_1")
    assert c.begin("msg_1", now, LONG) == "busy"
    b.release("msg_1")
    assert c.begin("msg_1", now, LONG) == "run"


def test_a_finish_is_seen_by_every_process(shared: Subject) -> None:
    a, b = shared.make(), shared.make()
    now = shared.now()
    assert a.begin("msg_1", now, LONG) == "run"
    assert b.begin("msg_1", now, LONG) == "busy"
    b.release("msg_1")  # b holds nothing: a's lease stays
    assert b.begin("msg_1", now, LONG) == "busy"
    a.finish("msg_1", now)
    assert b.begin("msg_1", now, LONG) == "done"


def test_redis_keys_expire_after_the_lease_and_the_window_on_the_server(
    redis_url: str, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    ledger = RedisLedger(client, window=90.0, prefix=prefix)
    assert ledger.begin("msg_1", 0.0, 30.0) == "run"
    assert 0 < client.pttl(f"{prefix}msg_1") <= 30_000
    lease = client.get(f"{prefix}msg_1")
    assert isinstance(lease, bytes) and lease.startswith(b"lease:")
    ledger.finish("msg_1", 0.0)
    assert 30_000 < client.pttl(f"{prefix}msg_1") <= 90_000
    assert client.get(f"{prefix}msg_1") == b"done"
    assert client.keys("msg_1") == []  # nothing outside the prefix


def test_redis_ledger_reads_a_decoding_client(redis_url: str, prefix: str) -> None:
    ledger = RedisLedger(redis.Redis.from_url(redis_url, decode_responses=True), prefix=prefix)
    assert ledger.begin("msg_1", 0.0, LONG) == "run"
    assert ledger.begin("msg_1", 0.0, LONG) == "busy"
    ledger.finish("msg_1", 0.0)
    assert ledger.begin("msg_1", 0.0, LONG) == "done"


def test_django_ledger_rounds_a_fraction_of_a_second_up(
    django_caches: None, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Django's Redis and Memcached backends truncate a timeout to whole seconds: a
    0.2 s lease would be stored with 0, which those backends take for "expire now"."""
    from django.core.cache import caches

    cache = caches["ledger"]  # this thread's, the one the ledger uses here
    timeouts: list[tuple[str, Any]] = []
    for method in ("add", "set"):
        real = getattr(cache, method)

        def spy(key: str, value: Any, timeout: Any, real: Any = real, method: str = method) -> Any:
            timeouts.append((method, timeout))
            return real(key, value, timeout=timeout)

        monkeypatch.setattr(cache, method, spy)
    ledger = DjangoCacheLedger("ledger", window=0.5, prefix=prefix)
    assert ledger.begin("msg_1", 0.0, 0.2) == "run"
    assert ledger.begin("msg_2", 0.0, 2.5) == "run"
    ledger.finish("msg_1", 0.0)
    assert timeouts == [("add", 1), ("add", 3), ("set", 1)]


# -- ledger_from_url and the setting -------------------------------------------------------


def test_ledger_from_url_reads_redis_unix_and_django_urls(
    redis_server: RedisServer, django_caches: None
) -> None:
    for url in (redis_server.url, f"unix://{redis_server.socket}?db=0"):
        ledger = ledger_from_url(url)
        assert isinstance(ledger, RedisLedger)
        key = uuid.uuid4().hex
        assert ledger.begin(key, 0.0, LONG) == "run"
        assert ledger.begin(key, 0.0, LONG) == "busy"
    tls = ledger_from_url("rediss://:pw@cache.example:6380/2", window=30.0)
    assert isinstance(tls, RedisLedger) and tls.window == 30.0
    pool = tls.client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["db"] == 2
    django_ledger = ledger_from_url("django://ledger")
    assert isinstance(django_ledger, DjangoCacheLedger) and django_ledger.alias == "ledger"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("memcached://127.0.0.1:11211", "unsupported ledger URL (memcached://)"),
        ("127.0.0.1:6379", "unsupported ledger URL (no scheme)"),
        ("django://", "expected django://<cache alias>"),
        ("django://default/extra", "expected django://<cache alias>"),
        ("django://nope", "no Django cache named 'nope'"),
        ("django://dummy", "DummyCache, which stores nothing"),
        ("redis://:s3cret-pass@cache.example:notaport/0", "redis-py cannot read this URL"),
    ],
)
def test_ledger_from_url_refuses_what_it_cannot_use_naming_the_setting(
    url: str, says: str, django_caches: None
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ledger_from_url(url)
    assert caught.value.setting == "qstash_ledger_url"
    assert says in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_ledger_from_settings_reads_qstash_ledger_url(app: Celery, redis_url: str) -> None:
    assert isinstance(ledger_from_settings(app), MemoryLedger)
    app.conf.qstash_ledger_url = redis_url
    assert isinstance(ledger_from_settings(app), RedisLedger)


# -- two processes, one Redis --------------------------------------------------------------

#: A process answering ``begin KEY`` / ``finish KEY`` / ``release KEY`` lines on stdin.
WORKER = """
import sys
from celery_qstash.receiver.ledgers import RedisLedger

ledger = RedisLedger.from_url(sys.argv[1], prefix=sys.argv[2])
for line in sys.stdin:
    action, key = line.split()
    if action == "begin":
        print(ledger.begin(key, 0.0, 600.0), flush=True)
    else:
        getattr(ledger, action)(key, *((0.0,) if action == "finish" else ()))
        print("ok", flush=True)
"""


class Worker:
    def __init__(self, url: str, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, url, prefix], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent,
        )

    def send(self, action: str, key: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{action} {key}\n")
        self.proc.stdin.flush()

    def answer(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line, f"the worker exited with {self.proc.wait(10)}"
        return line

    def call(self, action: str, key: str) -> str:
        self.send(action, key)
        return self.answer()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0


def _together(workers: list[Worker], key: str) -> list[str]:
    """Both processes begin ``key`` at once: each is told through its own pipe, one right
    after the other, and neither is waited for before the other is told."""
    for worker in workers:
        worker.send("begin", key)
    return [worker.answer() for worker in workers]


@pytest.mark.slow
def test_two_processes_beginning_one_key_at_once_get_exactly_one_run(
    redis_url: str, prefix: str
) -> None:
    pair = [Worker(redis_url, prefix), Worker(redis_url, prefix)]
    wins = Counter[int]()
    try:
        for round_ in range(200):
            key = f"msg_{round_}"
            workers = pair if round_ % 2 else pair[::-1]  # who is told first alternates
            claims = _together(workers, key)
            assert sorted(claims) == ["busy", "run"], (round_, claims)
            winner = workers[claims.index("run")]
            wins[pair.index(winner)] += 1
            if round_ % 3 == 0:  # it succeeded: both see done
                winner.call("finish", key)
                assert _together(workers, key) == ["done", "done"], round_
            else:  # it failed: QStash's retry runs it again, in exactly one of them
                winner.call("release", key)
                again = _together(workers, key)
                assert sorted(again) == ["busy", "run"], (round_, again)
                workers[again.index("run")].call("finish", key)
    finally:
        for worker in pair:
            worker.close()
    assert sum(wins.values()) == 200
