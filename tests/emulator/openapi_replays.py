"""How to replay each operation of Upstash's OpenAPI document against the emulator.

For every operation (``"METHOD /path"``, as :mod:`openapi_facts` names them) a recipe
makes what the call needs (a message, a DLQ entry, a queue...) through the public API
and returns the calls to replay: a base request for the documented success, one per
documented error answer that can be provoked, and the values to try for each documented
parameter (``VALUES``; the document's own example values are added by the test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from celery_qstash.local.emulator.plans import Plan, Quotas

from .conftest import Client, Reply, Target

JSON = dict[str, Any]

#: Values for documented parameters whose type alone (``string``) does not make a valid
#: one. Anything else gets a value of its documented type (see ``values_for``).
VALUES: dict[str, list[str]] = {
    "Content-Type": ["application/json", "text/plain"],
    "Upstash-Forward-*": ["Upstash-Forward-My-Header: my-value"],
    "Upstash-Callback-Forward-*": ["Upstash-Callback-Forward-X: y"],
    "Upstash-Failure-Callback-Forward-*": ["Upstash-Failure-Callback-Forward-X: y"],
    "Upstash-Retry-Delay": ["1000 * (1 + retried)", "pow(2, retried) * 1000"],
    "Upstash-Flow-Control-Value": ["parallelism=2", "rate=10,period=1m", "parallelism=1,rate=5"],
    "Upstash-Callback": ["https://example.com/callback"],
    "Upstash-Failure-Callback": ["https://example.com/failure"],
    "Upstash-Cron": ["*/5 * * * *"],
    "Upstash-Schedule-Id": ["replayed-schedule"],
    "Upstash-Redact-Fields": ["body", "header", "header[Authorization]"],
    "Upstash-Deduplication-Id": ["dedup-1"],
    "Upstash-Label": ["label_1", "label_1,label_2"],
    "Upstash-Timeout": ["30s"],
    "Upstash-Delay": ["10s"],
    "Upstash-Not-Before": ["1900000000"],
    "url": ["https://example.com/a"],
    "host": ["example.com"],
    "path": ["/a"],
    "fromDate": ["1"],
    "toDate": ["4102444800000"],
    "count": ["1"],
    "responseStatus": ["500"],
    "callerIp": ["127.0.0.1"],
    "callerIP": ["127.0.0.1"],
}

#: Headers a documented header needs beside it (QStash refuses either one alone).
COMPANIONS = {
    "Upstash-Flow-Control-Value": {"Upstash-Flow-Control-Key": "replayed-key"},
    "Upstash-Flow-Control-Key": {"Upstash-Flow-Control-Value": "parallelism=1"},
}


@dataclass
class Call:
    """One request to replay, and the documented status it must answer."""

    name: str
    method: str
    path: str
    expect: int
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    #: Documented parameters this call's recipe fills itself (not replayed one by one).
    fixed: frozenset[str] = frozenset()
    #: The call each documented parameter is added to (default: the first success).
    base: bool = False

    def varied(self, name: str, place: str, value: str) -> Call:
        """This call with one documented parameter set to ``value``."""
        params, headers = dict(self.params), dict(self.headers)
        headers.update(COMPANIONS.get(name, {}))
        if place == "query":
            params[name] = value
        elif name.endswith("*"):  # a prefix: the value is "Name: value"
            header, _, header_value = value.partition(": ")
            headers[header] = header_value
        else:
            headers[name] = value
        return Call(f"{self.name} {name}={value}", self.method, self.path, self.expect,
                    params, headers, self.json, self.content, self.fixed, self.base)

    def send(self, http: httpx.Client) -> httpx.Response:
        return http.request(self.method, self.path, params=self.params,
                            headers=self.headers, json=self.json, content=self.content)


class Replay:
    """What a recipe builds its calls with: the emulator and a recording destination."""

    def __init__(self, fake: Client, target: Target) -> None:
        self.fake = fake
        self.target = target
        self.http = fake.http

    def url(self, path: str = "/ok") -> str:
        return f"{self.target.url}{path}"

    def message(self, **headers: str) -> str:
        """A message waiting ten days: it can be read and cancelled."""
        response = self.fake.publish(self.url(), b"{}", Upstash_Delay="10d", **headers)
        assert response.status_code == 200, response.text
        return str(response.json()["messageId"])

    def dead_letter(self, label: str = "dead") -> str:
        """A message that failed into the DLQ; its dlqId."""
        self.target.reply("/dead", Reply(500, body=b"boom"))
        self.fake.publish(self.url("/dead"), b"x", Upstash_Retries="0", Upstash_Label=label)
        self.fake.tick()
        [entry] = [m for m in self.http.get("/v2/dlq").json()["messages"]
                   if m["url"].endswith("/dead")][-1:]
        return str(entry["dlqId"])

    def queue(self, name: str = "q") -> str:
        self.http.post("/v2/queues", json={"queueName": name, "parallelism": 1})
        return name

    def schedule(self) -> str:
        response = self.http.post(f"/v2/schedules/{self.url()}",
                                  headers={"Upstash-Cron": "*/5 * * * *"})
        return str(response.json()["scheduleId"])

    def group(self, name: str = "g") -> str:
        self.http.post(f"/v2/topics/{name}/endpoints",
                       json={"endpoints": [{"name": "a", "url": self.url("/a")}]})
        return name

    def flow_key(self, key: str = "fk") -> str:
        self.message(Upstash_Flow_Control_Key=key, Upstash_Flow_Control_Value="parallelism=1")
        return key

    def cap(self, **limits: int) -> None:
        """A plan whose resource caps are ``limits`` (412 past them)."""
        caps = {"max_queues": 100, "max_schedules": 100, "max_url_groups": 100} | limits
        self.fake.emulator.quotas = Quotas(Plan("replay", None, 10_000, **caps))


Recipe = Callable[[Replay], list[Call]]
RECIPES: dict[str, Recipe] = {}


def recipe(*operations: str) -> Callable[[Recipe], Recipe]:
    def register(build: Recipe) -> Recipe:
        for operation in operations:
            RECIPES[operation] = build
        return build
    return register


NO_TOKEN = {"Authorization": ""}


@recipe("POST /v2/publish/{destination}")
def _publish(r: Replay) -> list[Call]:
    path = f"/v2/publish/{r.url()}"
    group = r.group()
    return [
        Call("publish", "POST", path, 200, content=b'{"hello":"world"}',
             fixed=frozenset({"destination"})),
        Call("publish to a URL group", "POST", f"/v2/publish/{group}", 200, content=b"x"),
        Call("publish with a bad delay", "POST", path, 400, headers={"Upstash-Delay": "soon"}),
        Call("publish with no token", "POST", path, 401, headers=NO_TOKEN),
    ]


@recipe("POST /v2/enqueue/{queueName}/{destination}")
def _enqueue(r: Replay) -> list[Call]:
    path = f"/v2/enqueue/{r.queue()}/{r.url()}"
    return [
        Call("enqueue", "POST", path, 200, content=b"x",
             fixed=frozenset({"queueName", "destination"})),
        Call("enqueue to a URL group", "POST", f"/v2/enqueue/q/{r.group()}", 200),
        Call("enqueue with a bad timeout", "POST", path, 400,
             headers={"Upstash-Timeout": "soon"}),
        Call("enqueue to an unknown URL group", "POST", "/v2/enqueue/q/no-such-group", 404),
    ]


@recipe("POST /v2/batch")
def _batch(r: Replay) -> list[Call]:
    r.queue()
    items = [{"destination": r.url("/1"), "body": "one"},
             {"destination": r.url("/2"), "headers": {"Upstash-Delay": "1h"}, "queue": "q"},
             {"destination": r.group(), "body": "all"}]
    return [Call("batch", "POST", "/v2/batch", 200, json=items),
            # A bad item is that item's {"error"} in a 200 (each item is its own publish);
            # a body that is no array is the whole call's 400.
            Call("batch of no array", "POST", "/v2/batch", 400, json={"destination": "x"})]


@recipe("GET /v2/messages/{messageId}")
def _get_message(r: Replay) -> list[Call]:
    return [Call("get", "GET", f"/v2/messages/{r.message()}", 200),
            Call("get unknown", "GET", "/v2/messages/msg_unknown", 404)]


@recipe("DELETE /v2/messages/{messageId}")
def _cancel_message(r: Replay) -> list[Call]:
    return [Call("cancel", "DELETE", f"/v2/messages/{r.message()}", 200),
            Call("cancel unknown", "DELETE", "/v2/messages/msg_unknown", 404)]


@recipe("DELETE /v2/messages")
def _cancel_messages(r: Replay) -> list[Call]:
    ids = [r.message(), r.message()]
    return [Call("cancel by ids", "DELETE", "/v2/messages", 200,
                 params={"messageIds": ",".join(ids)}, fixed=frozenset({"messageIds"})),
            Call("cancel all", "DELETE", "/v2/messages", 200)]


@recipe("POST /v2/queues")
def _upsert_queue(r: Replay) -> list[Call]:
    r.queue("first")
    r.cap(max_queues=1)
    return [Call("upsert", "POST", "/v2/queues", 200,
                 json={"queueName": "first", "parallelism": 2}),
            Call("upsert past the plan's queues", "POST", "/v2/queues", 412,
                 json={"queueName": "second", "parallelism": 1}),
            Call("upsert without a name", "POST", "/v2/queues", 400, json={"parallelism": 1})]


@recipe("GET /v2/queues")
def _list_queues(r: Replay) -> list[Call]:
    r.queue()
    return [Call("list", "GET", "/v2/queues", 200)]


@recipe("GET /v2/queues/{queueName}")
def _get_queue(r: Replay) -> list[Call]:
    return [Call("get", "GET", f"/v2/queues/{r.queue()}", 200),
            Call("get unknown", "GET", "/v2/queues/unknown", 404)]


@recipe("DELETE /v2/queues/{queueName}")
def _delete_queue(r: Replay) -> list[Call]:
    return [Call("delete", "DELETE", f"/v2/queues/{r.queue()}", 200)]


@recipe("POST /v2/queues/{queueName}/pause", "POST /v2/queues/{queueName}/resume")
def _pause_queue(r: Replay) -> list[Call]:
    name = r.queue()
    return [Call(action, "POST", f"/v2/queues/{name}/{action}", 200)
            for action in ("pause", "resume")]


@recipe("POST /v2/schedules/{destination}")
def _create_schedule(r: Replay) -> list[Call]:
    path = f"/v2/schedules/{r.url()}"
    r.schedule()
    r.cap(max_schedules=2)
    return [Call("create", "POST", path, 200, headers={"Upstash-Cron": "*/5 * * * *",
                                                       "Upstash-Schedule-Id": "mine"},
                 fixed=frozenset({"destination", "Upstash-Schedule-Id"})),
            Call("create past the plan's schedules", "POST", path, 412,
                 headers={"Upstash-Cron": "* * * * *", "Upstash-Schedule-Id": "more"}),
            Call("create without a cron", "POST", path, 400)]


@recipe("GET /v2/schedules")
def _list_schedules(r: Replay) -> list[Call]:
    r.schedule()
    return [Call("list", "GET", "/v2/schedules", 200)]


@recipe("GET /v2/schedules/{scheduleId}")
def _get_schedule(r: Replay) -> list[Call]:
    return [Call("get", "GET", f"/v2/schedules/{r.schedule()}", 200),
            Call("get unknown", "GET", "/v2/schedules/scd_unknown", 404)]


@recipe("DELETE /v2/schedules/{scheduleId}", "POST /v2/schedules/{scheduleId}/pause",
        "POST /v2/schedules/{scheduleId}/resume")
def _schedule_actions(r: Replay) -> list[Call]:
    schedule = r.schedule()
    return [Call("pause", "POST", f"/v2/schedules/{schedule}/pause", 200),
            Call("resume", "POST", f"/v2/schedules/{schedule}/resume", 200),
            Call("delete", "DELETE", f"/v2/schedules/{schedule}", 200)]


@recipe("GET /v2/topics")
def _list_groups(r: Replay) -> list[Call]:
    r.group()
    return [Call("list", "GET", "/v2/topics", 200)]


@recipe("GET /v2/topics/{urlGroupName}")
def _get_group(r: Replay) -> list[Call]:
    return [Call("get", "GET", f"/v2/topics/{r.group()}", 200),
            Call("get unknown", "GET", "/v2/topics/unknown", 404)]


@recipe("DELETE /v2/topics/{urlGroupName}")
def _delete_group(r: Replay) -> list[Call]:
    return [Call("delete", "DELETE", f"/v2/topics/{r.group()}", 200)]


@recipe("POST /v2/topics/{urlGroupName}/endpoints",
        "DELETE /v2/topics/{urlGroupName}/endpoints")
def _group_endpoints(r: Replay) -> list[Call]:
    group = r.group()
    endpoints = {"endpoints": [{"name": "a", "url": r.url("/a")}]}
    return [Call("add", "POST", f"/v2/topics/{group}/endpoints", 200,
                 json={"endpoints": [{"name": "b", "url": r.url("/b")}]}),
            Call("remove", "DELETE", f"/v2/topics/{group}/endpoints", 200, json=endpoints)]


@recipe("GET /v2/dlq")
def _list_dlq(r: Replay) -> list[Call]:
    r.dead_letter()
    r.dead_letter()
    cursor = r.http.get("/v2/dlq", params={"count": "1"}).json()["cursor"]
    return [Call("list", "GET", "/v2/dlq", 200, fixed=frozenset({"cursor"})),
            Call("list from a cursor", "GET", "/v2/dlq", 200, params={"cursor": cursor},
                 fixed=frozenset({"cursor"}))]


@recipe("DELETE /v2/dlq")
def _delete_dlq(r: Replay) -> list[Call]:
    ids = [r.dead_letter(), r.dead_letter()]
    return [Call("delete by ids", "DELETE", "/v2/dlq", 200, params={"dlqIds": ",".join(ids)},
                 fixed=frozenset({"cursor", "dlqIds"}))]


@recipe("GET /v2/dlq/{dlqId}", "DELETE /v2/dlq/{dlqId}")
def _dlq_entry(r: Replay) -> list[Call]:
    dlq_id = r.dead_letter()
    return [Call("get", "GET", f"/v2/dlq/{dlq_id}", 200),
            Call("get unknown", "GET", "/v2/dlq/unknown", 404),
            Call("delete", "DELETE", f"/v2/dlq/{dlq_id}", 200),
            Call("delete unknown", "DELETE", "/v2/dlq/unknown", 404)]


@recipe("POST /v2/dlq/retry/{dlqId}")
def _retry_one(r: Replay) -> list[Call]:
    return [Call("retry", "POST", f"/v2/dlq/retry/{r.dead_letter()}", 201),
            Call("retry unknown", "POST", "/v2/dlq/retry/unknown", 404)]


@recipe("POST /v2/dlq/retry")
def _retry_many(r: Replay) -> list[Call]:
    ids = [r.dead_letter(), r.dead_letter()]
    r.dead_letter("other")
    return [Call("retry by ids", "POST", "/v2/dlq/retry", 201,
                 params={"dlqIds": ",".join(ids)}, fixed=frozenset({"dlqIds"})),
            Call("retry by label", "POST", "/v2/dlq/retry", 201, params={"label": "other"},
                 fixed=frozenset({"dlqIds", "label"}), base=True),
            Call("retry unknown ids", "POST", "/v2/dlq/retry", 404,
                 params={"dlqIds": "unknown"})]


@recipe("GET /v2/flowControl")
def _list_flows(r: Replay) -> list[Call]:
    r.flow_key()
    return [Call("list", "GET", "/v2/flowControl", 200)]


@recipe("GET /v2/flowControl/{flowControlKey}")
def _get_flow(r: Replay) -> list[Call]:
    return [Call("get", "GET", f"/v2/flowControl/{r.flow_key()}", 200),
            Call("get unknown", "GET", "/v2/flowControl/unknown", 404)]


@recipe("POST /v2/flowControl/{flowControlKey}/pause",
        "POST /v2/flowControl/{flowControlKey}/resume",
        "POST /v2/flowControl/{flowControlKey}/pin",
        "POST /v2/flowControl/{flowControlKey}/unpin",
        "POST /v2/flowControl/{flowControlKey}/resetRate")
def _flow_actions(r: Replay) -> list[Call]:
    key = r.flow_key()
    calls = [Call(action, "POST", f"/v2/flowControl/{key}/{action}", 200)
             for action in ("pause", "resume", "pin", "unpin", "resetRate")]
    return [*calls,
            Call("pin a bad period", "POST", f"/v2/flowControl/{key}/pin", 400,
                 params={"period": "0"}),
            Call("pin a bad rate", "POST", f"/v2/flowControl/{key}/pin", 400,
                 params={"rate": "0"})]


@recipe("GET /v2/globalParallelism")
def _global(r: Replay) -> list[Call]:
    return [Call("get", "GET", "/v2/globalParallelism", 200)]


@recipe("GET /v2/keys", "POST /v2/keys/rotate")
def _keys(r: Replay) -> list[Call]:
    return [Call("get", "GET", "/v2/keys", 200), Call("rotate", "POST", "/v2/keys/rotate", 200)]


@recipe("GET /v2/logs")
def _logs(r: Replay) -> list[Call]:
    r.message()
    r.http.delete(f"/v2/messages/{r.message()}")
    r.fake.tick()  # CANCEL_REQUESTED, then CANCELED
    cursor = r.http.get("/v2/logs", params={"count": "1"}).json()["cursor"]
    return [Call("list", "GET", "/v2/logs", 200, fixed=frozenset({"cursor"})),
            Call("list from a cursor", "GET", "/v2/logs", 200, params={"cursor": cursor},
                 fixed=frozenset({"cursor"}))]
