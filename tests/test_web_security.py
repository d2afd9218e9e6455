"""The web console's security on a real hotline, over real HTTP: every write
route refuses the anonymous (401), operators on admin routes (403) and a
logged-in session without its CSRF token (403), and changes nothing; the
session cookie; the log-in rate limit; the upload size cap and prompt names
that try to leave voices_dir; the pages' security headers."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from ivr.server import Hotline
from tests.conftest import ROOT, StartHotline
from tests.test_console_api import espeak_recording, upload
from tests.web_client import PASSWORD, hotline_client

PLANS = Path(__file__).parent / "data" / "dialplans"
OPERATOR = "sip:op1@127.0.0.1:9"
NEW_PLAN = (PLANS / "publish_b.toml").read_text()


@dataclass(frozen=True)
class Write:
    path: str  # {ticket}, {other} and {callback} are filled in
    body: Callable[[bytes], Any]  # the request's keyword arguments, given a good recording
    admin: bool  # admins only (operators get 403)


WRITES = [
    Write("/api/admin/plans/publish", lambda _: {"json": {"source": NEW_PLAN}}, True),
    Write("/api/admin/plans/validate", lambda _: {"json": {"source": NEW_PLAN}}, True),
    Write("/api/admin/plans/diff", lambda _: {"json": {"source": NEW_PLAN}}, True),
    Write("/api/admin/plans/1/rollback", lambda _: {}, True),
    Write("/api/admin/prompts/mandarin/welcome", lambda wav: {"data": upload(wav)}, True),
    Write("/api/admin/prompts/yue/welcome", lambda wav: {"data": upload(wav)}, True),
    Write("/api/admin/prompts/mandarin/welcome/synthesise", lambda _: {}, True),
    Write(
        "/api/tickets/{ticket}",
        lambda _: {"json": {"status": "closed", "fields": {"name": "x"}}},
        False,
    ),
    Write("/api/tickets/{ticket}/duplicate", lambda _: {"json": {"of": "{other}"}}, False),
    Write("/api/console/availability", lambda _: {"json": {"ready": False}}, False),
    Write("/api/callbacks/{callback}/cancel", lambda _: {"json": {"reason": "x"}}, False),
]
ADMIN_READS = [
    "/api/admin/plans",
    "/api/admin/plans/graph",
    "/api/tickets.csv",
    "/api/stats",
    "/api/admin/prompts",
    "/api/admin/prompts/mandarin/welcome.wav",
]
OPERATOR_READS = [
    "/api/console/me",
    "/api/console/queue",
    "/api/console/callbacks",
    "/api/tickets",
    "/api/tickets/{ticket}",
    "/api/tickets/{ticket}/history",
    "/api/tickets/{ticket}/duplicates",
    "/api/callbacks",
    "/api/me",
]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A good studio recording: it would be installed, were the request allowed."""
    return espeak_recording(tmp_path_factory.mktemp("studio"))


async def secured_hotline(start_hotline: StartHotline, tmp_path: Path) -> Hotline:
    """A hotline on a copy of publish_a.toml (a publish would rewrite it) with
    its voices_dir under tmp_path (nothing is ever written into the repository)."""
    plan = tmp_path / "plan.toml"
    shutil.copy(PLANS / "publish_a.toml", plan)
    voices = tmp_path / "voices"
    (voices / "mandarin").mkdir(parents=True)
    return await start_hotline(operators=[OPERATOR], dialplan=plan, voices_dir=voices)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (the database's own files aside) -> sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
        if not p.name.startswith("ivr.sqlite3")
    }


async def state(hotline: Hotline, tmp_path: Path, tickets: list[int]) -> dict[str, Any]:
    """What a refused write must leave as it was."""
    assert hotline.plan is not None and hotline.plan_store is not None
    assert hotline.tickets is not None
    found = [await hotline.tickets.get(t) for t in tickets]
    return {
        "plan": hotline.plan.version,
        "published": [(h.id, h.version) for h in await hotline.plan_store.history()],
        "files": tree(tmp_path),
        "tickets": [t.to_json() for t in found if t is not None],
        "history": [len(await hotline.tickets.history(t)) for t in tickets],
        "paused": [op.paused for op in hotline.desk.operators_named(OPERATOR)],
        "welcome": hotline.prompts.source("welcome", "mandarin"),
    }


async def two_tickets(hotline: Hotline) -> tuple[int, int]:
    assert hotline.tickets is not None
    first = await hotline.tickets.create("call-a", "13800138000")
    second = await hotline.tickets.create("call-b", "13900139000")
    return first.id, second.id


def filled(path: str, ticket: int, other: int) -> str:
    return path.format(ticket=ticket, other=other, callback=1)


def kwargs_for(write: Write, wav: bytes, ticket: int, other: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = write.body(wav)
    if kwargs.get("json") == {"of": "{other}"}:
        kwargs["json"] = {"of": other}
    return kwargs


async def test_anonymous_and_operators_cannot_write_or_read_admin_data(
    start_hotline: StartHotline, tmp_path: Path, recording: bytes
) -> None:
    hotline = await secured_hotline(start_hotline, tmp_path)
    # a recorded mandarin welcome, so "synthesise" would have something to move
    (tmp_path / "voices" / "mandarin" / "welcome.wav").write_bytes(recording)
    await hotline.reload_plan()
    base = f"http://127.0.0.1:{hotline.api.port}"
    ticket, other = await two_tickets(hotline)
    before = await state(hotline, tmp_path, [ticket, other])
    assert hotline.plan is not None
    assert before["welcome"].endswith("voices/mandarin/welcome.wav")
    assert [v for _, v in before["published"]] == [hotline.plan.version]  # the file, on first use

    async with aiohttp.ClientSession() as anonymous:
        for write in WRITES:
            url = base + filled(write.path, ticket, other)
            async with anonymous.post(url, **kwargs_for(write, recording, ticket, other)) as r:
                assert r.status == 401, (write.path, await r.text())
                assert (await r.json())["error"] == "log in first"
        for path in ADMIN_READS + OPERATOR_READS:
            async with anonymous.get(base + filled(path, ticket, other)) as r:
                assert r.status == 401, path
    assert await state(hotline, tmp_path, [ticket, other]) == before

    async with await hotline_client(hotline, "operator") as operator:
        for write in WRITES:
            if not write.admin:
                continue
            url = base + filled(write.path, ticket, other)
            async with operator.post(url, **kwargs_for(write, recording, ticket, other)) as r:
                assert r.status == 403, (write.path, await r.text())
                assert (await r.json())["error"] == "this needs the admin role"
        for path in ADMIN_READS:
            async with operator.get(base + path) as r:
                assert r.status == 403, path
        for path in OPERATOR_READS:  # what operators may read, they can
            async with operator.get(base + filled(path, ticket, other)) as r:
                assert r.status == 200, path
    after = await state(hotline, tmp_path, [ticket, other])
    assert after == before


async def test_a_write_without_the_csrf_token_is_refused(
    start_hotline: StartHotline, tmp_path: Path, recording: bytes
) -> None:
    hotline = await secured_hotline(start_hotline, tmp_path)
    base = f"http://127.0.0.1:{hotline.api.port}"
    ticket, other = await two_tickets(hotline)
    await hotline.accounts.add_user("boss", PASSWORD, "admin", sip_uri=OPERATOR)  # type: ignore[union-attr]
    before = await state(hotline, tmp_path, [ticket, other])
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:  # the cookie, not the header
        async with http.post(
            f"{base}/api/login", json={"name": "boss", "password": PASSWORD}
        ) as response:
            assert response.status == 200
            csrf = (await response.json())["csrf"]
        async with http.get(f"{base}/api/me") as response:
            assert response.status == 200  # logged in: reads need no token
        for write in WRITES:
            url = base + filled(write.path, ticket, other)
            for headers in ({}, {"X-CSRF-Token": csrf[:-1]}, {"X-CSRF-Token": ""}):
                kwargs = kwargs_for(write, recording, ticket, other)
                async with http.post(url, headers=headers, **kwargs) as r:
                    assert r.status == 403, (write.path, headers, await r.text())
                    assert (await r.json())["error"] == "csrf token missing or wrong"
        assert await state(hotline, tmp_path, [ticket, other]) == before
        # the same session with its token does get through
        async with http.post(
            f"{base}/api/console/availability",
            json={"ready": False},
            headers={"X-CSRF-Token": csrf},
        ) as response:
            assert response.status == 200
    assert hotline.desk.operators_named(OPERATOR)[0].paused


async def test_session_cookie_and_login_rate_limit(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await secured_hotline(start_hotline, tmp_path)
    assert hotline.accounts is not None
    await hotline.accounts.add_user("clerk", PASSWORD, "operator")
    base = f"http://127.0.0.1:{hotline.api.port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            f"{base}/api/login", json={"name": "clerk", "password": PASSWORD}
        ) as response:
            assert response.status == 200
            (cookie,) = response.headers.getall("Set-Cookie")
        attributes = [a.strip().lower() for a in cookie.split(";")]
        assert attributes[0].startswith("ivr_session=") and len(attributes[0]) > 40
        assert "httponly" in attributes and "samesite=strict" in attributes
        assert "path=/" in attributes
        assert "secure" not in attributes  # plain HTTP here (web.secure_cookie = false)

        for _ in range(5):
            async with http.post(
                f"{base}/api/login", json={"name": "clerk", "password": "wrong-password!"}
            ) as response:
                assert response.status == 401
        async with http.post(
            f"{base}/api/login", json={"name": "clerk", "password": PASSWORD}
        ) as response:
            assert response.status == 429
            retry_after = int(response.headers["Retry-After"])
            assert 1 <= retry_after <= 300
            assert "too many failed log-ins" in (await response.json())["error"]
            assert "Set-Cookie" not in response.headers


async def test_upload_size_cap_and_prompt_names_that_leave_voices_dir(
    start_hotline: StartHotline, tmp_path: Path, recording: bytes
) -> None:
    hotline = await secured_hotline(start_hotline, tmp_path)
    base = f"http://127.0.0.1:{hotline.api.port}"
    voices = tmp_path / "voices"
    outside = tmp_path.parent
    before = tree(tmp_path)
    repository_voices = tree(ROOT / "voices")
    around = sorted(p.name for p in outside.iterdir())
    big = recording + b"\0" * (6 * 1024 * 1024 - len(recording))
    async with await hotline_client(hotline, "admin") as http:
        url = f"{base}/api/admin/prompts/mandarin/welcome"
        async with http.post(url, data=upload(big)) as response:
            assert response.status == 413, await response.text()
            assert "5 MB" in (await response.json())["error"]

        boundary = "security-test-boundary"
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="welcome.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        body = head + big + f"\r\n--{boundary}--\r\n".encode()

        async def stream() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 256 * 1024):
                yield body[i : i + 256 * 1024]

        async with http.post(
            url,
            data=stream(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        ) as response:
            assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
            assert response.status == 413, await response.text()
            assert "5 MB" in (await response.json())["error"]  # counted while reading

        for path in (
            "/api/admin/prompts/mandarin/..%2F..%2Fetc",
            "/api/admin/prompts/mandarin/%2e%2e",
            "/api/admin/prompts/mandarin/..%2F..%2F..%2Fwelcome",
            "/api/admin/prompts/..%2F..%2Fmandarin/welcome",
            "/api/admin/prompts/..%2Fmandarin/welcome",
            "/api/admin/prompts/mandarin/not_in_the_plan",
            "/api/admin/prompts/mandarin/Welcome",
            "/api/admin/prompts/mandarin/welcome%00",
            "/api/admin/prompts/wu/welcome",  # a dialect group, not offered here
            "/api/admin/prompts/mandarin/%2A/synthesise",
            "/api/admin/prompts/..%2Fmandarin/welcome/synthesise",
        ):
            async with http.post(URL(base + path, encoded=True), data=upload(recording)) as r:
                assert r.status in (400, 404), (path, r.status, await r.text())
        async with http.get(
            URL(f"{base}/api/admin/prompts/mandarin/..%2F..%2Fplan.wav", encoded=True)
        ) as response:
            assert response.status in (400, 404)
    assert tree(tmp_path) == before
    assert not (voices / "mandarin" / "welcome.wav").exists()
    assert sorted(p.name for p in outside.iterdir()) == around
    assert not (ROOT / "etc").exists() and tree(ROOT / "voices") == repository_voices


async def test_pages_are_public_with_security_headers_but_their_data_is_not(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await secured_hotline(start_hotline, tmp_path)
    base = f"http://127.0.0.1:{hotline.api.port}"
    async with aiohttp.ClientSession() as anonymous:
        for page in ("/login", "/operator", "/admin"):
            async with anonymous.get(base + page) as response:
                assert response.status == 200, page
                assert response.content_type == "text/html"
                assert "<html" in (await response.text()).lower()
                csp = response.headers["Content-Security-Policy"]
                assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
                assert "unsafe-inline" not in csp
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Cache-Control"] == "no-store"
        for asset in ("/static/console.js", "/static/console.css", "/api/health"):
            async with anonymous.get(base + asset) as response:
                assert response.status == 200, asset
                csp = response.headers["Content-Security-Policy"]
                assert csp == "default-src 'none'; frame-ancestors 'none'", asset
                assert response.headers["X-Content-Type-Options"] == "nosniff"
        async with anonymous.get(base + "/", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "/login"
        for data in ("/api/console/me", "/api/console/queue", "/api/tickets", "/api/stats"):
            async with anonymous.get(base + data) as response:
                assert response.status == 401, data
    for role in ("admin", "operator"):
        http = await hotline_client(hotline, role)
        async with http, http.get(base + "/", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == f"/{role}"
