"""No open door: with a token, every request but /healthz must bear it; without one, serving
beyond loopback is refused."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import RawTestServer, TestClient

from counters import Namespace
from gateway import Gateway
from gateway.app import SERVER_LIMITS

Client = TestClient[Any, Any]
TOKEN = "s3cret-token_0123456789"


class _Server(RawTestServer):
    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> Any:
        return await super()._make_runner(debug=debug, **{**SERVER_LIMITS, **kwargs})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_every_request_but_healthz_needs_the_token(
    namespace: Namespace, aiohttp_client: Callable[..., Any]
) -> None:
    client: Client = await aiohttp_client(_Server(Gateway(namespace, auth_token=TOKEN).handle))
    async with client.get("/healthz") as response:
        assert response.status == 200
    for path in ("/?name=A", "/increment?name=A", "/counters", "/watch?name=A", "/ui", "/nope"):
        for authorization in (
            None,
            "Bearer wrong",
            f"Bearer {TOKEN}x",
            basic("me", "wrong"),
            TOKEN,
        ):
            headers = {} if authorization is None else {"Authorization": authorization}
            async with client.get(path, headers={**headers, "Accept": "application/json"}) as r:
                assert r.status == 401, (path, authorization)
                assert r.headers["WWW-Authenticate"].startswith('Bearer realm="counters"')
                assert (await r.json())["error"] == "unauthorized"
    assert await namespace.get_by_name("A").get_counter_value() == 0  # nothing was applied
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with client.post("/increment?name=A", headers=bearer) as response:
        assert (response.status, await response.text()) == (200, "Durable Object 'A' count: 1")
    browser = {"Authorization": basic("anyone", TOKEN)}  # what a browser sends once asked
    async with client.get("/?name=A", headers=browser) as response:
        assert (response.status, await response.text()) == (200, "Durable Object 'A' count: 1")
    async with client.get("/ui", headers=browser) as response:
        assert response.status == 200


def test_serving_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1", "counters.example"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "counters",
                "serve",
                "--host",
                host,
                "--storage-dir",
                str(tmp_path),
            ],
            capture_output=True,
            timeout=60,
            env={"RAY_USAGE_STATS_ENABLED": "0", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 2, host
        message = result.stderr.decode()
        assert "--auth-token-file" in message, message
        assert "--insecure" in message
    assert not (tmp_path / "hosts").exists()  # refused before anything started
