"""The cases of the official SDK suites that the emulator used to fail (issue 19), with
the official ``qstash`` package, through QStash's public API only: they run against the
emulator by default and against a real QStash with ``scripts/contract`` (see conftest).

Each test is named after the SDK test it reproduces: upstash/qstash-py ``tests/`` or
upstash/qstash-js ``src/client/*.test.ts``.
"""

from __future__ import annotations

import pytest
from qstash import QStash
from qstash.message import BatchJsonRequest, BatchResponse, PublishResponse

from .conftest import Backend, eventually, ids_of

#: The qstash-py suite's window for a failed message to reach the DLQ (assert_eventually:
#: two seconds' initial delay, then ten); on loopback, less than the slow deliveries take.
LIVE_DLQ_WINDOW_SECONDS = 12.0
LOCAL_DLQ_WINDOW_SECONDS = 3.0
SLOW_MS = 4_000


def test_qstash_py_test_batch_with_flow_control(client: QStash, qstash: Backend) -> None:
    # qstash-py tests/test_message.py test_batch_with_flow_control: parallelism only
    # reads back period 1 (it used to be null); rate with a period reads it in seconds.
    key = qstash.unique("fc")
    result = client.message.batch_json([
        BatchJsonRequest(body={"k": 1}, url=qstash.status_url(200, 30_000), delay="1h",
                         flow_control={"key": f"{key}-2", "rate": 23, "period": "1h30m3s"}),
        BatchJsonRequest(body={"k": 1}, url=qstash.status_url(200, 30_000), delay="1h",
                         flow_control={"key": f"{key}-3", "parallelism": 5}),
    ])
    try:
        assert isinstance(result[0], BatchResponse) and isinstance(result[1], BatchResponse)
        rated = client.message.get(result[0].message_id).flow_control
        assert rated is not None and (rated.rate, rated.period, rated.parallelism) == (
            23, 5403, None)
        parallel = client.message.get(result[1].message_id).flow_control
        assert parallel is not None and (parallel.parallelism, parallel.rate,
                                         parallel.period) == (5, None, 1)
    finally:
        client.message.cancel_many([r.message_id for r in result
                                    if isinstance(r, BatchResponse)])


def test_qstash_py_test_dlq_get_and_delete_behind_slow_destinations(
        client: QStash, qstash: Backend) -> None:
    # qstash-py tests/test_dlq.py test_dlq_get_and_delete(_many) failed in three full runs
    # of four: earlier tests leave deliveries to a destination that sleeps 30 s, which
    # held every attempt thread, so the 404 waited past the suite's window. Ten slow
    # deliveries (more than the emulator's eight threads) are in flight here too, each
    # longer than the window.
    slow = [client.message.publish_json(url=qstash.status_url(200, SLOW_MS), body={},
                                        retries=0).message_id for _ in range(10)]
    failed = [client.message.publish_json(method="GET", url=qstash.status_url(404),
                                          retries=0, retry_delay="7000 * retried")
              for _ in range(2)]
    wanted = ids_of(failed)

    def dead_letters() -> list[str]:
        found = [m for m in client.dlq.list().messages if m.message_id in wanted]
        assert ids_of(found) == wanted
        for entry in found:
            assert entry.response_body == "404 Not Found"
            assert client.dlq.get(entry.dlq_id).retry_delay_expression == "7000 * retried"
        return [m.dlq_id for m in found]

    window = LIVE_DLQ_WINDOW_SECONDS if qstash.live else LOCAL_DLQ_WINDOW_SECONDS
    dlq_ids = eventually(dead_letters, "the failed messages in the DLQ", window)
    client.dlq.delete(dlq_ids[0])
    assert client.dlq.delete_many(dlq_ids[1:]) == 1
    assert not {m.message_id for m in client.dlq.list().messages} & set(wanted)
    client.message.cancel_many(slow)


def test_qstash_py_test_flow_control_reset_rate(client: QStash, qstash: Backend) -> None:
    # qstash-py tests/test_flow_control.py test_flow_control_reset_rate publishes and
    # resets at once; the emulator's claim could come after the reset and count 1 for the
    # whole period (one run of three).
    key = qstash.unique("reset")
    published = client.message.publish_json(
        body={"test": "value"}, url=qstash.status_url(200, 3_000),
        flow_control={"key": key, "parallelism": 5, "rate": 10, "period": "1m"})
    assert isinstance(published, PublishResponse)
    client.flow_control.reset_rate(key)

    def reset() -> None:
        assert client.flow_control.get(key).rate_count == 0

    eventually(reset, "rateCount 0 after resetRate")
    client.message.cancel(published.message_id)


def test_qstash_js_should_respect_count_1_with_filter(client: QStash, qstash: Backend) -> None:
    # qstash-js src/client/messages.test.ts "should respect count: 1 with filter": two
    # delayed messages with one label; a bulk cancel with count=1 cancels one of them.
    label = qstash.unique("count")
    for n in (1, 2):
        client.message.publish_json(url=qstash.status_url(200), body={"n": n}, delay="10d",
                                    label=label)
    first = client.http.request(path="/v2/messages", method="DELETE",
                                params={"label": label, "count": "1"})
    assert first == {"cancelled": 1}
    rest = client.http.request(path="/v2/messages", method="DELETE", params={"label": label})
    assert rest == {"cancelled": 1}


@pytest.mark.local_only("cancels every pending message of the account, as the JS test does")
def test_qstash_js_should_respect_count_1_with_all_true(client: QStash, qstash: Backend) -> None:
    # qstash-js src/client/messages.test.ts "should respect count: 1 with all: true".
    client.message.cancel_all()
    for n in (1, 2):
        client.message.publish_json(url=qstash.status_url(200), body={"n": n}, delay="10d")
    first = client.http.request(path="/v2/messages", method="DELETE", params={"count": "1"})
    assert first == {"cancelled": 1}
    assert client.message.cancel_all() == 1
