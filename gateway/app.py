"""The HTTP gateway: the example's Worker, route for route, on aiohttp's low-level server.

    GET  /?name=A             Durable Object 'A' count: 0
    GET|POST /increment?name=A[&amount=N]
    GET|POST /decrement?name=A[&amount=N]
    GET  /healthz             ok
    anything else             404 Not found

A changing request may carry an ``Idempotency-Key`` header: sent again, it is applied once and
answered as the first time. Errors of a changing request name the key used (the caller's or a
fresh one), so that a client can retry safely after a 503.

Answers are the example's plain text, or ``{"name": ..., "count": ...}`` for a client that
accepts application/json. Errors carry their reason in the body; the status comes from the error
(`counters.errors`), and 503s say when to retry.

Served by `aiohttp.web.Server` with a route table of our own rather than by `web.Application`:
the application's request object, router and signals cost about a third of a request's time on
the hot path (see docs/benchmarks.md); the protocol, parser and responses are aiohttp's all the
same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import HttpVersion11, web

from counters.client import Namespace, new_op_id
from counters.errors import CountersError, InvalidInput, InvalidName
from counters.operations import Operation
from counters.validation import parse_amount, validate_name

from .query import QueryParams

__all__ = ["Gateway"]

NO_NAME = (
    "Select a Durable Object to contact by using"
    " the `name` URL query string parameter, for example, ?name=A"
)
READ_METHODS = ("GET", "HEAD")
CHANGE_METHODS = ("GET", "POST")
FORM = "application/x-www-form-urlencoded"
OP_ID = web.RequestKey("op_id", str)  # the operation id of a changing request
_KEY = re.compile(r"[\x21-\x7e]{1,255}")

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Gateway:
    """The gateway over `namespace`; the caller owns Ray and the namespace's lifetime.

    ``server()`` is what aiohttp serves; ``maintaining()`` runs passivation in the background
    while the gateway serves.
    """

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        self._routes: dict[str, Handler] = {
            "/": self._read,
            "/increment": self._changer("increment"),
            "/decrement": self._changer("decrement"),
            "/healthz": _healthz,
        }

    def server(self, **kwargs: Any) -> web.Server:
        """An aiohttp low-level server answering with this gateway; `kwargs` go to aiohttp."""
        return web.Server(self.handle, **kwargs)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request: its route's answer, or our errors as responses."""
        handler = self._routes.get(request.path, _not_found)
        try:
            expect = request.headers.get("Expect")
            if expect is not None:
                await _expect(request, expect)
            return await handler(request)
        except CountersError as error:
            headers = {"Retry-After": "1"} if error.http_status in (503, 507) else {}
            if OP_ID in request:
                headers["Idempotency-Key"] = request[OP_ID]  # retry with it: applied at most once
            if error.http_status >= 500:
                log.warning("%s %s failed: %s", request.method, request.path_qs, error)
            body = {"error": error.code, "message": error.message}
            return _respond(request, error.http_status, error.message, body, headers)
        except web.HTTPMethodNotAllowed as error:
            body = {"error": "method_not_allowed", "message": error.text or ""}
            headers = {"Allow": error.headers["Allow"]}
            return _respond(request, 405, error.text or "", body, headers)

    @contextlib.asynccontextmanager
    async def maintaining(self) -> AsyncIterator[None]:
        """In the background: idle objects leave memory, idle per-name actors stop."""
        namespace = self.namespace

        async def run() -> None:
            interval = min(30.0, max(0.5, namespace.settings.idle_timeout / 4))
            while True:
                await asyncio.sleep(interval)
                try:
                    await namespace.maintain()
                except Exception:  # keep going: a failed round is retried at the next one
                    log.exception("passivation round failed")

        task = asyncio.create_task(run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # The handlers call `Namespace.call` with the operation rather than a stub's method: the
    # same operation, one coroutine less per request.

    async def _read(self, request: web.BaseRequest) -> web.StreamResponse:
        _allow(request, READ_METHODS)
        name = _name(QueryParams(request.rel_url.raw_query_string))
        count = await self.namespace.call(Operation(name, "get_counter_value"))
        return _count_response(request, name, count)

    def _changer(self, method: str) -> Handler:
        async def change(request: web.BaseRequest) -> web.StreamResponse:
            _allow(request, CHANGE_METHODS)
            params = await _params(request)
            name = _name(params)
            amount_text = params.first("amount")
            amount = 1 if amount_text is None else parse_amount(amount_text)
            op_id = request[OP_ID] = _idempotency_key(request) or new_op_id()
            count = await self.namespace.call(Operation(name, method, (amount,), op_id))
            return _count_response(request, name, count)

        return change


async def _expect(request: web.BaseRequest, expect: str) -> None:
    """Let a client that waits for it send its body, as aiohttp's router would."""
    if request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's own size starts after this line


async def _healthz(request: web.BaseRequest) -> web.StreamResponse:
    _allow(request, READ_METHODS)
    return _respond(request, 200, "ok", {"status": "ok"})


async def _not_found(request: web.BaseRequest) -> web.StreamResponse:
    return _respond(request, 404, "Not found", {"error": "not_found", "message": "Not found"})


def _idempotency_key(request: web.BaseRequest) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY.fullmatch(key):
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


def _allow(request: web.BaseRequest, methods: tuple[str, ...]) -> None:
    if request.method not in methods:
        allowed = ", ".join(methods)
        raise web.HTTPMethodNotAllowed(
            request.method,
            list(methods),
            text=f"Method {request.method} is not allowed on {request.path}; use {allowed}",
        )


async def _params(request: web.BaseRequest) -> QueryParams:
    raw = [request.rel_url.raw_query_string]
    if request.method == "POST" and request.content_type == FORM:
        raw.append(await request.text())
    return QueryParams(*raw)


def _name(params: QueryParams) -> str:
    """The first `name`, valid; the example's message if there is none."""
    name = params.first("name")
    if not name:
        raise InvalidName(NO_NAME)
    return validate_name(name)


def _count_response(request: web.BaseRequest, name: str, count: int) -> web.StreamResponse:
    return _respond(
        request, 200, f"Durable Object '{name}' count: {count}", {"name": name, "count": count}
    )


def _wants_json(request: web.BaseRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _respond(
    request: web.BaseRequest,
    status: int,
    text: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> web.Response:
    headers = headers or None
    if _wants_json(request):
        return web.Response(
            status=status,
            text=json.dumps(body),
            content_type="application/json",
            headers=headers,
        )
    return web.Response(status=status, text=text, headers=headers)  # text/plain; charset=utf-8
