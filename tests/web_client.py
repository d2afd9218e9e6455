"""A logged-in HTTP client for tests of the hotline's web API (real log-in,
real cookie, the session's CSRF token on every request)."""

from __future__ import annotations

from typing import Any

import aiohttp

PASSWORD = "a-long-test-password"


async def log_in(base: str, name: str, password: str = PASSWORD) -> aiohttp.ClientSession:
    """A session logged in as ``name`` at ``base`` (http://127.0.0.1:PORT)."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # an IP host
    try:
        async with session.post(
            f"{base}/api/login", json={"name": name, "password": password}
        ) as response:
            assert response.status == 200, await response.text()
            csrf = (await response.json())["csrf"]
    except BaseException:
        await session.close()
        raise
    session.headers["X-CSRF-Token"] = csrf  # every later request carries it
    return session


async def hotline_client(
    hotline: Any, role: str = "admin", name: str | None = None, sip_uri: str | None = None
) -> aiohttp.ClientSession:
    """A user of ``role`` made in the hotline's database, logged in over HTTP."""
    assert hotline.accounts is not None
    name = name or f"test-{role}"
    if await hotline.accounts.user(name) is None:
        await hotline.accounts.add_user(name, PASSWORD, role, sip_uri=sip_uri)
    return await log_in(f"http://127.0.0.1:{hotline.api.port}", name)
