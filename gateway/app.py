"""The HTTP gateway: the example's Worker, route for route, on aiohttp's low-level server.

    GET  /?name=A             Durable Object 'A' count: 0
    GET|POST /increment?name=A[&amount=N][&min=L][&max=H]
    GET|POST /decrement?name=A[&amount=N][&min=L][&max=H]
    POST /set?name=A&value=N
    POST /delete?name=A
    GET  /counters?name=A&name=B...   {"counters": [{"name", "count", "version"}, ...]}
    GET  /counters[?prefix=P][&limit=N][&after=CURSOR]   the same, for the counters that exist,
                              in name order, a page at a time, and "next": the next page's cursor
    GET  /watch?name=A[&name=B...]   Server-Sent Events: each value now, then each change
    GET  /ui                  a page: counters by prefix, live, with + and - buttons
    GET  /openapi.json        this API's contract, OpenAPI 3.1 (gateway/openapi.py)
    GET  /metrics             this process's own series, for Prometheus (gateway/process_metrics.py)
    GET  /healthz             ok
    anything else             404 Not found

Every counter has a version, 0 until its first change and one more with each change; every
answer about one counter carries it as ``ETag: "7"`` (and in JSON), and a change sent with
``If-Match: "7"`` is applied only if the counter is still at version 7, else 412
``version_mismatch`` (compare-and-set). ``min`` and ``max`` bound the count an increment or
decrement may leave: past them, 409 ``out_of_bounds``. Either way nothing changes. `set` and
`delete` answer the counter after the change and, in JSON, what it was before (``previous``).

A changing request may carry an ``Idempotency-Key`` header: sent again, it is applied once and
answered as the first time. Errors of a changing request name the key used (the caller's or a
fresh one), so that a client can retry safely after a 503.

Answers are the example's plain text, or ``{"name": ..., "count": ...}`` for a client that
accepts application/json. Errors carry their reason in the body, as ``{"error": code, "message":
text}`` for JSON; the status comes from the error (`counters.errors`, or aiohttp's own such as 413
for a body over its size limit), and 503s say when to retry.

A client's malformed request (a broken request line or header) is answered 400 by aiohttp and
logged in one line, at most once every ten seconds (`ServerLog`), so that a client cannot flood
the log with tracebacks; errors of the server itself keep theirs.

Served by `aiohttp.web.Server` with a route table of our own rather than by `web.Application`:
the application's request object, router and signals run for every request, and the bench's
raw ceiling answers 10 to 20 % more requests than the application's (docs/benchmarks.md); the
protocol, parser and responses are aiohttp's all the same.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import importlib.resources
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple
from urllib.parse import urlencode

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger

from counters.client import Namespace, Watch, new_op_id
from counters.errors import (
    CountersError,
    InvalidAmount,
    InvalidInput,
    InvalidName,
    Overloaded,
    WatcherDropped,
)
from counters.listing import DEFAULT_LIMIT
from counters.metrics import RequestMetrics
from counters.operations import Operation, trimmed
from counters.validation import parse_amount, parse_integer, validate_name

from .openapi import openapi_json
from .process_metrics import CONTENT_TYPE_LATEST, ProcessMetrics
from .query import QueryParams

__all__ = ["SERVER_LIMITS", "Gateway", "Route", "ServerLog"]

NO_NAME = (
    "Select a Durable Object to contact by using"
    " the `name` URL query string parameter, for example, ?name=A"
)
READ_METHODS = ("GET", "HEAD")
CHANGE_METHODS = ("GET", "POST")
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))  # as labels
FORM = "application/x-www-form-urlencoded"
OP_ID = web.RequestKey("op_id", str)  # the operation id of a changing request
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_ETAG = re.compile(r'"([0-9]{1,19})"|([0-9]{1,19})')  # as we send it, or bare
_VERSION = re.compile("[0-9]{1,19}")
_LISTING = ("prefix", "after", "limit")  # the parameters of a listing
_EVENT_STREAM = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
}
HEARTBEAT = 15.0  # seconds between comments on an idle stream: proxies keep it, gone peers show
WRITE_TIMEOUT = 10.0  # seconds an event may wait for a slow consumer before it is dropped
MAX_NAMES = 1000  # names in one GET /counters
# aiohttp's request line is 8 KiB at most, too short for a thousand names in a URL: 64 KiB.
# (More names than fit go in a POST's form body, up to 1 MiB.)
SERVER_LIMITS = {"max_line_size": 65536}
# Error codes where the reason would not do: Python 3.13 renamed 413's to "Content Too Large".
_CODES = {413: "request_too_large"}

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Route(NamedTuple):
    methods: tuple[str, ...]
    handler: Handler


class Gateway:
    """The gateway over `namespace`; the caller owns Ray and the namespace's lifetime.

    ``server()`` is what aiohttp serves; ``maintaining()`` runs passivation in the background
    while the gateway serves.
    """

    def __init__(self, namespace: Namespace, auth_token: str | None = None) -> None:
        self.namespace = namespace
        # Every request but /healthz must bear it, if set (`_authorized`).
        self._token = None if auth_token is None else auth_token.encode()
        self._contract = openapi_json(token=auth_token is not None)
        self._watchers = 0  # /watch streams open or opening now
        self._streams: set[Watch] = set()  # the watches of those open
        self._in_progress = 0  # requests being answered
        self._metrics = RequestMetrics()  # through Ray's export (`counters/metrics.py`)
        self._process_metrics = ProcessMetrics(lambda: self._in_progress, lambda: self.streams)
        # Every route and its methods: what is served, and what /openapi.json must describe.
        self.routes: dict[str, Route] = {
            "/": Route(READ_METHODS, self._read),
            "/increment": Route(CHANGE_METHODS, self._changer("add")),
            "/decrement": Route(CHANGE_METHODS, self._changer("subtract")),
            "/set": Route(("POST",), self._set),
            "/delete": Route(("POST",), self._delete),
            # POST: names in a form body, past a URL's size
            "/counters": Route((*READ_METHODS, "POST"), self._read_many),
            "/watch": Route(("GET",), self._watch),
            "/ui": Route(READ_METHODS, _page),
            "/openapi.json": Route(READ_METHODS, self._openapi),
            "/metrics": Route(READ_METHODS, self._process_metrics_page),
            "/healthz": Route(READ_METHODS, _healthz),
        }

    def server(self, **kwargs: Any) -> web.Server:
        """An aiohttp low-level server answering with this gateway; `kwargs` go to aiohttp.

        Its log is aiohttp's, through a `ServerLog` unless `kwargs` name another ``logger``.
        """
        kwargs.setdefault("logger", ServerLog(server_logger))
        return web.Server(self.handle, **{**SERVER_LIMITS, **kwargs})

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request: its route's answer, or our errors as responses; and count it,
        by route (one we serve, else ``other``, so that a client cannot make series without
        end), method and status. One coroutine: this runs for every request."""
        started = time.perf_counter()
        path = request.path
        route = self.routes.get(path)
        response: web.StreamResponse
        self._in_progress += 1
        try:
            if self._token is not None and path != "/healthz" and not self._authorized(request):
                response = _unauthorized(request)
            elif route is None:
                body = {"error": "not_found", "message": "Not found"}
                response = _respond(request, 404, "Not found", body)
            else:
                _allow(request, route.methods)
                expect = request.headers.get("Expect")
                if expect is not None:
                    await _expect(request, expect)
                response = await route.handler(request)
        except CountersError as error:
            headers = {"Retry-After": "1"} if error.http_status in (503, 507) else {}
            if OP_ID in request:
                headers["Idempotency-Key"] = request[OP_ID]  # retry with it: applied at most once
            if error.http_status >= 500:
                log.warning("%s %s failed: %s", request.method, request.path_qs, error)
            body = {"error": error.code, "message": error.message}
            response = _respond(request, error.http_status, error.message, body, headers)
        except web.HTTPError as error:  # aiohttp's, e.g. 413 from request.text(), or _allow's 405
            text = error.text or ""
            body = {"error": _error_code(error), "message": text}
            headers = {k: v for k, v in error.headers.items() if k.lower() != "content-type"}
            response = _respond(request, error.status, text, body, headers)
        except Exception:  # a bug of ours: still an answer in our form, and the key to retry with
            log.exception("%s %s failed", request.method, request.path_qs)
            headers = {"Idempotency-Key": request[OP_ID]} if OP_ID in request else {}
            text = "internal error"
            if OP_ID in request:
                text += "; the change may or may not have been applied"
            response = _respond(request, 500, text, {"error": "internal", "message": text}, headers)
        finally:
            self._in_progress -= 1
        method = request.method
        counted = "other" if route is None else path
        self._metrics.request(counted, method if method in _METHODS else "other", response.status)
        self._process_metrics.observe(counted, time.perf_counter() - started)
        return response

    @contextlib.asynccontextmanager
    async def maintaining(self) -> AsyncIterator[None]:
        """In the background: idle objects leave memory, idle per-name actors stop, and each
        second the requests counted and the operations waiting per host are recorded. At the
        end, the /watch streams end too, so that the server can stop."""
        namespace = self.namespace

        async def passivate() -> None:
            interval = min(30.0, max(0.5, namespace.settings.idle_timeout / 4))
            while True:
                await asyncio.sleep(interval)
                try:
                    await namespace.maintain()
                except Exception:  # keep going: a failed round is retried at the next one
                    log.exception("passivation round failed")

        async def sample() -> None:
            while True:
                await asyncio.sleep(1.0)
                self._metrics.flush()
                namespace.record_queued()

        tasks = [asyncio.create_task(passivate()), asyncio.create_task(sample())]
        try:
            yield
        finally:
            self.close_streams()
            self._metrics.flush()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _process_metrics_page(self, request: web.BaseRequest) -> web.StreamResponse:
        """This process's own series (`process_metrics.py`); the rest are Ray's to export."""
        return web.Response(
            body=self._process_metrics.text(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _openapi(self, request: web.BaseRequest) -> web.StreamResponse:
        """The API contract (`gateway/openapi.py`), as JSON whatever the Accept."""
        return web.Response(body=self._contract, content_type="application/json")

    def _authorized(self, request: web.BaseRequest) -> bool:
        """Whether the request bears the token: ``Bearer <token>``, or as the password of
        ``Basic`` (what a browser sends for the page and its streams once asked), compared
        in constant time."""
        assert self._token is not None
        kind, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if kind.lower() == "bearer":
            offered = credentials.strip().encode("ascii", "replace")
        elif kind.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except ValueError:
                return False
            offered = decoded.partition(b":")[2]
        else:
            return False
        return hmac.compare_digest(offered, self._token)

    # The handlers call `Namespace.call` with the operation rather than a stub's method: the
    # same operation, one coroutine less per request.

    async def _read(self, request: web.BaseRequest) -> web.StreamResponse:
        name = _name(QueryParams(request.rel_url.raw_query_string))
        count, version = await self.namespace.call(Operation(name, "read"))
        return _count_response(request, name, count, version)

    def _changer(self, method: str) -> Handler:
        async def change(request: web.BaseRequest) -> web.StreamResponse:
            params = await _params(request)
            name = _name(params)
            amount_text = params.first("amount")
            amount = 1 if amount_text is None else parse_amount(amount_text)
            floor = _integer(params, "min")
            ceiling = _integer(params, "max")
            args = trimmed(amount, floor, ceiling, _if_match(request))
            op_id = request[OP_ID] = _idempotency_key(request) or new_op_id()
            count, version = await self.namespace.call(Operation(name, method, args, op_id))
            return _count_response(request, name, count, version)

        return change

    async def _set(self, request: web.BaseRequest) -> web.StreamResponse:
        params = await _params(request)
        name = _name(params)
        value = _integer(params, "value")
        if value is None:
            raise InvalidAmount("set needs a value: /set?name=A&value=N")
        return await self._replace(request, name, "set", value, trimmed(value, _if_match(request)))

    async def _delete(self, request: web.BaseRequest) -> web.StreamResponse:
        name = _name(await _params(request))
        return await self._replace(request, name, "delete", 0, trimmed(_if_match(request)))

    async def _replace(
        self, request: web.BaseRequest, name: str, method: str, count: int, args: tuple[Any, ...]
    ) -> web.StreamResponse:
        op_id = request[OP_ID] = _idempotency_key(request) or new_op_id()
        before, was, version = await self.namespace.call(Operation(name, method, args, op_id))
        previous = {"count": before, "version": was}
        return _count_response(request, name, count, version, {"previous": previous})

    async def _read_many(self, request: web.BaseRequest) -> web.StreamResponse:
        params = await _params(request)
        unknown = params.names() - {"name", *_LISTING}
        if unknown:  # a typo (`prefx`) would list every counter: say so instead
            raise InvalidInput(
                f"unknown parameter {sorted(unknown)[0]!r:.60}; /counters takes name (many "
                "times), or prefix, after and limit"
            )
        raw = params.all("name")
        if not raw:
            return await self._list(request, params)
        listing = [key for key in _LISTING if params.first(key) is not None]
        if listing:
            raise InvalidInput(f"name and {listing[0]} do not go together: list, or name counters")
        if len(raw) > MAX_NAMES:
            raise InvalidInput(f"at most {MAX_NAMES} names at once, not {len(raw)}")
        names = [validate_name(name) for name in raw]
        answers = await asyncio.gather(
            *(self.namespace.call(Operation(name, "read")) for name in names)
        )
        counters = [
            {"name": name, "count": count, "version": version}
            for name, (count, version) in zip(names, answers, strict=True)
        ]
        lines = "\n".join(f"{c['name']}: {c['count']}" for c in counters)
        return _respond(request, 200, lines, {"counters": counters})

    async def _list(self, request: web.BaseRequest, params: QueryParams) -> web.StreamResponse:
        """The counters that exist, in name order, a page at a time (`counters.listing`)."""
        prefix = params.first("prefix") or ""
        after = params.first("after") or ""
        limit_text = params.first("limit")
        limit = DEFAULT_LIMIT if limit_text is None else parse_integer(limit_text, "limit")
        page = await self.namespace.list_page(prefix, after, limit)
        counters = [
            {"name": name, "count": count, "version": version}
            for name, (count, version) in page.items
        ]
        lines = "\n".join(f"{c['name']}: {c['count']}" for c in counters)
        headers = {}
        if page.next is not None:  # for a text client: where the next page is
            query = urlencode({"prefix": prefix, "after": page.next, "limit": limit})
            headers["Link"] = f'</counters?{query}>; rel="next"'
        return _respond(request, 200, lines, {"counters": counters, "next": page.next}, headers)

    async def _watch(self, request: web.BaseRequest) -> web.StreamResponse:
        """Server-Sent Events: each name's value now, then each change (`counters.watching`).

        Each event's ``id:`` is the version of every name watched, in the order asked, comma
        separated (one name: its version), so that a browser reconnecting with
        ``Last-Event-ID`` gets only the names that changed meanwhile, at their latest value.
        """
        raw = QueryParams(request.rel_url.raw_query_string).all("name")
        if not raw:
            raise InvalidName("name which counters to watch: /watch?name=A&name=B")
        if len(raw) > MAX_NAMES:
            raise InvalidInput(f"at most {MAX_NAMES} names at once, not {len(raw)}")
        names = [validate_name(name) for name in dict.fromkeys(raw)]
        since = _last_event_id(request.headers.get("Last-Event-ID"), names)
        limit = self.namespace.settings.max_watchers
        if self._watchers >= limit:
            raise Overloaded(
                f"this gateway serves {limit} watchers at most (--max-watchers); "
                "try again later, or another gateway"
            )
        self._watchers += 1  # counted before the first await: the cap is a bound
        try:
            async with await self.namespace.watching(names, since) as watch:
                self._streams.add(watch)
                try:
                    response = web.StreamResponse(headers=_EVENT_STREAM)
                    await response.prepare(request)
                    try:
                        await _stream(request, response, watch, names)
                    except (WatcherDropped, TimeoutError):
                        # Too slow to take the changes (they piled up, or a write could not
                        # finish): dropped, its connection and whatever it buffers with it.
                        # A browser resumes with Last-Event-ID.
                        if request.transport is not None:
                            request.transport.abort()
                    except ConnectionError:
                        pass  # gone
                    return response
                finally:
                    self._streams.discard(watch)
        finally:
            self._watchers -= 1

    @property
    def streams(self) -> int:
        """/watch streams open (or opening) now."""
        return self._watchers

    def close_streams(self) -> None:
        """End every /watch stream (the gateway stops: they would never end by themselves);
        browsers reconnect, to another gateway if there is one."""
        for watch in list(self._streams):
            watch.close()


async def _stream(
    request: web.BaseRequest, response: web.StreamResponse, watch: Watch, names: list[str]
) -> None:
    """Write `watch`'s values as events until the peer goes (seen within a second: the
    stream's slot is free again), with a comment on an idle stream now and then."""
    quiet_since = time.monotonic()
    while request.transport is not None and not request.transport.is_closing():
        try:
            value = await asyncio.wait_for(anext(watch), 1.0)
        except StopAsyncIteration:
            return  # closed: the gateway stops
        except TimeoutError:
            if time.monotonic() - quiet_since < HEARTBEAT:
                continue
            event = b": still here\n\n"  # proxies keep the stream; a gone peer shows
        else:
            ids = ",".join(str(watch.seen.get(name, "")) for name in names)
            data = json.dumps(dataclasses.asdict(value))
            event = f"id: {ids}\ndata: {data}\n\n".encode()
        await asyncio.wait_for(response.write(event), WRITE_TIMEOUT)
        quiet_since = time.monotonic()


class ServerLog(logging.Logger):
    """The logger of aiohttp's server: `target`, with a client's malformed request told briefly.

    aiohttp logs a request it cannot parse (answered 400) at ERROR with its traceback; here it
    becomes one WARNING line naming the peer and the parser's reason, at most one such line every
    `interval` seconds, which says how many it left out since the last one. Every other record,
    a handler's failure with its traceback included, goes to `target` as it is.
    """

    def __init__(self, target: logging.Logger, interval: float = 10.0) -> None:
        super().__init__(target.name)
        self.target = target
        self.interval = interval
        self._next = float("-inf")  # when the next malformed-request line may be logged
        self._suppressed = 0

    def isEnabledFor(self, level: int) -> bool:
        return self.target.isEnabledFor(level)  # the target's levels, configured as ever

    def handle(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            self.target.handle(record)
            return
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self.interval
        args = record.args
        peer = args[0] if isinstance(args, tuple) and len(args) == 1 and args[0] else "a client"
        # The parser's message may quote the request over several lines: keep its first.
        reason = (error.message.strip().splitlines() or [type(error).__name__])[0]
        reason = reason.rstrip(":")[:200]
        suppressed = ""
        if self._suppressed:
            suppressed = f"; {self._suppressed} similar lines suppressed since the last one"
            self._suppressed = 0
        level = min(record.levelno, logging.WARNING)  # aiohttp's DEBUG for non-HTTP stays DEBUG
        self.target.log(level, "%s sent a malformed request: %s%s", peer, reason, suppressed)


async def _expect(request: web.BaseRequest, expect: str) -> None:
    """Let a client that waits for it send its body, as aiohttp's router would."""
    if request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's own size starts after this line


def _unauthorized(request: web.BaseRequest) -> web.Response:
    text = (
        "this gateway needs its token: send `Authorization: Bearer <token>` (a browser: any "
        "user name, the token as password)"
    )
    body = {"error": "unauthorized", "message": text}
    response = _respond(request, 401, text, body)
    # Bearer for programs; Basic, so that a browser asks its person for the token. One
    # challenge per header: browsers read no more than one from each.
    response.headers.add("WWW-Authenticate", 'Bearer realm="counters"')
    response.headers.add("WWW-Authenticate", 'Basic realm="counters", charset="UTF-8"')
    return response


async def _healthz(request: web.BaseRequest) -> web.StreamResponse:
    return _respond(request, 200, "ok", {"status": "ok"})


# The page, one file with its script and style: nothing comes from anywhere but the gateway.
_PAGE = (importlib.resources.files("gateway") / "ui" / "index.html").read_bytes()
_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


async def _page(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(body=_PAGE, headers=_PAGE_HEADERS)


def _last_event_id(header: str | None, names: list[str]) -> dict[str, int]:
    """The versions a resuming watcher had seen, from the id we gave its last event. An id we
    cannot have given (another stream's, a guess) resumes nothing: every value is sent, which
    is never wrong, only more."""
    parts = [] if header is None else header.split(",")
    if len(parts) != len(names) or not all(p == "" or _VERSION.fullmatch(p) for p in parts):
        return {}
    return {name: int(part) for name, part in zip(names, parts, strict=True) if part}


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


def _count_response(
    request: web.BaseRequest,
    name: str,
    count: int,
    version: int,
    more: dict[str, Any] | None = None,
) -> web.StreamResponse:
    body = {"name": name, "count": count, "version": version}
    if more:
        body.update(more)
    text = f"Durable Object '{name}' count: {count}"  # the example's, byte for byte
    return _respond(request, 200, text, body, {"ETag": f'"{version}"'})


def _integer(params: QueryParams, name: str) -> int | None:
    text = params.first(name)
    return None if text is None else parse_integer(text, name)


def _if_match(request: web.BaseRequest) -> int | None:
    """The version an ``If-Match`` names (a strong ETag we gave), or None for none or ``*``."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    found = _ETAG.fullmatch(header.strip())
    if not found:
        raise InvalidInput(
            f'If-Match must be one ETag as we send them, like "7", not {header!r:.60}'
        )
    return int(found.group(1) or found.group(2))


def _error_code(error: web.HTTPException) -> str:
    """A snake_case code for aiohttp's error: "Expectation Failed" is expectation_failed."""
    return _CODES.get(error.status) or re.sub(r"[^a-z0-9]+", "_", error.reason.lower()).strip("_")


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
