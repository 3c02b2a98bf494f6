"""Running the service: Ray, the namespace binding and the gateway, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import ray
from aiohttp import web

from gateway import make_app

from .client import Namespace
from .runtime import start_ray, tune_gc
from .settings import Settings

__all__ = ["serve"]

log = logging.getLogger("counters")


def serve(settings: Settings) -> int:
    """Serve until Ctrl-C or SIGTERM; stop Ray too if we started it."""
    started_ray = start_ray(settings)
    try:
        namespace = Namespace(settings)
        app = make_app(namespace)

        async def announce(app: web.Application) -> AsyncIterator[None]:
            where = "a local Ray" if started_ray else f"the Ray cluster at {settings.address}"
            log.info(
                "serving on http://%s:%d on %s; storage in %s; %s placement",
                settings.host,
                settings.port,
                where,
                settings.storage_path,
                settings.placement.value,
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
            yield
            log.info("stopping")

        app.cleanup_ctx.append(announce)
        _use_uvloop()
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        )
    finally:
        if started_ray:
            ray.shutdown()
    return 0


def _use_uvloop() -> None:
    """uvloop where it installs (not on Windows): the same aiohttp, a faster event loop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
