"""The official SDK (qstash-py) against the fidelity fixes of issue 9, items 1, 2, 5, 6, 7,
through QStash's public API only (live or local, see conftest).

Each test names the upstash/docs ``qstash/openapi.yaml`` (OAS) section or the
upstash/qstash-js ``src/client/*.test.ts`` test it follows. Failed messages are found in
the DLQ by their unique label, and every test removes what it left there.
"""

from __future__ import annotations

from qstash import QStash
from qstash.log import LogState
from qstash.message import BatchRequest

from .conftest import Backend, dead_letters, eventually, states


def fail(client: QStash, qstash: Backend, label: str, *statuses: int) -> list[str]:
    """One message per status (each a failure), no retries: their ids, once in the DLQ."""
    ids = [client.message.publish(url=qstash.status_url(status), body="x", retries=0,
                                  label=label).message_id for status in statuses]

    def in_dlq() -> None:
        assert sorted(m.message_id for m in dead_letters(client, label)) == sorted(ids)

    eventually(in_dlq, f"{len(ids)} messages in the DLQ")
    return ids


def test_item1_a_comma_list_in_an_sdk_filter_is_several_values(
        client: QStash, qstash: Backend, label: str) -> None:
    # OAS /v2/dlq: "Multiple values can be passed ... as a single comma-separated value";
    # qstash-py passes its filter strings through, so "A,B" reaches QStash as two URLs.
    a, b, _ = fail(client, qstash, label, 500, 501, 502)
    urls = f"{qstash.status_url(500)},{qstash.status_url(501)}"
    listed = client.dlq.list(filter={"url": urls, "label": label})
    assert sorted(m.message_id for m in listed.messages) == sorted([a, b])
    logs = client.log.list(filter={"url": urls, "state": LogState.FAILED, "label": label})
    assert sorted(e.message_id for e in logs.logs) == sorted([a, b])


def test_item2_every_filter_the_sdk_sends_is_known(client: QStash, qstash: Backend,
                                                   label: str) -> None:
    # Unknown filter fields are a 400 (test_sdk_local.py): every field qstash-py can send
    # must still pass. Values that match nothing, so a live account's data is safe.
    [a] = fail(client, qstash, label, 500)
    everything = {"message_id": a, "url": qstash.status_url(500), "url_group": "g",
                  "queue": "q", "schedule_id": "s", "from_time": 1, "to_time": 2**40,
                  "label": label}
    assert client.log.list(filter={**everything, "state": LogState.FAILED}).logs == []  # type: ignore[typeddict-item]
    assert client.dlq.list(filter={**everything, "response_status": 500,  # type: ignore[typeddict-item]
                                   "caller_ip": "192.0.2.1"}).messages == []
    assert [m.message_id for m in dead_letters(client, label)] == [a]


def test_item5_bulk_dlq_delete_pages_by_100(client: QStash, qstash: Backend,
                                            label: str) -> None:
    # OAS DELETE /v2/dlq: count "default: 100, maximum: 100" and a cursor while more remain.
    batch: list[BatchRequest] = [{"url": qstash.status_url(500), "body": "x", "retries": 0,
                                  "label": label} for _ in range(101)]
    client.message.batch(batch)
    eventually(lambda: _count(dead_letters(client, label), 101), "101 dead letters")
    first = client.http.request(path="/v2/dlq", method="DELETE",
                                params={"count": "1000", "label": label})
    assert first["deleted"] == 100 and first["cursor"]
    rest = client.http.request(path="/v2/dlq", method="DELETE",
                               params={"cursor": first["cursor"], "label": label})
    assert rest == {"deleted": 1}
    assert dead_letters(client, label) == []
    ids = fail(client, qstash, label, 500, 502)
    assert client.dlq.delete_many([m.dlq_id for m in dead_letters(client, label)]) == 2
    assert ids and dead_letters(client, label) == []


def _count(items: list[object], expected: int) -> None:
    assert len(items) == expected


def test_item6_deleting_unknown_groups_and_queues_is_not_an_error(
        client: QStash, qstash: Backend) -> None:
    # qstash-js src/client/url-groups.test.ts deletes its group before creating it; OAS
    # lists only 200 for DELETE /v2/topics/{name}, /v2/queues/{name}, pause and resume.
    never = qstash.unique("never-created")
    client.url_group.delete(never)
    client.queue.delete(never)
    client.queue.pause(never)
    client.queue.resume(never)
    client.schedule.pause(never)
    client.schedule.resume(never)
    client.schedule.delete(never)
    client.queue.delete(never)  # whatever pausing did, no queue is left behind


def test_item7_flow_control_as_qstash_reports_it(client: QStash, qstash: Backend,
                                                 label: str) -> None:
    # OAS FlowControlKey: ratePeriod in seconds (1 when only parallelism is set),
    # ratePeriodStart a Unix timestamp in seconds; pin resets the rate count and period.
    parallel, rated = qstash.unique("par"), qstash.unique("rate")
    client.message.publish(url=qstash.status_url(200), body="x", label=label,
                           flow_control={"key": parallel, "parallelism": 1})
    assert client.flow_control.get(parallel).rate_period == 1
    # One a day: the first goes at once, the second waits for the next period.
    ids = [client.message.publish(url=qstash.status_url(200), body="x", label=label,
                                  flow_control={"key": rated, "rate": 1, "period": "1d"}
                                  ).message_id for _ in range(2)]

    def one_counted_one_waiting() -> None:
        info = client.flow_control.get(rated)
        assert (info.rate_count, info.wait_list_size) == (1, 1)

    eventually(one_counted_one_waiting, "rateCount 1 and waitListSize 1")
    info = client.flow_control.get(rated)
    assert 1_000_000_000 < info.rate_period_start < 10_000_000_000  # seconds, not ms
    def first_delivered() -> list[str]:
        # The counted one's DELIVERED is logged a moment after rateCount counts it.
        left = [i for i in ids if "DELIVERED" not in states(client, i)]
        assert len(left) == 1
        return left

    [waiting] = eventually(first_delivered, "the first message delivered")
    # Cancelled first: pinning a higher rate would let it go, and count it again.
    client.message.cancel(waiting)
    eventually(lambda: _waits(client, rated, 0), "an empty wait list")
    client.flow_control.pin(rated, {"rate": 5})
    pinned = client.flow_control.get(rated)
    assert (pinned.rate_count, pinned.rate_period_start) == (0, 0)


def _waits(client: QStash, key: str, size: int) -> None:
    assert client.flow_control.get(key).wait_list_size == size
