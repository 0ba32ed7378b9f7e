"""Facts from Upstash's OpenAPI document for QStash, and the JSON Schemas they give.

The document (upstash/docs ``qstash/openapi.yaml``) has no licence, so it is not in this
repository. ``scripts/openapi-facts DOCUMENT`` (this module run as a script) extracts what
the replay test (``test_openapi_replay.py``) needs into ``data/openapi-facts.json``: for
every operation its method and path, its parameters (name, place, required, type, enum,
bounds and the document's example values), its request bodies' and answers' JSON Schemas
reduced to structure (types, required fields, properties, items, enums, ``oneOf``...),
and the status codes it documents. No description or prose is kept.

With ``CELERY_QSTASH_OPENAPI=/path/to/openapi.yaml`` the replay test extracts the facts
from the document itself and fails if the committed file is stale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

FACTS_PATH = Path(__file__).parent / "data" / "openapi-facts.json"
#: The schema keywords that are structure; everything else (descriptions, titles,
#: ``deprecated``, ``default``) is left out.
SCHEMA_KEYS = frozenset({
    "type", "properties", "required", "items", "additionalProperties", "enum", "oneOf",
    "anyOf", "allOf", "$ref", "format", "minimum", "maximum", "examples",
})
METHODS = ("get", "put", "post", "delete", "patch")
COMPONENT_REF = "#/components/schemas/"
#: Where the schemas live in a validation schema (``schema_for``).
DEFS_REF = "#/$defs/"

JSON = dict[str, Any]


def _schema(node: Any) -> Any:
    """``node`` with only structural keywords, its ``$ref``s pointing into ``$defs``."""
    if isinstance(node, list):
        return [_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: JSON = {}
    for key, value in node.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "$ref":
            out[key] = DEFS_REF + str(value).removeprefix(COMPONENT_REF)
        elif key == "properties":
            out[key] = {name: _schema(sub) for name, sub in value.items()}
        elif key in ("required", "enum", "examples", "type", "format", "minimum", "maximum"):
            out[key] = value
        else:
            out[key] = _schema(value)
    return out


def _parameters(path_item: JSON, operation: JSON) -> list[JSON]:
    """Path-level and operation-level parameters, the operation's winning (OAS 3.1)."""
    merged: dict[tuple[str, str], JSON] = {}
    for parameter in [*path_item.get("parameters", []), *operation.get("parameters", [])]:
        merged[(parameter["name"], parameter["in"])] = {
            "name": parameter["name"], "in": parameter["in"],
            "required": bool(parameter.get("required", parameter["in"] == "path")),
            "schema": _schema(parameter.get("schema", {})),
        }
    return list(merged.values())


def _content(content: JSON | None) -> JSON | None:
    if not content:
        return None
    return {media: _schema(body.get("schema", {})) for media, body in content.items()}


def extract(document: JSON, source: bytes = b"") -> JSON:
    """The facts of ``document`` (an OpenAPI 3.1 mapping); ``source`` its bytes, hashed."""
    operations = []
    for path, path_item in document["paths"].items():
        for method in METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            body = operation.get("requestBody") or {}
            operations.append({
                "id": operation.get("operationId") or f"{method.upper()} {path}",
                "method": method.upper(),
                "path": path,
                "parameters": _parameters(path_item, operation),
                "requestBody": _content(body.get("content")),
                "responses": {str(status): _content(answer.get("content"))
                              for status, answer in operation["responses"].items()},
            })
    schemes = document.get("components", {}).get("securitySchemes", {})
    return {
        "document": {
            "repository": "upstash/docs", "path": "qstash/openapi.yaml",
            "openapi": document.get("openapi"), "version": document["info"]["version"],
            "sha256": hashlib.sha256(source).hexdigest() if source else None,
        },
        "security": sorted(schemes),
        "schemas": {name: _schema(schema)
                    for name, schema in document["components"]["schemas"].items()},
        "operations": operations,
    }


def load_document(path: Path) -> JSON:
    """The facts of the OpenAPI document at ``path``."""
    raw = path.read_bytes()
    return extract(yaml.safe_load(raw), raw)


def load_facts(path: Path = FACTS_PATH) -> JSON:
    facts: JSON = json.loads(path.read_text(encoding="utf-8"))
    return facts


def dump(facts: Any, indent: str = "") -> str:
    """JSON with each value that fits on one line on one line (a reviewable diff)."""
    flat = json.dumps(facts)
    if len(flat) + len(indent) <= 100 or not isinstance(facts, (dict, list)) or not facts:
        return flat + ("" if indent else "\n")
    inner = indent + " "
    if isinstance(facts, dict):
        items = [f"{inner}{json.dumps(key)}: {dump(value, inner)}"
                 for key, value in facts.items()]
        text = "{\n" + ",\n".join(items) + f"\n{indent}}}"
    else:
        text = "[\n" + ",\n".join(inner + dump(value, inner) for value in facts) + f"\n{indent}]"
    return text + ("" if indent else "\n")


def schema_for(facts: JSON, schema: JSON) -> JSON:
    """A self-contained JSON Schema (2020-12) for ``schema``, its refs resolvable."""
    return {**schema, "$defs": facts["schemas"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/openapi-facts",
        description="Extract the facts the OpenAPI replay test needs from upstash/docs "
                    "qstash/openapi.yaml into tests/emulator/data/openapi-facts.json.")
    parser.add_argument("document", type=Path, help="a copy of qstash/openapi.yaml")
    parser.add_argument("--commit", help="the upstash/docs commit the copy is from")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed facts differ, instead of writing")
    args = parser.parse_args(argv)
    facts = load_document(args.document)
    facts["document"]["commit"] = args.commit
    if args.check:
        committed = load_facts()
        committed["document"]["commit"] = args.commit
        if committed != facts:
            print(f"{FACTS_PATH} is stale: run scripts/openapi-facts {args.document}",
                  file=sys.stderr)
            return 1
        print(f"{FACTS_PATH} matches {args.document}")
        return 0
    FACTS_PATH.write_text(dump(facts), encoding="utf-8")
    print(f"wrote {FACTS_PATH}: {len(facts['operations'])} operations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
