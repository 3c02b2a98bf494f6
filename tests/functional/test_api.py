"""Versions, compare-and-set, bounds, set and delete, many counters at once: over HTTP on
loopback and from the Python client, for both placements (and both backends where a change
races with others)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from counters import Counter, CounterValue, Namespace, OutOfBounds, Replaced, VersionMismatch
from counters.client import _list_page_task
from counters.placement import Placement

from .conftest import COLD_START_DEADLINE, NamespaceFactory

Client = TestClient[Any, Any]
JSON = {"Accept": "application/json"}


async def get(client: Client, path: str, **headers: str) -> tuple[int, Any, Any]:
    async with client.get(path, headers={**JSON, **headers}) as response:
        return response.status, await response.json(), response.headers


async def post(client: Client, path: str, **headers: str) -> tuple[int, Any, Any]:
    async with client.post(path, headers={**JSON, **headers}) as response:
        return response.status, await response.json(), response.headers


async def test_every_count_answer_has_its_version_and_etag(client: Client) -> None:
    status, body, headers = await get(client, "/?name=A")
    assert (status, body, headers["ETag"]) == (200, {"name": "A", "count": 0, "version": 0}, '"0"')
    status, body, headers = await get(client, "/increment?name=A&amount=5")
    assert (body, headers["ETag"]) == ({"name": "A", "count": 5, "version": 1}, '"1"')
    status, body, headers = await post(client, "/decrement?name=A&amount=2")
    assert (body, headers["ETag"]) == ({"name": "A", "count": 3, "version": 2}, '"2"')
    async with client.get("/increment?name=A") as response:  # the example's text, and the tag
        assert await response.text() == "Durable Object 'A' count: 4"
        assert response.headers["ETag"] == '"3"'


async def test_if_match_applies_a_change_only_at_that_version(client: Client) -> None:
    await get(client, "/increment?name=A")
    status, body, _ = await get(client, "/increment?name=A&amount=10", **{"If-Match": '"0"'})
    assert (status, body["error"]) == (412, "version_mismatch")
    assert "at version 1, not 0" in body["message"]
    status, body, headers = await get(client, "/increment?name=A&amount=10", **{"If-Match": '"1"'})
    assert (status, body["count"], headers["ETag"]) == (200, 11, '"2"')
    status, body, _ = await get(client, "/decrement?name=A", **{"If-Match": "*"})
    assert (status, body["count"]) == (200, 10)
    status, body, _ = await get(client, "/increment?name=A", **{"If-Match": "3"})  # bare: fine
    assert (status, body["count"]) == (200, 11)
    for bad in ('W/"4"', '"4", "5"', '"x"', "4x"):
        status, body, _ = await get(client, "/increment?name=A", **{"If-Match": bad})
        assert (status, body["error"]) == (400, "invalid_input"), bad
    assert (await get(client, "/?name=A"))[1] == {"name": "A", "count": 11, "version": 4}


async def test_bounds_refuse_a_change_that_would_leave_them(client: Client) -> None:
    await post(client, "/set?name=stock&value=7")
    status, body, _ = await get(client, "/decrement?name=stock&amount=5&min=0")
    assert (status, body["count"]) == (200, 2)
    status, body, _ = await get(client, "/decrement?name=stock&amount=5&min=0")
    assert (status, body["error"]) == (409, "out_of_bounds")
    status, body, _ = await get(client, "/increment?name=stock&amount=9&max=10")
    assert (status, body["error"]) == (409, "out_of_bounds")
    status, body, _ = await get(client, "/increment?name=stock&amount=0&min=3&max=2")
    assert (status, body["error"]) == (409, "out_of_bounds")  # no count is within [3, 2]
    for query, reason in [
        ("min=x", "min must be an integer"),
        ("max=1.5", "max must be an integer"),
        ("max=9223372036854775808", "outside the signed 64-bit range"),
    ]:
        status, body, _ = await get(client, f"/increment?name=stock&{query}")
        assert status == 400, query
        assert reason in body["message"]
    assert (await get(client, "/?name=stock"))[1] == {"name": "stock", "count": 2, "version": 2}


async def test_set_and_delete_answer_before_and_after(client: Client) -> None:
    await get(client, "/increment?name=A&amount=3")
    status, body, headers = await post(client, "/set?name=A&value=-8")
    assert status == 200
    assert body == {"name": "A", "count": -8, "version": 2, "previous": {"count": 3, "version": 1}}
    assert headers["ETag"] == '"2"'
    async with client.post("/set", data={"name": "A", "value": "4"}) as response:
        assert await response.text() == "Durable Object 'A' count: 4"
    status, body, _ = await post(client, "/delete?name=A", **{"If-Match": '"3"'})
    assert body == {"name": "A", "count": 0, "version": 4, "previous": {"count": 4, "version": 3}}
    assert (await get(client, "/?name=A"))[1] == {"name": "A", "count": 0, "version": 4}
    status, body, _ = await post(client, "/delete?name=A", **{"If-Match": '"3"'})
    assert (status, body["error"]) == (412, "version_mismatch")
    status, body, _ = await post(client, "/set?name=A")
    assert (status, body["error"]) == (400, "invalid_amount")
    for path in ("/set?name=A&value=1", "/delete?name=A"):
        async with client.get(path) as response:
            assert (response.status, response.headers["Allow"]) == (405, "POST")
    assert (await get(client, "/?name=A"))[1] == {"name": "A", "count": 0, "version": 4}


async def test_a_set_sent_again_with_its_key_is_applied_once(client: Client) -> None:
    key = {"Idempotency-Key": "set-once"}
    first = await post(client, "/set?name=A&value=5", **key)
    await get(client, "/increment?name=A")
    again = await post(client, "/set?name=A&value=5", **key)
    assert (
        first[1]
        == again[1]
        == {
            "name": "A",
            "count": 5,
            "version": 1,
            "previous": {"count": 0, "version": 0},
        }
    )
    assert (await get(client, "/?name=A"))[1]["count"] == 6


async def test_many_counters_at_once_in_the_order_asked(
    client: Client, placement: Placement
) -> None:
    await get(client, "/increment?name=b&amount=2")
    await get(client, "/increment?name=a")
    status, body, _ = await get(client, "/counters?name=b&name=never&name=a&name=b")
    assert status == 200
    assert body == {
        "counters": [
            {"name": "b", "count": 2, "version": 1},
            {"name": "never", "count": 0, "version": 0},
            {"name": "a", "count": 1, "version": 1},
            {"name": "b", "count": 2, "version": 1},
        ]
    }
    async with client.get("/counters?name=a&name=b") as response:
        assert await response.text() == "a: 1\nb: 2"
    # 12 KiB of URL, past aiohttp's default. (Per name, every name read needs its actor up: a
    # thousand are not started for this test.)
    names = [f"counter-{i}" for i in range(1000 if placement is Placement.SHARDED else 10)]
    status, body, _ = await get(client, "/counters?" + "&".join(f"name={n}" for n in names))
    assert status == 200
    assert [c["name"] for c in body["counters"]] == names
    form = [("name", "b"), ("name", "a")]  # or in a form body, past any URL's size
    async with client.post("/counters", data=form, headers=JSON) as response:
        assert [c["count"] for c in (await response.json())["counters"]] == [2, 1]
    too_many = "&".join(f"name=n{i}" for i in range(1001))
    status, body, _ = await get(client, f"/counters?{too_many}")
    assert (status, body["message"]) == (400, "at most 1000 names at once, not 1001")
    status, body, _ = await get(client, "/counters")  # no names: a listing
    assert (status, body["next"]) == (200, None)
    status, body, _ = await get(client, "/counters?name=ok&name=a%00b")
    assert (status, body["error"]) == (400, "invalid_name")


async def test_compare_and_set_under_contention_counts_exactly_the_winners(
    client_on_backend: Client,
) -> None:
    """Forty clients each read, then increment only at the version they read: every 200 is
    one increment, every 412 none, whatever the interleaving."""
    client = client_on_backend
    won = 0

    async def one() -> None:
        nonlocal won
        for _ in range(5):
            _, body, _ = await get(client, "/?name=cas")
            status, _, _ = await get(
                client, "/increment?name=cas", **{"If-Match": f'"{body["version"]}"'}
            )
            assert status in (200, 412)
            won += status == 200

    await asyncio.gather(*(one() for _ in range(40)))
    assert won > 0
    assert (await get(client, "/?name=cas"))[1] == {"name": "cas", "count": won, "version": won}


async def test_a_floor_holds_under_contention(client_on_backend: Client) -> None:
    client = client_on_backend
    await post(client, "/set?name=seats&value=30")
    answers = await asyncio.gather(
        *(get(client, "/decrement?name=seats&min=0") for _ in range(100))
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 30 + [409] * 70
    assert (await get(client, "/?name=seats"))[1]["count"] == 0


async def test_the_python_client_has_it_all(namespace: Namespace) -> None:
    stub = namespace.get_by_name("P")
    assert await stub.get() == CounterValue("P", 0, 0)
    assert await stub.increment(5) == 5
    assert await stub.add(2, if_version=1) == CounterValue("P", 7, 2)
    with pytest.raises(VersionMismatch):
        await stub.increment(1, if_version=1)
    with pytest.raises(OutOfBounds):
        await stub.decrement(8, floor=0)
    assert await stub.subtract(7, floor=0) == CounterValue("P", 0, 3)
    assert await stub.set(9) == Replaced(CounterValue("P", 0, 3), CounterValue("P", 9, 4))
    assert await stub.delete(if_version=4) == Replaced(
        CounterValue("P", 9, 4), CounterValue("P", 0, 5)
    )
    assert await namespace.get_many(["P", "Q"]) == [
        CounterValue("P", 0, 5),
        CounterValue("Q", 0, 0),
    ]
    blocking = stub.blocking
    assert await asyncio.to_thread(blocking.increment, 3, ceiling=3) == 3
    assert await asyncio.to_thread(blocking.get) == CounterValue("P", 3, 6)


async def test_listing_a_page_at_a_time_over_http(client_on_backend: Client) -> None:
    client = client_on_backend
    for name in ("p:b", "p:a", "p:é", "p:C", "gone", "q"):
        await get(client, f"/increment?name={name}&amount=2")
    await post(client, "/delete?name=gone")
    await get(client, "/?name=p:never")  # reading creates nothing
    status, body, headers = await get(client, "/counters?prefix=p:&limit=2")
    assert (status, body) == (
        200,
        {
            "counters": [
                {"name": "p:C", "count": 2, "version": 1},
                {"name": "p:a", "count": 2, "version": 1},
            ],
            "next": "p:a",
        },
    )
    assert headers["Link"] == '</counters?prefix=p%3A&after=p%3Aa&limit=2>; rel="next"'
    status, body, headers = await get(client, "/counters?prefix=p:&limit=2&after=p:a")
    assert [c["name"] for c in body["counters"]] == ["p:b", "p:é"]
    assert body["next"] is None
    assert "Link" not in headers
    _, body, _ = await get(client, "/counters")  # every counter, a page of 100
    assert [c["name"] for c in body["counters"]] == ["p:C", "p:a", "p:b", "p:é", "q"]
    async with client.get("/counters?prefix=q") as response:  # text: the lines of names
        assert await response.text() == "q: 2"
    for query, code in [
        ("name=A&prefix=p", "invalid_input"),
        ("limit=0", "invalid_input"),
        ("limit=1001", "invalid_input"),
        ("limit=ten", "invalid_amount"),
        ("prefix=%00", "invalid_input"),
    ]:
        status, body, _ = await get(client, f"/counters?{query}")
        assert (status, body["error"]) == (400, code), query


async def test_the_python_client_lists_every_counter_page_after_page(
    make_namespace: NamespaceFactory, placement: Placement
) -> None:
    # Per-name: an actor per counter, started a few at a time.
    namespace = make_namespace(placement, deadline=COLD_START_DEADLINE)
    names = [f"item-{i:03d}" for i in range(14)]
    await asyncio.gather(*(namespace.get_by_name(n).increment(i) for i, n in enumerate(names)))
    await namespace.get_by_name("item-007").delete()
    await namespace.get_by_name("other").increment()
    listed = [c async for c in namespace.list("item-", page_size=4)]
    assert listed == [CounterValue(n, i, 1) for i, n in enumerate(names) if n != "item-007"]
    # From a process on another node a page is read by a task on the storage's node: the same.
    storage = namespace.settings.storage()
    task = _list_page_task.remote(storage, Counter, "item-", "item-010", 10)
    assert await task == await namespace.list_page("item-", "item-010", 10)
