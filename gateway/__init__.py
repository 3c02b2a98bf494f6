"""The HTTP gateway: the example's URLs and answers, served by aiohttp over `counters`."""

from .app import Gateway

__all__ = ["Gateway"]
