"""The official SDK (qstash-py) against the fidelity fixes of issue 9, items 1, 2, 5, 6, 7.

Each test names the upstash/docs ``qstash/openapi.yaml`` (OAS) section or the
upstash/qstash-js ``src/client/*.test.ts`` test it follows.
"""

from __future__ import annotations

import pytest
from emulator.conftest import Client, Reply, Target
from qstash import QStash
from qstash.errors import QStashError
from qstash.log import LogState

from .test_sdk import tick

pytestmark = pytest.mark.local_only(
    "delivers with POST /_emulator/tick, resets between tests and publishes to a "
    "recording destination on loopback")


@pytest.fixture
def client(sdk: Client) -> QStash:
    return QStash(sdk.server.token, base_url=sdk.server.url, retry=False)


def fail(client: QStash, sdk: Client, target: Target, *paths: str) -> list[str]:
    """Publish one message per path (each answering 500) with no retries, into the DLQ."""
    ids = []
    for path in paths:
        target.reply(path, Reply(500))
        ids.append(client.message.publish(url=f"{target.url}{path}", body="x",
                                          retries=0).message_id)
    tick(sdk.server)
    return ids


def test_item1_a_comma_list_in_an_sdk_filter_is_several_values(client: QStash, sdk: Client,
                                                               target: Target) -> None:
    # OAS /v2/dlq: "Multiple values can be passed ... as a single comma-separated value";
    # qstash-py passes its filter strings through, so "A,B" reaches QStash as two URLs.
    a, b, _ = fail(client, sdk, target, "/a", "/b", "/c")
    listed = client.dlq.list(filter={"url": f"{target.url}/a,{target.url}/b"})
    assert sorted(m.message_id for m in listed.messages) == sorted([a, b])
    logs = client.log.list(filter={"url": f"{target.url}/a,{target.url}/b", "state": LogState.FAILED})
    assert sorted(e.message_id for e in logs.logs) == sorted([a, b])


def test_item2_every_filter_the_sdk_sends_is_known(client: QStash, sdk: Client,
                                                   target: Target) -> None:
    # Unknown filter fields are a 400 now: every field qstash-py can send must still pass.
    [a] = fail(client, sdk, target, "/a")
    everything = {"message_id": a, "url": f"{target.url}/a", "url_group": "g", "queue": "q",
                  "schedule_id": "s", "from_time": 1, "to_time": 2**40, "label": "l"}
    assert client.log.list(filter={**everything, "state": LogState.FAILED}).logs == []  # type: ignore[typeddict-item]
    assert client.dlq.list(filter={**everything, "response_status": 500,  # type: ignore[typeddict-item]
                                   "caller_ip": "127.0.0.1"}).messages == []
    assert client.message.cancel_all() == 0
    # ...while a field QStash does not know is refused, through the SDK's own transport.
    with pytest.raises(QStashError, match="labeel"):
        client.http.request(path="/v2/dlq", method="DELETE", params={"labeel": "x"})
    assert [m.message_id for m in client.dlq.list().messages] == [a]


def test_item5_bulk_dlq_delete_pages_by_100(client: QStash, sdk: Client,
                                            target: Target) -> None:
    # OAS DELETE /v2/dlq: count "default: 100, maximum: 100" and a cursor while more remain.
    target.reply("/many", Reply(500))
    for _ in range(101):
        client.message.publish(url=f"{target.url}/many", body="x", retries=0)
    tick(sdk.server)
    first = client.http.request(path="/v2/dlq", method="DELETE", params={"count": "1000"})
    assert first["deleted"] == 100 and first["cursor"]
    rest = client.http.request(path="/v2/dlq", method="DELETE",
                               params={"cursor": first["cursor"]})
    assert rest == {"deleted": 1}
    ids = fail(client, sdk, target, "/x", "/y")
    assert client.dlq.delete_many([m.dlq_id for m in client.dlq.list().messages]) == 2
    assert ids and client.dlq.list().messages == []


def test_item6_deleting_unknown_groups_and_queues_is_not_an_error(client: QStash) -> None:
    # qstash-js src/client/url-groups.test.ts deletes its group before creating it; OAS
    # lists only 200 for DELETE /v2/topics/{name}, /v2/queues/{name}, pause and resume.
    client.url_group.delete("never-created")
    client.queue.delete("never-created")
    client.queue.pause("never-created")
    client.queue.resume("never-created")
    client.schedule.pause("never-created")
    client.schedule.resume("never-created")
    client.schedule.delete("never-created")


def test_item7_flow_control_as_qstash_reports_it(client: QStash, sdk: Client,
                                                 target: Target) -> None:
    # OAS FlowControlKey: ratePeriod in seconds (1 when only parallelism is set),
    # ratePeriodStart a Unix timestamp in seconds; pin resets the rate count and period.
    client.message.publish(url=f"{target.url}/f", body="x",
                           flow_control={"key": "par", "parallelism": 1})
    assert client.flow_control.get("par").rate_period == 1
    for _ in range(2):
        client.message.publish(url=f"{target.url}/f", body="x",
                               flow_control={"key": "rate", "rate": 1})
    tick(sdk.server)
    info = client.flow_control.get("rate")
    assert info.rate_count == 1 and info.wait_list_size == 1
    assert 1_000_000_000 < info.rate_period_start < 10_000_000_000  # seconds, not ms
    client.flow_control.pin("rate", {"rate": 5})
    pinned = client.flow_control.get("rate")
    assert (pinned.rate_count, pinned.rate_period_start) == (0, 0)
