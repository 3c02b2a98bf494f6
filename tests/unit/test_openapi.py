"""The API contract: valid OpenAPI 3.1, and exactly the gateway's routes and methods."""

from __future__ import annotations

from typing import Any, cast

import schemathesis
from schemathesis.core.result import Ok

from counters.client import Namespace
from gateway import Gateway
from gateway.openapi import openapi

ROUTES = Gateway(cast(Namespace, None)).routes  # the table only: no Ray, no namespace


def test_every_route_and_method_is_documented_and_nothing_else() -> None:
    document = openapi(token=False)
    documented = {
        path: sorted(method.upper() for method in item) for path, item in document["paths"].items()
    }
    served = {path: sorted(route.methods) for path, route in ROUTES.items()}
    assert documented == served


def test_the_document_is_valid_openapi_3_1() -> None:
    for token in (False, True):
        schema = schemathesis.openapi.from_dict(openapi(token))  # validates as it loads
        operations = list(schema.get_all_operations())
        assert all(isinstance(operation, Ok) for operation in operations), operations
        assert len(operations) == sum(len(item) for item in openapi(token)["paths"].values())


def test_with_a_token_every_route_but_healthz_needs_it() -> None:
    assert openapi(token=False)["security"] == []
    document: dict[str, Any] = openapi(token=True)
    assert document["security"] == [{"token": []}]
    unguarded = [
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "security" in operation
    ]
    assert unguarded == [("/healthz", "get"), ("/healthz", "head")]
