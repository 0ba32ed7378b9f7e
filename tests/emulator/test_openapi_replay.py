"""Every operation of Upstash's OpenAPI document for QStash, replayed against the emulator.

For each operation of upstash/docs ``qstash/openapi.yaml`` (OAS) the recipe in
:mod:`openapi_replays` makes what it needs and sends the documented success, each
documented error it can provoke, and one request per documented parameter (each value
from the document's own examples, or one of the parameter's type); every answer must
have a status the OAS lists for that operation, and a body its schema accepts
(``jsonschema``, draft 2020-12, as OpenAPI 3.1 says).

The document is not in this repository (no licence): the facts the test needs are in
``data/openapi-facts.json``, which ``scripts/openapi-facts`` extracts from it. Point
``CELERY_QSTASH_OPENAPI`` at a copy to check those facts are not stale.

The document is wrong in a few places, each listed in ``ERRATA`` with the source that
shows what QStash really answers (the SDKs' wire behaviour wins over the document).
Each erratum is tested to be a real disagreement: what QStash sends fails the
document's schema and passes the corrected one.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from celery_qstash.local.emulator.routes import QSTASH_ROUTES

from .conftest import Client, Target
from .openapi_facts import load_document, load_facts, schema_for
from .openapi_replays import RECIPES, VALUES, Call, Replay

JSON = dict[str, Any]
FACTS = load_facts()
OPERATIONS = {operation["id"]: operation for operation in FACTS["operations"]}
DOCUMENT = os.environ.get("CELERY_QSTASH_OPENAPI")


@dataclass(frozen=True)
class Erratum:
    """A place where the document is wrong, what QStash sends there, and the proof."""

    where: str
    what: str
    source: str
    #: Corrects a copy of the facts in place.
    fix: Callable[[JSON], None]
    #: (schema's JSON pointer in the facts, an instance QStash sends there)
    evidence: tuple[str, Any]


def _publish_answer(facts: JSON) -> None:
    one = {"$ref": "#/$defs/PublishResponse", "required": ["messageId"]}
    group = {"type": "array", "items": {"$ref": "#/$defs/PublishToUrlGroupResponse",
                                        "required": ["messageId", "url"]}}
    for operation in ("POST /v2/publish/{destination}",
                      "POST /v2/enqueue/{queueName}/{destination}"):
        _operation(facts, operation)["responses"]["200"]["application/json"] = {
            "oneOf": [one, group]}


def _batch_answer(facts: JSON) -> None:
    items = {"oneOf": [{"$ref": "#/$defs/PublishResponse", "required": ["messageId"]},
                       {"type": "array", "items": {"$ref": "#/$defs/PublishToUrlGroupResponse"}}]}
    _operation(facts, "POST /v2/batch")["responses"]["200"]["application/json"]["items"] = items


def _log_states(facts: JSON) -> None:
    states = ["CREATED", "ACTIVE", "RETRY", "ERROR", "IN_PROGRESS", "DELIVERED", "FAILED",
              "CANCEL_REQUESTED", "CANCELED"]
    facts["schemas"]["LogEntry"]["properties"]["state"]["enum"] = states
    for parameter in _operation(facts, "GET /v2/logs")["parameters"]:
        if parameter["name"] == "state":
            parameter["schema"]["enum"] = states


def _operation(facts: JSON, operation_id: str) -> JSON:
    [operation] = [o for o in facts["operations"] if o["id"] == operation_id]
    return operation


ERRATA = [
    Erratum(
        "POST /v2/publish/{destination} and POST /v2/enqueue/{queueName}/{destination}: "
        "200",
        "The answer is a oneOf of PublishResponse and {messages: [...]}; neither has a "
        "required field, so every object matches both and no answer can pass. QStash "
        "answers one PublishResponse for a URL, and a JSON array of "
        "PublishToUrlGroupResponse (no 'messages' wrapper) for a URL group.",
        "upstash/qstash-py qstash/message.py parse_publish_response and "
        "parse_enqueue_response ('if isinstance(response, list)'); upstash/qstash-js "
        "src/client/client.ts publish returns PublishToUrlGroupsResponse, an array",
        _publish_answer,
        ("/operations/0/responses/200/application~1json", {"messageId": "msg_1"})),
    Erratum(
        "POST /v2/batch: 200",
        "Items are documented as PublishResponse only; an item whose destination is a URL "
        "group is an array of PublishToUrlGroupResponse, one per endpoint.",
        "upstash/qstash-py qstash/message.py parse_batch_response ('if isinstance(resp, "
        "list)'); upstash/qstash-js src/client/client.ts batch",
        _batch_answer,
        ("/operations/2/responses/200/application~1json",
         [[{"messageId": "msg_1", "url": "https://example.com/a"}]])),
    Erratum(
        "LogEntry.state and GET /v2/logs state",
        "The document spells the cancelled state CANCELLED, and lists FAILED only in "
        "LogEntry and IN_PROGRESS only in the filter; QStash sends CANCELED and takes all "
        "nine states in the filter.",
        "upstash/qstash-py qstash/log.py LogState (CANCELED = \"CANCELED\", FAILED, "
        "IN_PROGRESS); upstash/qstash-js src/client/types.ts State",
        _log_states,
        ("/schemas/LogEntry/properties/state", "CANCELED")),
]


def corrected(facts: JSON) -> JSON:
    fixed = copy.deepcopy(facts)
    for erratum in ERRATA:
        erratum.fix(fixed)
    return fixed


CORRECTED = corrected(FACTS)


def _pointer(document: JSON, pointer: str) -> Any:
    node: Any = document
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _template(path: str) -> re.Pattern[str]:
    # A destination may hold slashes (a whole URL); every other parameter is a segment.
    pattern = re.sub(r"\{destination\}", ".+", path)
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", pattern) + "$")


def operation_of(call: Call) -> str:
    """The documented operation a call is: the most literal path template it matches."""
    path = httpx.URL(call.path).path
    matches = [o for o in FACTS["operations"]
               if o["method"] == call.method and _template(o["path"]).match(path)]
    assert matches, f"{call.method} {call.path} is no documented operation"
    return max(matches, key=lambda o: len(re.sub(r"\{[^}]+\}", "", o["path"])))["id"]


def values_for(parameter: JSON) -> list[str]:
    """The values to replay a parameter with: the document's examples, the enum, or
    ``VALUES``, else one of its type."""
    schema = parameter["schema"]
    if schema.get("examples"):
        return [str(value) for value in schema["examples"]]
    if "enum" in schema:
        return [str(value) for value in schema["enum"]]
    if parameter["name"] in VALUES:
        return VALUES[parameter["name"]]
    kind = schema.get("items", schema).get("type")
    return {"integer": ["1"], "boolean": ["true", "false"]}.get(kind, ["x"])


def check(facts: JSON, operation_id: str, call: Call, response: httpx.Response) -> None:
    """The answer has the call's status, one the operation documents, in its schema."""
    assert response.status_code == call.expect, (call.name, response.text)
    answers = _operation(facts, operation_id)["responses"]
    assert str(response.status_code) in answers, (
        f"{call.name}: {response.status_code} is not documented for {operation_id}")
    content = answers[str(response.status_code)]
    if content is None:
        return  # the document gives no body for this answer
    schema = content.get("application/json")
    assert schema is not None, content
    validator = Draft202012Validator(schema_for(facts, schema))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(response.json())]
    assert not errors, f"{call.name} ({operation_id}): {errors}"


def replay(fake: Client, target: Target, operation_id: str) -> list[tuple[Call, httpx.Response]]:
    calls = [c for c in RECIPES[operation_id](Replay(fake, target))
             if operation_of(c) == operation_id]
    assert any(200 <= c.expect < 300 for c in calls), f"{operation_id}: no success replayed"
    try:
        return [(call, call.send(fake.http)) for call in calls]
    finally:
        fake.emulator.quotas = None  # a recipe's plan caps only its own calls


def base_call(calls: list[Call], operation_id: str) -> Call:
    """The call a recipe marks as the base, else its first success."""
    ours = [c for c in calls if operation_of(c) == operation_id and 200 <= c.expect < 300]
    return next((c for c in ours if c.base), ours[0])


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_each_operation_answers_as_documented(fake: Client, target: Target,
                                              operation_id: str) -> None:
    for call, response in replay(fake, target, operation_id):
        check(CORRECTED, operation_id, call, response)


@pytest.mark.parametrize("operation_id", sorted(o["id"] for o in FACTS["operations"]
                                                 if any(p["in"] != "path"
                                                        for p in o["parameters"])))
def test_each_documented_parameter_is_taken(fake: Client, target: Target,
                                            operation_id: str) -> None:
    """Every query or header parameter the OAS documents, with each of its example or
    enum values (``LogEntry`` states as corrected), is accepted where the base call is."""
    def base() -> Call:
        # A fresh recipe for each call: the base call may consume what it made.
        call = base_call(RECIPES[operation_id](Replay(fake, target)), operation_id)
        fake.emulator.quotas = None
        return call

    fixed = base().fixed
    varied = [p for p in _operation(CORRECTED, operation_id)["parameters"]
              if p["in"] != "path" and p["name"] not in fixed]
    assert varied
    for parameter in varied:
        for value in values_for(parameter):
            call = base().varied(parameter["name"], parameter["in"], value)
            check(CORRECTED, operation_id, call, call.send(fake.http))


def test_every_operation_has_a_recipe_and_a_route() -> None:
    assert sorted(RECIPES) == sorted(OPERATIONS)
    routes = {(method, re.sub(r"\{[^}]+\}", "{}", path))
              for path, methods, _ in QSTASH_ROUTES for method in methods}
    for operation in FACTS["operations"]:
        assert (operation["method"], re.sub(r"\{[^}]+\}", "{}", operation["path"])) in routes \
            or operation["id"].startswith("POST /v2/flowControl/"), operation["id"]


def test_the_token_is_taken_as_the_document_says(fake: Client) -> None:
    # OAS security: bearerAuth (Authorization: Bearer) or bearerAuthQuery (?qstash_token=).
    assert FACTS["security"] == ["bearerAuth", "bearerAuthQuery"]
    token = fake.http.headers["Authorization"].removeprefix("Bearer ")
    plain = httpx.Client(base_url=fake.server.url, trust_env=False)
    assert plain.get("/v2/keys", params={"qstash_token": token}).status_code == 200
    assert plain.get("/v2/keys").status_code == 401


@pytest.mark.parametrize("erratum", ERRATA, ids=[e.where for e in ERRATA])
def test_each_erratum_is_a_real_disagreement(erratum: Erratum) -> None:
    pointer, instance = erratum.evidence
    documented = Draft202012Validator(schema_for(FACTS, _pointer(FACTS, pointer)))
    fixed = Draft202012Validator(schema_for(CORRECTED, _pointer(CORRECTED, pointer)))
    assert not documented.is_valid(instance), f"the document already accepts {instance}"
    fixed.validate(instance)


@pytest.mark.skipif(not DOCUMENT, reason="CELERY_QSTASH_OPENAPI names no copy of the document")
def test_the_committed_facts_match_the_document() -> None:
    assert DOCUMENT
    extracted = load_document(Path(DOCUMENT))
    extracted["document"]["commit"] = FACTS["document"]["commit"]
    assert extracted == FACTS, "stale: run scripts/openapi-facts on the document"


#: Documented answers no replay provokes, and why.
NOT_REPLAYED = {
    ("GET /v2/queues/{queueName}", "400"): "the document names no input that is a 400 here",
    ("POST /v2/queues/{queueName}/pause", "400"):
        "the document names no input that is a 400; an unknown queue is a 200 (qstash-js "
        "src/client/queue.test.ts pauses before it creates)",
    ("POST /v2/queues/{queueName}/resume", "400"): "as for pause",
    ("POST /v2/flowControl/{flowControlKey}/pause", "400"):
        "the document names no input that is a 400 here",
    ("POST /v2/flowControl/{flowControlKey}/resume", "400"): "as for pause",
    ("POST /v2/flowControl/{flowControlKey}/unpin", "400"):
        "its parameters are booleans; anything else reads as false",
    ("POST /v2/flowControl/{flowControlKey}/resetRate", "400"):
        "the document names no input that is a 400 here",
    ("POST /v2/flowControl/{flowControlKey}/resetRate", "500"):
        "a server fault of QStash's; the emulator answers no 500 by design",
}


def test_each_documented_answer_is_replayed_or_listed(fake: Client, target: Target) -> None:
    replayed = set()
    for operation_id, build in RECIPES.items():
        replayed |= {(operation_of(c), str(c.expect)) for c in build(Replay(fake, target))
                     if operation_of(c) == operation_id}
        fake.emulator.quotas = None
    documented = {(o["id"], status) for o in FACTS["operations"] for status in o["responses"]}
    assert documented - replayed == set(NOT_REPLAYED)
    assert replayed <= documented
