"""The references the benchmark compares `counters` with, as small aiohttp servers.

    python bench/reference.py bare --port 9001
    python bench/reference.py redis --port 9002 --redis-port 6390

`bare` answers the example's URLs from a dict in memory: no storage, no Ray, the ceiling of our
own stack. `redis` keeps the counts in a local redis-server with INCRBY (the benchmark starts it
with AOF and `appendfsync always`: durable before the answer, like us). Both run on the same event
loop as the gateway (uvloop), serve loopback only and log nothing per request.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import uvloop
from aiohttp import web

Change = Callable[[str, int], Awaitable[int]]
CHANGE: web.AppKey[Change] = web.AppKey("change")


async def answer(request: web.Request, sign: int) -> web.Response:
    name = request.query.get("name")
    if not name:
        return web.Response(status=400, text="Select a Durable Object")
    count = await request.app[CHANGE](name, sign * int(request.query.get("amount", "1")))
    return web.Response(text=f"Durable Object '{name}' count: {count}")


async def read(request: web.Request) -> web.Response:
    return await answer(request, 0)


async def increment(request: web.Request) -> web.Response:
    return await answer(request, 1)


async def decrement(request: web.Request) -> web.Response:
    return await answer(request, -1)


def bare_app() -> web.Application:
    counts: dict[str, int] = {}

    async def change(name: str, amount: int) -> int:
        counts[name] = counts.get(name, 0) + amount
        return counts[name]

    app = web.Application()
    app[CHANGE] = change
    return app


def redis_app(redis_port: int) -> web.Application:
    import redis.asyncio as redis

    app = web.Application()

    async def connect(app: web.Application) -> AsyncIterator[None]:
        client = redis.Redis(host="127.0.0.1", port=redis_port, max_connections=64)

        async def change(name: str, amount: int) -> int:
            if amount == 0:
                return int(await client.get(name) or 0)
            return int(await client.incrby(name, amount))

        app[CHANGE] = change
        yield
        await client.aclose()

    app.cleanup_ctx.append(connect)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bare", "redis"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-port", type=int, default=6379)
    arguments = parser.parse_args()
    app = bare_app() if arguments.kind == "bare" else redis_app(arguments.redis_port)
    app.add_routes(
        [web.get("/", read), web.get("/increment", increment), web.get("/decrement", decrement)]
    )
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=arguments.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
