"""A small synchronous client of the gateway's HTTP API, on the standard library alone.

What the command line uses against a running service (`counters get`, `incr`, `watch`, ...):
it loads neither Ray nor aiohttp, so a command starts in a few tens of milliseconds.

    with Remote(RemoteConfig.load()) as remote:   # COUNTERS_URL, else http://127.0.0.1:8787
        remote.increment("A", 5)                  # CounterValue(name='A', count=5, version=1)
        remote.get(["A", "B"])                    # [CounterValue(...), CounterValue(...)]
        for value in remote.list("user:"): ...    # every page, following the cursor
        for value in remote.watch(["A"]): ...     # the value now, then each change, for ever

**Retries.** A request that gets no answer (the connection is refused, reset or times out), or
that is answered 503, is sent again after a short pause, `attempts` times in all. A change
carries an ``Idempotency-Key``, the same on every attempt, so the gateway applies it once
however many of the attempts reach it; the caller may choose the key, to retry a change itself
later (within the service's ``--id-retention``).

**Watching** reads the Server-Sent Events of ``GET /watch``. When the stream breaks after it
has started (the gateway restarts, a proxy cuts it, the gateway dropped a slow reader, or
`WATCH_SILENCE` passes without even a heartbeat) it reconnects, for as long as the caller
iterates, with ``Last-Event-ID``: the gateway then sends only the names that changed meanwhile,
at their latest value.

Errors, one tree (bad settings are `counters.errors.ConfigError`):

    RemoteError        anything that kept a request from its answer
    ├── ErrorAnswer    the gateway answered with an error: status, code and message as sent
    │                  (or answered something that is not the gateway's JSON)
    └── CannotConnect  no answer after every attempt; a change may or may not have been
                       applied: sent again with the same key, it is applied at most once
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from ..errors import ConfigError
from ..op_ids import new_op_id
from ..token_file import read_token_file
from ..values import CounterValue, Replaced

__all__ = [
    "DEFAULT_URL",
    "CannotConnect",
    "ErrorAnswer",
    "Event",
    "EventParser",
    "Remote",
    "RemoteConfig",
    "RemoteError",
]

DEFAULT_URL = "http://127.0.0.1:8787"
URL_VARIABLE = "COUNTERS_URL"
TOKEN_VARIABLE = "COUNTERS_AUTH_TOKEN_FILE"  # the server's own variable: one file for both
MAX_NAMES = 1000  # names the gateway reads in one request
# The gateway writes a comment on an idle stream every 15 s: three missed means it is gone.
WATCH_SILENCE = 45.0
RETRY_PAUSES = (0.2, 0.6, 1.5, 3.0, 5.0)  # seconds between attempts; the last one repeats
MAX_RETRY_AFTER = 5.0  # seconds at most we wait for a 503's Retry-After
_FORM = "application/x-www-form-urlencoded"
Fields = Sequence[tuple[str, str]]
T = TypeVar("T")


class RemoteError(Exception):
    """Base of the errors of a request to the gateway."""


class ErrorAnswer(RemoteError):
    """The gateway answered with an error (``{"error": code, "message": text}``); `key` is the
    ``Idempotency-Key`` of a change, with which it may be sent again."""

    def __init__(self, status: int, code: str, message: str, key: str | None = None) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message
        self.key = key

    @classmethod
    def parse(cls, status: int, body: bytes, key: str | None = None) -> ErrorAnswer:
        """The error an answer carries: the gateway's JSON, or whatever a proxy in front of it
        said (its first line, as ``http_<status>``)."""
        try:
            error = json.loads(body)
            return cls(status, str(error["error"]), str(error["message"]), key)
        except (ValueError, TypeError, KeyError):
            text = body.decode("utf-8", "replace").strip().split("\n", 1)[0][:200]
            return cls(status, f"http_{status}", text or http.client.responses.get(status, ""), key)


class CannotConnect(RemoteError):
    """No answer from `url` after every attempt; `key` is the change's ``Idempotency-Key``."""

    def __init__(self, url: str, reason: BaseException | str, key: str | None = None) -> None:
        super().__init__(f"cannot reach {url}: {_reason(reason)}")
        self.url = url
        self.key = key


@dataclass(frozen=True)
class RemoteConfig:
    """Where the gateway is and how to talk to it; checked when made."""

    url: str = DEFAULT_URL
    token: str | None = None  # sent as ``Authorization: Bearer <token>``
    timeout: float = 30.0  # seconds to connect, and for each answer
    attempts: int = 3  # sends of one request at most (see "Retries")

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        try:
            parts.port  # noqa: B018 (it raises ValueError for a port that is not one)
        except ValueError:
            parts = parts._replace(netloc="")
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ConfigError(
                f"--url ({URL_VARIABLE}) must be the gateway's http:// or https:// address, "
                f"like {DEFAULT_URL}, not {self.url!r}"
            )
        if not self.timeout > 0:
            raise ConfigError(f"--timeout must be more than 0 seconds, not {self.timeout}")
        if self.attempts < 1:
            raise ConfigError(f"attempts must be at least 1, not {self.attempts}")

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
        auth_token_file: str | None = None,
        timeout: float | None = None,
    ) -> RemoteConfig:
        """From flags (None: unset), then `environ` (default os.environ): ``COUNTERS_URL``,
        ``COUNTERS_AUTH_TOKEN_FILE``; the token file is read now."""
        environ = os.environ if environ is None else environ
        url = url or environ.get(URL_VARIABLE) or DEFAULT_URL
        token_file = auth_token_file or environ.get(TOKEN_VARIABLE) or None
        token = None if token_file is None else read_token_file(token_file)
        return cls(url, token, cls.timeout if timeout is None else timeout)


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: its data, and the last event id as of it ("" for none)."""

    data: str
    id: str


class EventParser:
    """Server-Sent Events, a line at a time, as the WHATWG rules say for ``data``, ``id`` and
    comments (the gateway sends nothing else). Pure: no I/O."""

    def __init__(self, last_id: str = "") -> None:
        self.last_id = last_id  # kept across events, and across connections by the caller
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        """Take one line (its end of line included or not); the event a blank line ends."""
        line = line.removesuffix("\n").removesuffix("\r")
        if not line:
            if not self._data:
                return None
            event = Event("\n".join(self._data), self.last_id)
            self._data = []
            return event
        field, colon, value = line.partition(":")
        if not field:
            return None  # a comment, e.g. the gateway's heartbeat
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self.last_id = value
        return None


class Remote:
    """The gateway at ``config.url``, over one kept-alive connection (another for a watch).

    Not thread-safe; `close` (or the ``with`` block's end) drops the connection.
    """

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._base = parts.path.rstrip("/")  # a gateway behind a path, e.g. /counters
        self._connection: http.client.HTTPConnection | None = None

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # Reading

    def get(self, names: Sequence[str]) -> list[CounterValue]:
        """The counters named, in the order asked (a name never changed reads 0, version 0)."""
        values: list[CounterValue] = []
        for start in range(0, len(names), MAX_NAMES):
            fields = [("name", name) for name in names[start : start + MAX_NAMES]]
            # POST: the names go in a form body, past what a URL may hold
            values += self._call("POST", "/counters", fields, parse=_counters)
        return values

    def list(self, prefix: str = "", page_size: int | None = None) -> Iterator[CounterValue]:
        """The counters that exist whose names start with `prefix`, in name order: a page at
        a time (`page_size` counters, the gateway's default if None), following its cursor."""
        after: str | None = ""
        while after is not None:
            fields = [("prefix", prefix), ("after", after)]
            if page_size is not None:
                fields.append(("limit", str(page_size)))
            counters, after = self._call("GET", "/counters", fields, parse=_page)
            yield from counters

    # Changing: each with an Idempotency-Key (the caller's `key`, or a fresh one)

    def increment(
        self,
        name: str,
        amount: int = 1,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        if_version: int | None = None,
        key: str | None = None,
    ) -> CounterValue:
        """Add `amount`, unless the count would leave `minimum`..`maximum` (409) or the counter
        is not at `if_version` (412); the counter after."""
        return self._add("/increment", name, amount, minimum, maximum, if_version, key)

    def decrement(
        self,
        name: str,
        amount: int = 1,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        if_version: int | None = None,
        key: str | None = None,
    ) -> CounterValue:
        """Subtract `amount`, as `increment` adds it."""
        return self._add("/decrement", name, amount, minimum, maximum, if_version, key)

    def set(
        self, name: str, value: int, *, if_version: int | None = None, key: str | None = None
    ) -> Replaced:
        """Set the count to `value`; the counter before and after."""
        fields = [("name", name), ("value", str(value))]
        return self._call("POST", "/set", fields, _replaced, _change(if_version, key))

    def delete(
        self, name: str, *, if_version: int | None = None, key: str | None = None
    ) -> Replaced:
        """Forget the counter (it reads 0; its version goes on); before and after."""
        fields = [("name", name)]
        return self._call("POST", "/delete", fields, _replaced, _change(if_version, key))

    def _add(
        self,
        path: str,
        name: str,
        amount: int,
        minimum: int | None,
        maximum: int | None,
        if_version: int | None,
        key: str | None,
    ) -> CounterValue:
        fields = [("name", name), ("amount", str(amount))]
        fields += [
            (bound, str(v)) for bound, v in (("min", minimum), ("max", maximum)) if v is not None
        ]
        return self._call("POST", path, fields, _counter, _change(if_version, key))

    # Watching

    def watch(
        self, names: Sequence[str], on_lost: Callable[[str], None] | None = None
    ) -> Generator[CounterValue, None, None]:
        """Each counter's value now, then every change, until the caller stops iterating.

        A broken stream is resumed (``Last-Event-ID``) for as long as it takes, and
        `on_lost` is told why, once per break. CannotConnect if the first connection cannot be
        made in `attempts`; ErrorAnswer if the gateway refuses the watch (503s are retried).
        """
        names = list(dict.fromkeys(names))
        target = self._target("/watch", [("name", name) for name in names])
        parser = EventParser()
        watching = False  # whether a stream was ever open: from then on, resume for ever
        failures = 0  # attempts in a row that brought no stream
        while True:
            if failures:
                time.sleep(_pause(failures))
            connection = self._connect(max(self.config.timeout, WATCH_SILENCE))
            response: http.client.HTTPResponse | None = None
            opened = False
            try:
                # JSON too: how the gateway's errors come, if it refuses
                headers = {**self._headers(), "Accept": "text/event-stream, application/json"}
                if parser.last_id:
                    headers["Last-Event-ID"] = parser.last_id
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                if response.status != 200:
                    error = ErrorAnswer.parse(response.status, response.read())
                    if response.status != 503 or self._gives_up(watching, failures):
                        raise error
                    failures += 1
                    continue
                watching, opened, failures = True, True, 0
                while line := response.readline():
                    event = parser.feed(line.decode("utf-8", "replace"))
                    if event is not None:
                        yield self._parsed(event.data.encode(), _counter)
                lost: BaseException | str = "the stream ended"
            except (OSError, http.client.HTTPException) as error:
                if self._gives_up(watching, failures):
                    raise CannotConnect(self.config.url, error) from None
                lost = error
            finally:
                if response is not None:  # it holds the socket once the connection is done
                    response.close()
                connection.close()
            if opened and on_lost is not None:
                on_lost(_reason(lost))
            failures += 1

    def _gives_up(self, watching: bool, failures: int) -> bool:
        """Whether a watch stops after one more failed attempt: only before its first stream."""
        return not watching and failures + 1 >= self.config.attempts

    # The exchange

    def _call(
        self,
        method: str,
        path: str,
        fields: Fields,
        parse: Callable[[Any], T],
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """Send the request (fields in the query of a GET, the form body of a POST) and
        answer its JSON as `parse` reads it; again on no answer or a 503, up to `attempts`
        times."""
        headers = {**self._headers(), **(headers or {})}
        body: bytes | None = None
        if method == "GET":
            target = self._target(path, fields)
        else:
            target = self._target(path, ())
            body = urlencode(fields, quote_via=quote).encode()
            headers["Content-Type"] = _FORM
        key = headers.get("Idempotency-Key")
        for attempt in range(1, self.config.attempts + 1):
            last = attempt == self.config.attempts
            try:
                if self._connection is None:
                    self._connection = self._connect(self.config.timeout)
                self._connection.request(method, target, body=body, headers=headers)
                response = self._connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if last:
                    raise CannotConnect(self.config.url, error, key) from None
                time.sleep(_pause(attempt))
                continue
            if response.status == 503 and not last:
                time.sleep(_retry_after(response.headers.get("Retry-After"), attempt))
                continue
            if response.status != 200:
                key = response.getheader("Idempotency-Key", key)
                raise ErrorAnswer.parse(response.status, data, key)
            return self._parsed(data, parse)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _parsed(self, data: bytes, parse: Callable[[Any], T]) -> T:
        """`parse` of the JSON in `data`; ErrorAnswer if it is not what the gateway sends."""
        try:
            return parse(json.loads(data))
        except (ValueError, TypeError, KeyError):
            raise ErrorAnswer(
                200,
                "unexpected_answer",
                f"{self.config.url} answered something other than the gateway's JSON",
            ) from None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _target(self, path: str, fields: Fields) -> str:
        query = urlencode(fields, quote_via=quote)
        return f"{self._base}{path}?{query}" if query else f"{self._base}{path}"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "counters-cli"}
        if self.config.token is not None:
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers


def _change(if_version: int | None, key: str | None) -> dict[str, str]:
    headers = {"Idempotency-Key": new_op_id() if key is None else key}
    if if_version is not None:
        headers["If-Match"] = f'"{if_version}"'
    return headers


def _counter(item: Any) -> CounterValue:
    return CounterValue(str(item["name"]), int(item["count"]), int(item["version"]))


def _counters(answer: Any) -> list[CounterValue]:
    return [_counter(item) for item in answer["counters"]]


def _page(answer: Any) -> tuple[list[CounterValue], str | None]:
    after = answer["next"]
    if after is not None and not isinstance(after, str):
        raise TypeError(f"a cursor is text, not {after!r}")
    return _counters(answer), after


def _replaced(answer: Any) -> Replaced:
    before = answer["previous"]
    previous = CounterValue(str(answer["name"]), int(before["count"]), int(before["version"]))
    return Replaced(previous, _counter(answer))


def _pause(attempt: int) -> float:
    """Seconds to wait before attempt `attempt` + 1."""
    return RETRY_PAUSES[min(attempt, len(RETRY_PAUSES)) - 1]


def _retry_after(header: str | None, attempt: int) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(header or "")))
    except ValueError:
        return _pause(attempt)


def _reason(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the connection closed without an answer"
    return str(error) or type(error).__name__
