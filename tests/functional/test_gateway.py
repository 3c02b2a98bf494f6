"""Every route and every bad input, over HTTP on loopback, for both placements.

Inputs that reach storage (names of every kind, counts at the 64-bit edge) run on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.log import server_logger
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway import Gateway
from gateway.app import ServerLog

from .conftest import NamespaceFactory

Client = TestClient[Any, Any]
NO_NAME = (
    "Select a Durable Object to contact by using"
    " the `name` URL query string parameter, for example, ?name=A"
)


async def text(client: Client, path: str, method: str = "GET", **kwargs: Any) -> tuple[int, str]:
    # encoded=True: send the path as written, broken percent-encoding included.
    async with client.request(method, URL(path, encoded=True), **kwargs) as response:
        return response.status, await response.text()


async def count_of(client: Client, name: str) -> int:
    async with client.get("/", params={"name": name}, headers={"Accept": "application/json"}) as r:
        assert r.status == 200
        body = await r.json()
        assert body["name"] == name
        count: int = body["count"]
        return count


async def test_the_example_byte_for_byte(client: Client) -> None:
    async with client.get("/?name=A") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await response.read() == b"Durable Object 'A' count: 0"
    assert await text(client, "/increment?name=A") == (200, "Durable Object 'A' count: 1")
    assert await text(client, "/increment?name=A") == (200, "Durable Object 'A' count: 2")
    assert await text(client, "/decrement?name=A") == (200, "Durable Object 'A' count: 1")
    assert await text(client, "/?name=A") == (200, "Durable Object 'A' count: 1")
    assert await text(client, "/?name=B") == (200, "Durable Object 'B' count: 0")


async def test_unknown_paths_are_404(client: Client) -> None:
    for path in ["/nope?name=A", "/increment/?name=A", "/Increment?name=A", "/nope"]:
        assert await text(client, path) == (404, "Not found")
    assert await count_of(client, "A") == 0


@pytest.mark.parametrize("query", ["", "?name=", "?other=A", "?name=&name=B", "?name"])
@pytest.mark.parametrize("path", ["/", "/increment", "/decrement"])
async def test_missing_name_answers_the_examples_message(
    client: Client, path: str, query: str
) -> None:
    assert await text(client, path + query) == (400, NO_NAME)
    assert await count_of(client, "B") == 0


async def test_first_name_counts(client: Client) -> None:
    assert await text(client, "/increment?name=A&name=B") == (200, "Durable Object 'A' count: 1")
    assert await count_of(client, "B") == 0


async def test_amount_post_and_json(client: Client) -> None:
    assert await text(client, "/increment?name=A&amount=10") == (
        200,
        "Durable Object 'A' count: 10",
    )
    assert await text(client, "/decrement?name=A&amount=3", method="POST") == (
        200,
        "Durable Object 'A' count: 7",
    )
    assert await text(client, "/increment", method="POST", data={"name": "A", "amount": "-2"}) == (
        200,
        "Durable Object 'A' count: 5",
    )
    async with client.post("/increment?name=A", headers={"Accept": "application/json"}) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"name": "A", "count": 6, "version": 4}


async def test_a_post_waiting_for_100_continue_gets_it(client: Client) -> None:
    # The client sends its form body only after the gateway's 100 Continue.
    answer = await asyncio.wait_for(
        text(client, "/increment", "POST", data={"name": "E", "amount": "4"}, expect100=True), 10
    )
    assert answer == (200, "Durable Object 'E' count: 4")
    assert await text(client, "/?name=E", headers={"Expect": "something-else"}) == (
        417,
        "Unknown Expect: something-else",
    )
    assert await count_of(client, "E") == 4


async def test_unusual_names_are_just_names(client_on_backend: Client) -> None:
    client = client_on_backend
    for name in ["../../etc", "a b", "名前", "x" * 1024, "é" * 512, "'quoted'", "a&b=c"]:
        async with client.get("/increment", params={"name": name}) as response:
            assert response.status == 200, name
            assert await response.text() == f"Durable Object '{name}' count: 1"
        assert await count_of(client, name) == 1


@pytest.mark.parametrize(
    ("query", "status", "reason"),
    [
        ("name=" + "x" * 1025, 400, "1025 bytes"),
        ("name=" + "%C3%A9" * 513, 400, "1026 bytes"),
        ("name=a%00b", 400, "control characters"),
        ("name=a%0Ab", 400, "control characters"),
        ("name=a%1Fb", 400, "control characters"),
        ("name=%FF", 400, "UTF-8"),
        ("name=%zz", 400, "percent-encoding"),
        ("name=A%", 400, "percent-encoding"),
        ("name=A&amount=x", 400, "amount must be an integer"),
        ("name=A&amount=1.5", 400, "amount must be an integer"),
        ("name=A&amount=", 400, "amount must be an integer"),
        ("name=A&amount=9223372036854775808", 400, "outside the signed 64-bit range"),
        ("name=A&amount=%FF", 400, "UTF-8"),
    ],
)
@pytest.mark.parametrize("path", ["/increment", "/decrement"])
async def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    client: Client, path: str, query: str, status: int, reason: str
) -> None:
    got_status, body = await text(client, f"{path}?{query}")
    assert got_status == status
    assert reason in body
    assert await count_of(client, "A") == 0


async def test_leaving_int64_is_422_and_changes_nothing(client_on_backend: Client) -> None:
    client = client_on_backend
    top = 2**63 - 1
    assert await text(client, f"/increment?name=A&amount={top}") == (
        200,
        f"Durable Object 'A' count: {top}",
    )
    status, body = await text(client, "/increment?name=A")
    assert status == 422
    assert "64-bit" in body
    assert await count_of(client, "A") == top
    status, _ = await text(client, "/decrement?name=B&amount=-9223372036854775808")
    assert status == 422
    assert await count_of(client, "B") == 0


async def test_json_errors(client: Client) -> None:
    async with client.get(
        "/increment?name=A&amount=x", headers={"Accept": "application/json"}
    ) as r:
        assert r.status == 400
        assert await r.json() == {
            "error": "invalid_amount",
            "message": "amount must be an integer, got 'x'",
        }


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("HEAD", "/increment?name=A", "GET,POST"),
        ("HEAD", "/decrement?name=A", "GET,POST"),
        ("PUT", "/increment?name=A", "GET,POST"),
        ("DELETE", "/decrement?name=A", "GET,POST"),
        ("PATCH", "/increment?name=A", "GET,POST"),
        ("POST", "/?name=A", "GET,HEAD"),
        ("DELETE", "/?name=A", "GET,HEAD"),
    ],
)
async def test_other_methods_are_405_with_allow(
    client: Client, method: str, path: str, allow: str
) -> None:
    async with client.request(method, path) as response:
        assert response.status == 405
        assert response.headers["Allow"] == allow
        if method != "HEAD":
            assert "not allowed" in await response.text()
    assert await count_of(client, "A") == 0


async def test_head_on_read_has_headers_only(client: Client) -> None:
    async with client.head("/?name=A") as response:
        assert response.status == 200
        assert await response.read() == b""


async def test_healthz(client: Client) -> None:
    assert await text(client, "/healthz") == (200, "ok")
    async with client.get("/healthz", headers={"Accept": "application/json"}) as response:
        assert await response.json() == {"status": "ok"}


JSON = {"Accept": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOO_LARGE = "Maximum request body size 1048576 exceeded."  # aiohttp's client_max_size, 1 MiB


@pytest.mark.parametrize("accept", [{}, JSON], ids=["text", "json"])
@pytest.mark.parametrize(
    ("method", "path", "headers", "data", "status", "code", "message"),
    [
        (
            "POST",
            "/increment",
            FORM,
            b"name=A&pad=" + b"x" * 1024**2,
            413,
            "request_too_large",
            TOO_LARGE,
        ),
        (
            "GET",
            "/increment?name=A",
            {"Expect": "something-else"},
            None,
            417,
            "expectation_failed",
            "Unknown Expect: something-else",
        ),
        (
            "PUT",
            "/increment?name=A",
            {},
            None,
            405,
            "method_not_allowed",
            "Method PUT is not allowed on /increment; use GET, POST",
        ),
    ],
    ids=["413", "417", "405"],
)
async def test_aiohttps_own_errors_answer_like_ours(
    client: Client,
    accept: dict[str, str],
    method: str,
    path: str,
    headers: dict[str, str],
    data: bytes | None,
    status: int,
    code: str,
    message: str,
) -> None:
    body = None if data is None else io.BytesIO(data)  # aiohttp warns of a large bytes body
    async with client.request(method, path, headers={**headers, **accept}, data=body) as r:
        assert r.status == status
        if accept:
            assert r.headers["Content-Type"] == "application/json; charset=utf-8"
            assert await r.json() == {"error": code, "message": message}
        else:
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert await r.text() == message
        if status == 405:
            assert r.headers["Allow"] == "GET,POST"
    assert await count_of(client, "A") == 0


# A header aiohttp's parser refuses (logged at ERROR with a traceback by aiohttp), and bytes that
# are not HTTP at all (logged at DEBUG with a traceback when first on a connection).
BAD_HEADER = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
NOT_HTTP = b"GARBAGE\r\n\r\n"


@contextlib.asynccontextmanager
async def serving(server: web.Server) -> AsyncIterator[int]:
    """`server` on a loopback port, as `counters serve` runs it; yields the port."""
    runner = web.ServerRunner(server)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def send_raw(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh connection; the answer, up to the server closing it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


def server_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "aiohttp.server"]


async def test_malformed_requests_are_answered_400_and_logged_briefly_and_rarely(
    make_namespace: NamespaceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    gateway = Gateway(make_namespace())
    async with serving(gateway.server(access_log=None)) as port:  # as `counters serve` does
        started = time.monotonic()
        for data in [BAD_HEADER, NOT_HTTP] * 25:
            answer = await send_raw(port, data)
            assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n"), answer
        assert time.monotonic() - started < 10  # all within one interval of the rate limit
    records = server_records(caplog)
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in records] == [
        (
            logging.WARNING,
            "127.0.0.1 sent a malformed request: Invalid character in Content-Length",
            None,
        )
    ]


async def boom(request: web.BaseRequest) -> web.StreamResponse:
    raise RuntimeError("boom")


async def test_the_malformed_requests_left_out_are_counted_in_the_next_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp.server")
    interval = 3.0  # ten requests fit in it on a busy machine too
    server = web.Server(boom, logger=ServerLog(server_logger, interval=interval))
    async with serving(server) as port:
        started = time.monotonic()
        for _ in range(10):
            assert (await send_raw(port, BAD_HEADER)).startswith(b"HTTP/1.0 400 ")
        assert time.monotonic() - started < interval
        await asyncio.sleep(interval)
        assert (await send_raw(port, BAD_HEADER)).startswith(b"HTTP/1.0 400 ")
    reason = "127.0.0.1 sent a malformed request: Invalid character in Content-Length"
    assert [r.getMessage() for r in server_records(caplog)] == [
        reason,
        reason + "; 9 similar lines suppressed since the last one",
    ]


async def test_server_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp.server")
    server = web.Server(boom, logger=ServerLog(server_logger))
    async with serving(server) as port:
        for _ in range(2):  # not rate-limited either
            answer = await send_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    records = server_records(caplog)
    assert len(records) == 2
    for record in records:
        assert record.levelno == logging.ERROR
        assert record.getMessage() == "Error handling request from 127.0.0.1"
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)
