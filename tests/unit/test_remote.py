"""The HTTP client of the command line, against a real HTTP server on loopback that answers
as a script says: answers, 503s, connections closed without an answer, event streams."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from counters.cli.remote import (
    DEFAULT_URL,
    CannotConnect,
    ErrorAnswer,
    Event,
    EventParser,
    Remote,
    RemoteConfig,
)
from counters.errors import ConfigError
from counters.values import CounterValue, Replaced


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    fields: list[tuple[str, str]]


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON, or bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without an answer


class Script:
    """A server on loopback answering each request with the next answer of the script (the
    last one repeats), and recording what it was asked."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests: list[Request] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                script._answer(self)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode()
        parts = urlsplit(handler.path)
        fields = parse_qsl(parts.query or body, keep_blank_values=True)
        headers = dict(handler.headers.items())
        self.requests.append(Request(handler.command, parts.path, headers, fields))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        handler.close_connection = True
        if answer.drop:
            return
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        handler.send_response(answer.status)
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        if "Content-Type" not in answer.headers:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def script() -> Iterator[Script]:
    server = Script()
    yield server
    server.close()


def remote(url: str, **config: Any) -> Remote:
    return Remote(RemoteConfig(url, **config))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there now


def test_settings_come_from_flags_then_the_environment(tmp_path: Path) -> None:
    assert RemoteConfig.load(environ={}) == RemoteConfig(DEFAULT_URL, None, 30.0, 3)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    other = tmp_path / "other"
    other.write_text("other-token")
    environ = {"COUNTERS_URL": "https://counters.example/", "COUNTERS_AUTH_TOKEN_FILE": str(token)}
    from_environ = RemoteConfig.load(environ=environ)
    assert (from_environ.url, from_environ.token) == ("https://counters.example/", "s3cret")
    flags = RemoteConfig.load(
        environ=environ, url="http://[::1]:9000", auth_token_file=str(other), timeout=2.5
    )
    assert flags == RemoteConfig("http://[::1]:9000", "other-token", 2.5, 3)
    with pytest.raises(ConfigError, match="cannot read it"):
        RemoteConfig.load(environ={"COUNTERS_AUTH_TOKEN_FILE": str(tmp_path / "missing")})
    token.write_text("two words")
    with pytest.raises(ConfigError, match="must hold one token"):
        RemoteConfig.load(environ=environ)


def test_a_url_that_is_not_a_gateways_address_is_refused() -> None:
    for url in (
        "ftp://127.0.0.1:8787",
        "127.0.0.1:8787",
        "http://",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:8787/?name=A",
        "http://me:secret@127.0.0.1:8787",
    ):
        with pytest.raises(ConfigError, match=r"--url \(COUNTERS_URL\) must be"):
            RemoteConfig(url)
    with pytest.raises(ConfigError, match="--timeout"):
        RemoteConfig(DEFAULT_URL, timeout=0)


def test_event_parser_follows_the_rules_for_data_ids_and_comments() -> None:
    parser = EventParser()
    lines = [
        ": still here\n",  # a comment: nothing
        "\n",  # a blank line with no data: no event
        "id: 1,0\n",
        'data: {"name": "A"}\n',
        "\n",
        "data:no space\r\n",  # no id: the last one holds
        "data:  two spaces\r\n",  # only the first space goes
        "\r\n",
        "id: bad\0id\n",  # an id with NUL is ignored
        "id\n",  # a field with no colon: an empty id
        "data\n",  # an empty data line
        "\n",
        "retry: 5\n",  # fields we do not use are ignored
        "data: a",  # no end of line: still a line
        "",
    ]
    events = [event for line in lines if (event := parser.feed(line)) is not None]
    assert events == [
        Event('{"name": "A"}', "1,0"),
        Event("no space\n two spaces", "1,0"),
        Event("", ""),
        Event("a", ""),
    ]
    assert EventParser("4,2").feed("data: x\n") is None  # the last id carries over


def test_an_error_answer_is_the_gateways_json_or_what_a_proxy_said() -> None:
    body = json.dumps({"error": "out_of_bounds", "message": "the count would leave 0..10"})
    error = ErrorAnswer.parse(409, body.encode(), "key-1")
    assert (error.status, error.code, error.message, error.key) == (
        409,
        "out_of_bounds",
        "the count would leave 0..10",
        "key-1",
    )
    assert str(error) == "the count would leave 0..10 (409 out_of_bounds)"
    proxy = ErrorAnswer.parse(502, b"<html>Bad Gateway</html>\n<body>...", None)
    assert (proxy.code, proxy.message) == ("http_502", "<html>Bad Gateway</html>")
    assert ErrorAnswer.parse(504, b"", None).message == "Gateway Timeout"


def test_a_change_without_an_answer_is_sent_again_with_the_same_key(script: Script) -> None:
    script.answers = [Answer(drop=True), Answer(body={"name": "A", "count": 5, "version": 1})]
    with remote(script.url) as client:
        assert client.increment("A", 5, minimum=0, if_version=0) == CounterValue("A", 5, 1)
    first, second = script.requests
    assert (first.method, first.path) == ("POST", "/increment")
    assert first.fields == second.fields == [("name", "A"), ("amount", "5"), ("min", "0")]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.headers["If-Match"] == '"0"'
    assert first.headers["Accept"] == "application/json"
    with remote(script.url) as client:  # another change: another key
        client.decrement("A")
    assert script.requests[2].headers["Idempotency-Key"] != first.headers["Idempotency-Key"]
    assert script.requests[2].path == "/decrement"


def test_a_503_is_retried_and_a_refusal_is_not(script: Script) -> None:
    busy = Answer(503, {"error": "overloaded", "message": "busy"}, {"Retry-After": "0"})
    refused = Answer(412, {"error": "version_mismatch", "message": "not at version 3"})
    script.answers = [busy, refused]
    with remote(script.url) as client, pytest.raises(ErrorAnswer) as raised:
        client.set("A", 7, if_version=3, key="my-key")
    assert (raised.value.status, raised.value.code, raised.value.key) == (
        412,
        "version_mismatch",
        "my-key",
    )
    assert [r.headers["Idempotency-Key"] for r in script.requests] == ["my-key", "my-key"]
    assert script.requests[0].fields == [("name", "A"), ("value", "7")]


def test_no_answer_after_every_attempt_is_cannot_connect_with_the_key(script: Script) -> None:
    script.answers = [Answer(drop=True)]
    with remote(script.url) as client, pytest.raises(CannotConnect) as raised:
        client.delete("A")
    assert len(script.requests) == 3
    assert raised.value.key == script.requests[0].headers["Idempotency-Key"]
    assert "the connection closed without an answer" in str(raised.value)
    url = f"http://127.0.0.1:{closed_port()}"
    with remote(url, attempts=1) as client, pytest.raises(CannotConnect) as refused:
        client.get(["A"])
    assert str(refused.value) == f"cannot reach {url}: connection refused"
    assert refused.value.key is None


def test_set_and_delete_answer_before_and_after(script: Script) -> None:
    script.answers = [
        Answer(body={"name": "A", "count": 0, "version": 8, "previous": {"count": 5, "version": 7}})
    ]
    with remote(script.url, token="t0ken") as client:
        assert client.delete("A") == Replaced(CounterValue("A", 5, 7), CounterValue("A", 0, 8))
    assert script.requests[0].headers["Authorization"] == "Bearer t0ken"


def test_a_gateway_behind_a_path_and_many_names(script: Script) -> None:
    names = [f"n{i}" for i in range(1001)]
    script.answers = [
        Answer(body={"counters": [{"name": n, "count": 1, "version": 1} for n in names[:1000]]}),
        Answer(body={"counters": [{"name": "n1000", "count": 2, "version": 3}]}),
    ]
    with remote(script.url + "/base/") as client:
        values = client.get(names)
    assert values[0] == CounterValue("n0", 1, 1)
    assert values[-1] == CounterValue("n1000", 2, 3)
    assert len(values) == 1001
    assert [r.path for r in script.requests] == ["/base/counters", "/base/counters"]
    assert [len(r.fields) for r in script.requests] == [1000, 1]  # the gateway's most at once


def test_a_listing_follows_the_cursor_to_the_end(script: Script) -> None:
    def page(names: list[str], after: str | None) -> Answer:
        items = [{"name": n, "count": 1, "version": 1} for n in names]
        return Answer(body={"counters": items, "next": after})

    script.answers = [page(["a b", "a/c"], "a/c"), page([], "a/d"), page(["a&e"], None)]
    with remote(script.url) as client:
        names = [value.name for value in client.list("a", page_size=2)]
    assert names == ["a b", "a/c", "a&e"]  # a short page (even an empty one) is not the end
    assert [r.fields for r in script.requests] == [
        [("prefix", "a"), ("after", ""), ("limit", "2")],
        [("prefix", "a"), ("after", "a/c"), ("limit", "2")],
        [("prefix", "a"), ("after", "a/d"), ("limit", "2")],
    ]
    assert {r.method for r in script.requests} == {"GET"}


def test_an_answer_that_is_not_the_gateways_is_an_error_answer(script: Script) -> None:
    script.answers = [Answer(body=b"<html>hello</html>", headers={"Content-Length": "18"})]
    with remote(script.url) as client, pytest.raises(ErrorAnswer, match="unexpected_answer"):
        client.get(["A"])
    script.answers = [Answer(body={"counters": "no"})]
    with remote(script.url) as client, pytest.raises(ErrorAnswer, match="unexpected_answer"):
        client.get(["A"])


def stream(*events: str) -> Answer:
    return Answer(
        body="".join(events).encode(),
        headers={"Content-Type": "text/event-stream", "Connection": "close"},
    )


def event(version: int, name: str = "A", count: int | None = None) -> str:
    data = {"name": name, "count": version if count is None else count, "version": version}
    return f"id: {version}\ndata: {json.dumps(data)}\n\n"


def test_a_watch_resumes_where_it_left_after_the_stream_breaks(script: Script) -> None:
    script.answers = [
        stream(event(1), ": still here\n\n", event(2)),  # then the stream ends
        Answer(drop=True),  # a reconnection that fails
        stream(event(5)),
    ]
    lost: list[str] = []
    with (
        remote(script.url) as client,
        contextlib.closing(client.watch(["A", "A"], on_lost=lost.append)) as values,
    ):
        seen = list(itertools.islice(values, 3))
    assert seen == [CounterValue("A", 1, 1), CounterValue("A", 2, 2), CounterValue("A", 5, 5)]
    assert lost == ["the stream ended"]  # once per break, not per attempt
    assert [r.fields for r in script.requests] == [[("name", "A")]] * 3  # asked once
    assert "Last-Event-ID" not in script.requests[0].headers
    assert script.requests[1].headers["Last-Event-ID"] == "2"
    assert script.requests[2].headers["Last-Event-ID"] == "2"
    assert script.requests[0].headers["Accept"] == "text/event-stream, application/json"


def test_a_watch_that_cannot_start_fails(script: Script) -> None:
    script.answers = [Answer(400, {"error": "invalid_name", "message": "no name"})]
    with remote(script.url) as client, pytest.raises(ErrorAnswer, match="invalid_name"):
        next(client.watch([""]))
    assert len(script.requests) == 1  # refused: not asked again
    url = f"http://127.0.0.1:{closed_port()}"
    with remote(url, attempts=2) as client, pytest.raises(CannotConnect):
        next(client.watch(["A"]))


def test_a_watch_is_retried_while_the_gateway_is_busy_then_fails(script: Script) -> None:
    busy = Answer(503, {"error": "overloaded", "message": "too many watchers"})
    script.answers = [busy]
    with remote(script.url) as client, pytest.raises(ErrorAnswer, match="overloaded"):
        next(client.watch(["A"]))
    assert len(script.requests) == 3
