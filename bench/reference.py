"""The references the benchmark compares `counters` with, as small aiohttp servers.

    python bench/reference.py bare --port 9001
    python bench/reference.py raw --port 9003
    python bench/reference.py redis --port 9002 --redis-port 6390

`bare` answers the example's URLs from a dict in memory with an aiohttp `web.Application`: no
storage, no Ray; the issue's ceiling. `raw` answers the same from aiohttp's low-level
`web.Server`, which the gateway runs on: the ceiling of our own HTTP stack. `redis` keeps the
counts in a local redis-server with INCRBY (the benchmark starts it with AOF and
`appendfsync always`: durable before the answer, like us), on the same low-level server as the
gateway, so that the comparison is of storage, not of HTTP layers. All run on uvloop, as the
gateway does, serve loopback only and log nothing per request.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

import uvloop
from aiohttp import web

Change = Callable[[str, int], Awaitable[int]]
SIGNS = {"/": 0, "/increment": 1, "/decrement": -1}


async def answer(request: web.BaseRequest, change: Change, sign: int) -> web.Response:
    name = request.query.get("name")
    if not name:
        return web.Response(status=400, text="Select a Durable Object")
    count = await change(name, sign * int(request.query.get("amount", "1")))
    return web.Response(text=f"Durable Object '{name}' count: {count}")


def in_memory() -> Change:
    counts: dict[str, int] = {}

    async def change(name: str, amount: int) -> int:
        counts[name] = counts.get(name, 0) + amount
        return counts[name]

    return change


def in_redis(redis_port: int) -> Change:
    import redis.asyncio as redis

    client = redis.Redis(host="127.0.0.1", port=redis_port, max_connections=64)

    async def change(name: str, amount: int) -> int:
        if amount == 0:
            return int(await client.get(name) or 0)
        return int(await client.incrby(name, amount))

    return change


def application(change: Change) -> web.Application:
    def route(sign: int) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await answer(request, change, sign)

        return handle

    app = web.Application()
    app.add_routes([web.get(path, route(sign)) for path, sign in SIGNS.items()])
    return app


async def serve_raw(change: Change, port: int) -> None:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        sign = SIGNS.get(request.path)
        if sign is None:
            return web.Response(status=404, text="Not found")
        return await answer(request, change, sign)

    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until the benchmark terminates us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bare", "raw", "redis"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-port", type=int, default=6379)
    arguments = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if arguments.kind == "bare":
        app = application(in_memory())
        web.run_app(app, host="127.0.0.1", port=arguments.port, access_log=None, print=None)
        return

    async def run() -> None:  # the Redis client wants the loop it will run on
        change = in_memory() if arguments.kind == "raw" else in_redis(arguments.redis_port)
        await serve_raw(change, arguments.port)

    asyncio.run(run())


if __name__ == "__main__":
    main()
