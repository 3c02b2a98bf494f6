"""The HTTP gateway: the example's URLs and answers, served by aiohttp over `counters`."""

from .app import NAMESPACE, make_app

__all__ = ["NAMESPACE", "make_app"]
