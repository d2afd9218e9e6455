"""[web] allow (issue 13 item 1): an address outside it gets 403 on every
route (pages, API, log-in, static files, health) before log-in or any
handler; a listed address gets the console as before. The test connects from
127.0.0.1, so a config allowing only 10.0.0.0/8 refuses it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr.config import load_settings
from ivr.logs import setup_logging
from ivr.server import Hotline
from tests.conftest import write_config
from tests.test_transcript_reliability import CHROMIUM, browser  # noqa: F401 (fixture)

ROUTES = ["/", "/admin", "/api/health", "/api/tickets/1", "/api/events", "/static/console.css"]
StartWith = Callable[[str], Awaitable[Hotline]]


@pytest.fixture
async def hotline_allowing(tmp_path: Path, prompt_cache: Path) -> AsyncIterator[StartWith]:
    started: list[Hotline] = []

    async def start(allow: str) -> Hotline:
        path = write_config(
            tmp_path, operators=["sip:nobody@127.0.0.1:9"], prompt_cache=prompt_cache
        )
        text = path.read_text()
        assert "[web]\nport = 0\n" in text
        path.write_text(text.replace("[web]\nport = 0\n", f"[web]\nport = 0\nallow = {allow}\n"))
        log = setup_logging("DEBUG", "text")
        log.propagate = True
        hotline = Hotline(load_settings(path), log)
        await hotline.start()
        started.append(hotline)
        return hotline

    yield start
    for hotline in started:
        await hotline.stop(drain_timeout=1.0)
    logging.getLogger("ivr").handlers.clear()


async def test_an_address_outside_web_allow_gets_403_everywhere(
    hotline_allowing: StartWith, caplog: pytest.LogCaptureFixture
) -> None:
    hotline = await hotline_allowing('["10.0.0.0/8"]')
    base = f"http://127.0.0.1:{hotline.api.port}"
    async with aiohttp.ClientSession() as http:
        for route in ROUTES:
            async with http.get(base + route) as response:
                assert response.status == 403, route
                assert (await response.json())["error"] == "this address may not use the console"
        login = {"name": "admin", "password": "x" * 12}
        async with http.post(base + "/api/login", json=login) as response:
            assert response.status == 403
            assert "Set-Cookie" not in response.headers
    assert hotline.api.allow is not None and hotline.api.allow.refused == len(ROUTES) + 1
    lines = [r.getMessage() for r in caplog.records if "not in [web] allow" in r.getMessage()]
    assert lines == ["web: 403 to GET / from 127.0.0.1: not in [web] allow (10.0.0.0/8)"]


async def test_a_listed_address_gets_the_console(hotline_allowing: StartWith) -> None:
    hotline = await hotline_allowing('["10.0.0.0/8", "127.0.0.1/32"]')
    base = f"http://127.0.0.1:{hotline.api.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/api/health") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        async with http.get(base + "/api/tickets/1") as response:
            assert response.status == 401  # on to log-in, as before
        async with http.get(base + "/") as response:
            assert response.status == 200
            assert "<html" in (await response.text()).lower()
    assert hotline.api.allow is not None and hotline.api.allow.refused == 0


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_a_browser_outside_web_allow_is_told_so(
    hotline_allowing: StartWith,
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    hotline = await hotline_allowing('["10.0.0.0/8"]')
    page = await browser.new_page()
    response = await page.goto(f"http://127.0.0.1:{hotline.api.port}/login")
    assert response is not None and response.status == 403
    assert await page.text_content("#refused") == "无权访问"
    assert "[web] allow" in (await page.text_content("body") or "")
    assert await page.locator("#password").count() == 0  # no log-in form reached
    await page.screenshot(path=str(tmp_path / "refused.png"))
