"""``/api/docs``: the JSON API's OpenAPI description as plain rows for a server-rendered page.

FastAPI's own docs pages load their scripts from a CDN and start them with an inline script: the CSP forbids
both, and an air-gapped site cannot reach a CDN. This reads the same description (``app.openapi()``), so the page
can never disagree with ``/api/openapi.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")
LIMITS = (("minimum", "≥ {}"), ("maximum", "≤ {}"), ("minLength", "at least {} chars"),
          ("maxLength", "at most {} chars"), ("minItems", "at least {} items"), ("maxItems", "at most {} items"),
          ("pattern", "matches {}"))  # fmt: skip


@dataclass(frozen=True)
class Field:
    """A parameter (in path, query, header) or a field of a request body."""

    name: str
    where: str
    type: str
    required: bool
    default: str
    limits: str
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    description: str
    params: list[Field]
    body: str | None  # the request body's schema name
    body_fields: list[Field]


def routes(openapi: dict[str, Any]) -> list[Route]:
    """Every operation of an OpenAPI description, in its order (FastAPI's: the order routes were added)."""
    components = openapi.get("components", {}).get("schemas", {})
    out = []
    for path, item in openapi.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = [_param(p, components) for p in op.get("parameters", [])]
            body, fields = _body(op.get("requestBody"), components)
            out.append(Route(method.upper(), path, op.get("summary", ""), op.get("description", ""), params, body,
                             fields))  # fmt: skip
    return out


def _param(p: dict[str, Any], components: dict[str, Any]) -> Field:
    schema = p.get("schema", {})
    description = p.get("description") or schema.get("description", "")
    return Field(p["name"], p.get("in", ""), type_of(schema, components), bool(p.get("required")),
                 _default(schema), limits_of(schema), description)  # fmt: skip


def _body(body: dict[str, Any] | None, components: dict[str, Any]) -> tuple[str | None, list[Field]]:
    """The request body's schema name and its fields (none: no body)."""
    if body is None:
        return None, []
    content = body.get("content", {})
    media: dict[str, Any] = content.get("application/json") or next(iter(content.values()), {})
    schema = media.get("schema", {})
    name = _ref_name(schema) or schema.get("title") or "object"
    resolved = components.get(name, schema)
    required = set(resolved.get("required", []))
    fields = [Field(f, "body", type_of(s, components), f in required, _default(s), limits_of(s),
                    s.get("description", ""))
              for f, s in resolved.get("properties", {}).items()]  # fmt: skip
    return name, fields


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return str(ref).rsplit("/", 1)[-1] if ref else None


def _plain(value: Any) -> str:
    """A number as people write it (100, not 100.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def type_of(schema: dict[str, Any], components: dict[str, Any]) -> str:
    """A schema's type in words: ``integer``, ``list of string``, ``Relation: adapter, finetune, ...``."""
    name = _ref_name(schema)
    if name is not None:
        target = components.get(name, {})
        return f"{name}: {', '.join(map(str, target['enum']))}" if "enum" in target else name
    if "anyOf" in schema:
        parts = [type_of(s, components) for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(parts) or "null"
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"list of {type_of(schema.get('items', {}), components)}"
    return f"{kind} ({schema['format']})" if "format" in schema else kind


def limits_of(schema: dict[str, Any]) -> str:
    """Bounds and patterns, of the schema or of its non-null alternative (``anyOf`` with null), and of a list's
    items (``each ...``)."""
    own = [schema] + [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    items = [s["items"] for s in own if "items" in s]
    said = [text.format(_plain(s[key])) for s in own for key, text in LIMITS if key in s]
    said += ["each " + text.format(_plain(s[key])) for s in items for key, text in LIMITS if key in s]
    return ", ".join(said)


def _default(schema: dict[str, Any]) -> str:
    return _plain(schema["default"]) if "default" in schema and schema["default"] is not None else ""
