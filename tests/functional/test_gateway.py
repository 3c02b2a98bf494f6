"""Every route and every bad input, over HTTP on loopback, for both placements."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

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
        assert await response.json() == {"name": "A", "count": 6}


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


async def test_unusual_names_are_just_names(client: Client) -> None:
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


async def test_leaving_int64_is_422_and_changes_nothing(client: Client) -> None:
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
