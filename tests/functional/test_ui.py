"""The page, in a real headless Chromium (Debian's, driven by Playwright) against the real
gateway on loopback: it lists, it changes, it shows errors, and it follows changes made
elsewhere without a reload."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import RawTestServer
from playwright.async_api import Browser, Page, async_playwright, expect

from counters import Namespace
from counters.placement import Placement
from gateway import Gateway

from .conftest import NamespaceFactory, gateway_server

WITHIN = 1000  # ms: the "within a second" for a click; changes from elsewhere alike


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):  # CI installs it: a missing browser is a failure there
            pytest.fail("chromium is not installed (.ci/run installs Debian's)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox"],  # root in CI containers
        )
        try:
            yield launched
        finally:
            await launched.close()


def row(page: Page, name: str) -> object:
    return page.locator(f'tr[data-name="{name}"]')


async def test_the_page_lists_changes_and_follows_the_counters(
    namespace: Namespace, browser: Browser, tmp_path: Path
) -> None:
    await namespace.get_by_name("ui:a").increment(3)
    await namespace.get_by_name("ui:b").increment(5)
    await namespace.get_by_name("other").increment()
    server = gateway_server(namespace)
    await server.start_server()
    try:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(str(server.make_url("/ui?prefix=ui:")))
        a = page.locator('tr[data-name="ui:a"]')
        b = page.locator('tr[data-name="ui:b"]')
        await expect(page.locator("#rows tr")).to_have_count(2)  # the prefix's only
        await expect(a.locator(".count")).to_have_text("3")
        await expect(b.locator(".count")).to_have_text("5")
        await expect(page.locator("#status")).to_have_text("live")

        await a.locator("button.increment").click()
        await expect(a.locator(".count")).to_have_text("4", timeout=WITHIN)
        await expect(a.locator(".version")).to_have_text("2")

        curl = await asyncio.create_subprocess_exec(
            "curl",
            "-sf",
            "-X",
            "POST",
            str(server.make_url("/increment?name=ui:b&amount=10")),
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await curl.wait() == 0
        await expect(b.locator(".count")).to_have_text("15", timeout=WITHIN)  # no reload

        await page.fill("#amount", "10")
        await page.fill("#min", "0")
        await a.locator("button.decrement").click()
        await expect(page.locator("#error")).to_contain_text("409 out_of_bounds", timeout=WITHIN)
        await expect(a.locator(".count")).to_have_text("4")  # nothing changed
        assert (await namespace.get_by_name("ui:a").get()).count == 4

        await page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
        assert (tmp_path / "ui.png").stat().st_size > 0
        assert errors == []
        await page.close()  # its stream ends with it
    finally:
        await server.close()


async def test_the_page_works_behind_the_token(namespace: Namespace, browser: Browser) -> None:
    await namespace.get_by_name("locked").increment(7)
    token = "ui-token-0123456789"
    server = RawTestServer(Gateway(namespace, auth_token=token).handle)
    await server.start_server()
    try:
        # A person asked for the token by the browser (any user name, the token as password).
        context = await browser.new_context(http_credentials={"username": "me", "password": token})
        page = await context.new_page()
        await page.goto(str(server.make_url("/ui?prefix=locked")))
        row = page.locator('tr[data-name="locked"]')
        await expect(row.locator(".count")).to_have_text("7")
        await expect(page.locator("#status")).to_have_text("live")  # the stream got in too
        await namespace.get_by_name("locked").increment()
        await expect(row.locator(".count")).to_have_text("8", timeout=WITHIN)
        await row.locator("button.increment").click()
        await expect(row.locator(".count")).to_have_text("9", timeout=WITHIN)
        await context.close()
        anonymous = await browser.new_context()  # no token: the page itself is refused
        response = await anonymous.request.get(str(server.make_url("/ui")))
        assert response.status == 401
        await anonymous.close()
    finally:
        await server.close()


async def test_many_long_names_stay_live(
    make_namespace: NamespaceFactory, browser: Browser
) -> None:
    """More names than one stream's address can carry: the page watches them in several.
    (Sharded: forty per-name hosts would start slower than the test's deadline.)"""
    namespace = make_namespace(Placement.SHARDED)
    names = [f"long:{i:02d}:" + "x" * 1000 for i in range(40)]  # 40 KB of names
    await asyncio.gather(*(namespace.get_by_name(name).increment() for name in names))
    server = gateway_server(namespace)
    await server.start_server()
    try:
        page = await browser.new_page()
        await page.goto(str(server.make_url("/ui?prefix=long:")))
        await expect(page.locator("#rows tr")).to_have_count(40)
        await expect(page.locator("#status")).to_have_text("live")
        for name in (names[0], names[-1]):  # in the first stream, and in the last
            await namespace.get_by_name(name).increment(5)
            row = page.locator(f'tr[data-name="{name}"]')
            await expect(row.locator(".count")).to_have_text("6", timeout=WITHIN)
        await expect(page.locator("#error")).to_have_text("")
        await page.fill("#new-name", "long:new")  # a counter made on the page is live too
        await page.click("#create")
        new = page.locator('tr[data-name="long:new"]')
        await expect(new.locator(".count")).to_have_text("1", timeout=WITHIN)
        await namespace.get_by_name("long:new").increment(2)
        await expect(new.locator(".count")).to_have_text("3", timeout=WITHIN)
        await page.close()
    finally:
        await server.close()
