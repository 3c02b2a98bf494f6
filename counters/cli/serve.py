"""Running the service: Ray, the namespace binding and the gateway, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import ray
from aiohttp import web

from gateway import Gateway

from ..client import Namespace
from ..placement import Placement
from ..runtime import start_ray, tune_gc
from ..settings import Settings

__all__ = ["serve"]

log = logging.getLogger("counters")


def serve(settings: Settings) -> int:
    """Serve until Ctrl-C or SIGTERM; stop Ray too if we started it."""
    settings.refuse_open_door()
    token = settings.auth_token()
    started_ray = start_ray(settings)
    try:
        namespace = Namespace(settings)
        # Hosts refuse a second service on the storage anyway; say so before serving, and keep
        # the storage claimed while we serve, between hosts too (none may be alive at times).
        release = storage_claim(namespace)
        _use_uvloop()
        try:
            asyncio.run(_serve(settings, Gateway(namespace, auth_token=token), started_ray))
        finally:
            release()
    finally:
        if started_ray:
            ray.shutdown()
    return 0


async def _serve(settings: Settings, gateway: Gateway, started_ray: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    runner = web.ServerRunner(gateway.server(access_log=access_log))
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        where = "a local Ray" if started_ray else f"the Ray cluster at {settings.address}"
        service = gateway.namespace.settings  # with the shard count decided
        shards = ""
        if service.placement is Placement.SHARDED:
            shards = f", {service.shards} shard{'' if service.shards == 1 else 's'}"
        log.info(
            "serving on http://%s:%d on %s; counters in the %s; %s placement%s",
            settings.host,
            settings.port,
            where,
            service.storage().describe(),
            service.placement.value,
            shards,
        )
        address = ray.get_runtime_context().gcs_address
        log.info(
            "Ray at %s: clients join with ray.init(address='auto') on this machine, "
            "or with RAY_ADDRESS=%s RAY_AUTH_MODE=token",
            address,
            address,
        )
        if started_ray and settings.dashboard_port:
            log.info("Ray dashboard: http://127.0.0.1:%d", settings.dashboard_port)
        tune_gc()  # everything long-lived exists by now
        async with gateway.maintaining():
            await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()  # stop listening, let requests in progress finish


def storage_claim(namespace: Namespace) -> Callable[[], None]:
    """Claim the service's storage for as long as we serve, where we can reach it: a
    PostgreSQL database from any node, a storage dir only on its own node."""
    settings = namespace.settings
    if not settings.database and not namespace.storage_is_here():
        return lambda: None
    return settings.storage().hold(namespace.service)


def _use_uvloop() -> None:
    """uvloop where it installs (not on Windows): the same aiohttp, a faster event loop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
