"""The gateway's API contract: an OpenAPI 3.1 document of every route, served at /openapi.json.

Built here from a few parts rather than written out, so that each parameter, header and error is
described once. A test holds it to the gateway's route table (a route cannot go undocumented),
and schemathesis fuzzes a live service against it.

What JSON Schema cannot say is said in words: a name is at most 1024 bytes of UTF-8 (the
schema's 1024 characters, and the ``counter-name`` format), and ``POST`` also takes its
parameters from a form body.
"""

from __future__ import annotations

import json
from typing import Any

from counters.listing import DEFAULT_LIMIT, MAX_LIMIT
from counters.validation import INT64_MAX, INT64_MIN, MAX_NAME_BYTES, MAX_OP_ID_CHARS

__all__ = ["NAME_FORMAT", "OPENAPI", "openapi", "openapi_json"]

NAME_FORMAT = "counter-name"
_NO_CONTROLS = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_MAX_NAMES = 1000

_INT64 = {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX}
_NAME = {
    "type": "string",
    "format": NAME_FORMAT,
    "minLength": 1,
    "maxLength": MAX_NAME_BYTES,
    "pattern": _NO_CONTROLS,
    "description": f"1 to {MAX_NAME_BYTES} bytes of UTF-8 without control characters",
}
_TEXT = {  # a prefix or a cursor: a name's characters, or nothing
    "type": "string",
    "maxLength": MAX_NAME_BYTES,
    "pattern": _NO_CONTROLS,
}
_COUNTER = {
    "type": "object",
    "required": ["name", "count", "version"],
    "properties": {
        "name": {"type": "string"},
        "count": _INT64,
        "version": {**_INT64, "minimum": 0},
    },
}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _header(name: str, pattern: str, description: str) -> Any:
    schema = {"type": "string", "pattern": pattern}
    return {"name": name, "in": "header", "schema": schema, "description": description}


_PARAMETERS = {
    "name": _query("name", _NAME, "the counter", required=True),
    "amount": _query("amount", _INT64, "how much to add or take (default 1)"),
    "min": _query("min", _INT64, "the count may not go below this (else 409)"),
    "max": _query("max", _INT64, "the count may not go above this (else 409)"),
    "value": _query("value", _INT64, "the new count", required=True),
    "Idempotency-Key": _header(
        "Idempotency-Key",
        f"^[\\x21-\\x7e]{{1,{MAX_OP_ID_CHARS}}}$",
        "sent again with the same request, applied once and answered as the first time",
    ),
    "If-Match": _header(
        "If-Match",
        '^(\\*|"[0-9]{1,19}"|[0-9]{1,19})$',
        'apply only if the counter is at this version ("7", or 7), else 412; * is no condition',
    ),
}

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_RETRY_AFTER = {
    "Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"},
}
_KEY_HEADER = {
    "Idempotency-Key": {
        "schema": {"type": "string"},
        "description": "the key this change was sent with (the caller's, or one made up): "
        "sending the same request with it again is safe",
    },
}
_ERRORS = {
    "400": "bad input: nothing changed",
    "401": "the gateway needs its token",
    "409": "the change would take the count past min or max: nothing changed",
    "412": "the counter is not at the version If-Match names: nothing changed",
    "422": "the count would leave int64, or the Idempotency-Key was used for another request",
    "503": "no host, or storage, could take the request; retry (with the same key)",
    "507": "the disk is full: nothing was stored",
}


def _error(status: str, key: bool = False) -> Any:
    headers: dict[str, Any] = dict(_RETRY_AFTER) if status in ("503", "507") else {}
    if key:
        headers.update(_KEY_HEADER)
    if status == "401":
        headers["WWW-Authenticate"] = {"schema": {"type": "string"}}
    return {
        "description": _ERRORS[status],
        "headers": headers,
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
        },
    }


def _counter_answer(description: str, json_schema: Any) -> Any:
    return {
        "description": description,
        "headers": {
            "ETag": {
                "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
                "description": "the counter's version",
                "required": True,
            }
        },
        "content": {
            "text/plain": {
                "schema": {"type": "string"},
                "example": "Durable Object 'A' count: 5",
            },
            "application/json": {"schema": json_schema},
        },
    }


def _operation(
    summary: str,
    parameters: list[Any],
    ok: Any,
    errors: tuple[str, ...] = ("400", "503"),
    change: bool = False,
) -> Any:
    responses = {"200": ok}
    for status in ("401", *errors):
        responses[status] = _error(status, key=change and status != "401")
    return {"summary": summary, "parameters": parameters, "responses": responses}


def _head_of(operation: Any) -> Any:
    """HEAD: GET's answer without a body."""
    responses = {
        status: {key: value for key, value in answer.items() if key != "content"}
        for status, answer in operation["responses"].items()
    }
    return {
        **operation,
        "summary": operation["summary"] + " (headers only)",
        "responses": responses,
    }


def _refs(*names: str) -> list[Any]:
    return [{"$ref": f"#/components/parameters/{name}"} for name in names]


_COUNT = _counter_answer("the counter", {"$ref": "#/components/schemas/Counter"})
_CHANGE_ERRORS = ("400", "409", "412", "422", "503", "507")
_REPLACED = _counter_answer(
    "the counter after, and what it was before",
    {
        "allOf": [
            {"$ref": "#/components/schemas/Counter"},
            {
                "type": "object",
                "required": ["previous"],
                "properties": {
                    "previous": {
                        "type": "object",
                        "required": ["count", "version"],
                        "properties": {"count": _INT64, "version": {**_INT64, "minimum": 0}},
                    }
                },
            },
        ]
    },
)
_LISTING_QUERY = [
    {
        "name": "name",
        "in": "query",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": _NAME, "minItems": 1, "maxItems": _MAX_NAMES},
        "description": f"up to {_MAX_NAMES} counters, answered in the order asked (a name "
        "never changed reads 0 at version 0); not with prefix, after or limit",
    },
    _query("prefix", _TEXT, "list the counters that exist whose names start with this"),
    _query("after", _TEXT, "list from after this name: the `next` of the page before"),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        f"counters per page (default {DEFAULT_LIMIT})",
    ),
]
_MANY = {
    "description": "the counters asked for, or a page of the listing ('name: count' lines as "
    "text; the next page's address in a Link header)",
    "headers": {"Link": {"schema": {"type": "string"}}},
    "content": {
        "text/plain": {"schema": {"type": "string"}},
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["counters"],
                "properties": {
                    "counters": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Counter"},
                    },
                    "next": {"type": ["string", "null"]},
                },
            }
        },
    },
}
_EVENTS = {
    "description": "Server-Sent Events: each counter's value now, then one event per change; "
    "`id:` is the version of every name watched, in the order asked, comma separated; "
    "`data:` the counter as JSON",
    "content": {
        "text/event-stream": {
            "schema": {  # one event (OpenAPI 3.2 would call it itemSchema)
                "type": "object",
                "required": ["id", "data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]*(,[0-9]*)*$"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": "#/components/schemas/Counter"},
                    },
                },
            }
        }
    },
}
_WATCH_NAMES = {
    "name": "name",
    "in": "query",
    "required": True,
    "style": "form",
    "explode": True,
    "schema": {"type": "array", "items": _NAME, "minItems": 1, "maxItems": _MAX_NAMES},
}
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "schema": {"type": "string"},
    "description": "resume: the id of the last event seen; any other value resumes nothing",
}
_PLAIN = {
    "text/plain": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
}

_READ = _operation("Read a counter", _refs("name"), _COUNT)
_CHANGE = ("name", "amount", "min", "max", "Idempotency-Key", "If-Match")
_INCREMENT = _operation("Add to a counter", _refs(*_CHANGE), _COUNT, _CHANGE_ERRORS, change=True)
_DECREMENT = _operation("Take from a counter", _refs(*_CHANGE), _COUNT, _CHANGE_ERRORS, change=True)
_LIST = _operation("Many counters at once, or a page of the listing", _LISTING_QUERY, _MANY)
_UI = _operation(
    "The page: counters by prefix, live",
    [],
    {"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
    errors=(),
)
_SPEC = _operation(
    "This document",
    [],
    {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}},
    errors=(),
)
_METRICS = _operation(
    "This gateway process's own metrics (CPU, memory, requests in progress, streams open); "
    "requests by route and the hosts' series are in Ray's metrics export",
    [],
    {
        "description": "Prometheus' text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    errors=(),
)
_HEALTH = {
    "summary": "Whether the gateway answers (no token needed)",
    "security": [],
    "parameters": [],
    "responses": {"200": {"description": "ok", "content": _PLAIN}},
}


def openapi(token: bool) -> dict[str, Any]:
    """The document for a gateway with a token (every route but /healthz needs it) or not."""
    return {**OPENAPI, "security": [{"token": []}] if token else []}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "counters",
        "version": "1",
        "description": (
            "Durable, named counters: the Durable Objects counter example's URLs and answers, "
            "and more. Answers are text unless the request accepts application/json. POST "
            "takes its parameters from the query string or a form body."
        ),
    },
    "paths": {
        "/": {"get": _READ, "head": _head_of(_READ)},
        "/increment": {"get": _INCREMENT, "post": _INCREMENT},
        "/decrement": {"get": _DECREMENT, "post": _DECREMENT},
        "/set": {
            "post": _operation(
                "Set a counter",
                _refs("name", "value", "Idempotency-Key", "If-Match"),
                _REPLACED,
                ("400", "412", "422", "503", "507"),
                change=True,
            )
        },
        "/delete": {
            "post": _operation(
                "Forget a counter (it reads 0; its version goes on)",
                _refs("name", "Idempotency-Key", "If-Match"),
                _REPLACED,
                ("400", "412", "422", "503", "507"),
                change=True,
            )
        },
        "/counters": {"get": _LIST, "head": _head_of(_LIST), "post": _LIST},
        "/watch": {
            "get": _operation(
                "Live updates of counters",
                [_WATCH_NAMES, _LAST_EVENT_ID],
                _EVENTS,
                ("400", "503"),
            )
        },
        "/ui": {"get": _UI, "head": _head_of(_UI)},
        "/openapi.json": {"get": _SPEC, "head": _head_of(_SPEC)},
        "/metrics": {"get": _METRICS, "head": _head_of(_METRICS)},
        "/healthz": {"get": _HEALTH, "head": _head_of(_HEALTH)},
    },
    "components": {
        "parameters": _PARAMETERS,
        "schemas": {"Counter": _COUNTER, "Error": _ERROR},
        "securitySchemes": {
            "token": {
                "type": "http",
                "scheme": "bearer",
                "description": "when the gateway has --auth-token-file (then every route but "
                "/healthz needs it)",
            }
        },
    },
}


def openapi_json(token: bool) -> bytes:
    return json.dumps(openapi(token), indent=1).encode()
