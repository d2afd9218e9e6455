"""Web console log-in: users, scrypt hashes, sessions with CSRF, the log-in rate
limit and `ivr users`, over a real SQLite file and a real aiohttp server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from ivr.store import Database, open_store
from ivr.web.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Accounts,
    AuthError,
    TooManyAttempts,
    auth_middleware,
    auth_routes,
    hash_password,
    require,
)
from tests.conftest import ROOT, write_config

ADMIN_PASSWORD = "admin-password-1"
OPERATOR_PASSWORD = "operator-password-1"
MAX_FAILURES = 3
WINDOW = 300.0
TTL = 3600.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Console:
    url: str
    accounts: Accounts
    clock: FakeClock
    db: Database


@pytest.fixture
async def db(store_location: str | Path) -> AsyncIterator[Database]:
    database = await open_store(store_location)
    yield database
    await database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def accounts(db: Database, clock: FakeClock) -> Accounts:
    accounts = Accounts(
        db, clock=clock, session_ttl=TTL, max_failures=MAX_FAILURES, failure_window=WINDOW
    )
    await accounts.add_user("admin1", ADMIN_PASSWORD, "admin")
    await accounts.add_user("op1", OPERATOR_PASSWORD, "operator", sip_uri="sip:op1@127.0.0.1")
    return accounts


async def _serve(accounts: Accounts, *, secure_cookie: bool = False) -> tuple[web.AppRunner, str]:
    async def calls(request: web.Request) -> web.Response:  # an operator's page
        user = require(request)
        return web.json_response({"calls": [], "for": user.name})

    async def publish(request: web.Request) -> web.Response:  # an admin's action
        user = require(request, "admin")
        return web.json_response({"published": True, "by": user.name})

    app = web.Application(middlewares=[auth_middleware(accounts)])
    app.add_routes(auth_routes(accounts, secure_cookie=secure_cookie))
    app.add_routes([web.get("/api/test/calls", calls), web.post("/api/test/publish", publish)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def console(accounts: Accounts, clock: FakeClock, db: Database) -> AsyncIterator[Console]:
    runner, url = await _serve(accounts)
    yield Console(url, accounts, clock, db)
    await runner.cleanup()


def _browser() -> aiohttp.ClientSession:
    # aiohttp's jar drops cookies of IP hosts unless unsafe=True
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _login(
    browser: aiohttp.ClientSession, url: str, name: str, password: str
) -> tuple[int, dict[str, object]]:
    async with browser.post(
        f"{url}/api/login", json={"name": name, "password": password}
    ) as response:
        return response.status, await response.json()


# -- log-in over HTTP --------------------------------------------------------------
async def test_login_sets_an_http_only_strict_cookie_and_me_shows_the_user(
    console: Console,
) -> None:
    async with _browser() as browser:
        async with browser.post(
            f"{console.url}/api/login", json={"name": "op1", "password": OPERATOR_PASSWORD}
        ) as response:
            assert response.status == 200
            body = await response.json()
            raw = response.headers.getall("Set-Cookie")
            assert response.headers["Cache-Control"] == "no-store"
        assert body["user"] == {"name": "op1", "role": "operator", "sip_uri": "sip:op1@127.0.0.1"}
        assert isinstance(body["csrf"], str) and len(body["csrf"]) >= 32
        assert len(raw) == 1 and raw[0].startswith(f"{SESSION_COOKIE}=")
        attributes = [part.strip() for part in raw[0].split(";")]
        assert "HttpOnly" in attributes
        assert "SameSite=Strict" in attributes
        assert "Path=/" in attributes
        assert "Secure" not in attributes  # plain http on 127.0.0.1 here
        token = raw[0].split(";")[0].split("=", 1)[1]

        async with browser.get(f"{console.url}/api/me") as response:
            assert response.status == 200
            assert await response.json() == {"user": body["user"], "csrf": body["csrf"]}
        async with browser.get(f"{console.url}/api/test/calls") as response:
            assert response.status == 200
            assert (await response.json())["for"] == "op1"

    # the database keeps only the token's sha256
    rows = await console.db.fetch_all("SELECT token_hash, csrf FROM sessions")
    assert [r["token_hash"] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    assert all(token not in (r["token_hash"], r["csrf"]) for r in rows)


async def test_secure_cookie_when_asked(accounts: Accounts) -> None:
    runner, url = await _serve(accounts, secure_cookie=True)
    try:
        async with (
            _browser() as browser,
            browser.post(
                f"{url}/api/login", json={"name": "admin1", "password": ADMIN_PASSWORD}
            ) as response,
        ):
            assert response.status == 200
            attributes = [p.strip() for p in response.headers["Set-Cookie"].split(";")]
            assert "Secure" in attributes and "HttpOnly" in attributes
    finally:
        await runner.cleanup()


async def test_wrong_password_and_unknown_name_get_the_same_401(console: Console) -> None:
    async with _browser() as browser:
        status, body = await _login(browser, console.url, "admin1", "not-the-password")
        assert (status, body) == (401, {"error": "wrong name or password"})
        status, body = await _login(browser, console.url, "nobody", ADMIN_PASSWORD)
        assert (status, body) == (401, {"error": "wrong name or password"})
        assert not browser.cookie_jar.filter_cookies(URL(console.url))
        async with browser.get(f"{console.url}/api/me") as response:
            assert response.status == 401
            assert "error" in await response.json()


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        ("not json", {"Content-Type": "application/json"}),
        ('["admin1"]', {"Content-Type": "application/json"}),
        ('{"name": "admin1"}', {"Content-Type": "application/json"}),
        ('{"name": "admin1", "password": 12345678901}', {"Content-Type": "application/json"}),
        # what a cross-site HTML form could send: refused (no log-in CSRF)
        (
            f"name=admin1&password={ADMIN_PASSWORD}",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ],
)
async def test_a_malformed_login_body_is_400(
    console: Console, data: str, headers: dict[str, str]
) -> None:
    async with (
        _browser() as browser,
        browser.post(f"{console.url}/api/login", data=data, headers=headers) as response,
    ):
        assert response.status == 400
        assert "body must be JSON" in (await response.json())["error"]


async def test_too_many_failures_is_429_even_with_the_right_password(console: Console) -> None:
    async with _browser() as browser:
        for _ in range(MAX_FAILURES):
            status, _body = await _login(browser, console.url, "admin1", "wrong-password-x")
            assert status == 401
        console.clock.now += 10
        async with browser.post(
            f"{console.url}/api/login", json={"name": "admin1", "password": ADMIN_PASSWORD}
        ) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) == WINDOW - 10
            assert "too many failed log-ins" in (await response.json())["error"]
            assert SESSION_COOKIE not in response.cookies
        # once the failures have left the window, the right password works again
        console.clock.now += WINDOW - 10
        status, body = await _login(browser, console.url, "admin1", ADMIN_PASSWORD)
        assert status == 200, body


# -- the rate limit, per client ------------------------------------------------------
async def test_a_blocked_client_does_not_block_another(
    accounts: Accounts, clock: FakeClock
) -> None:
    for _ in range(MAX_FAILURES):
        with pytest.raises(AuthError):
            await accounts.login("admin1", "wrong-password-x", client="192.0.2.1")
    with pytest.raises(TooManyAttempts) as blocked:
        await accounts.login("admin1", ADMIN_PASSWORD, client="192.0.2.1")
    assert blocked.value.retry_after == WINDOW

    # another address logs in as the same user; that resets nothing for the first
    _token, session = await accounts.login("admin1", ADMIN_PASSWORD, client="192.0.2.2")
    assert session.user.name == "admin1"
    clock.now += 100
    with pytest.raises(TooManyAttempts) as blocked:
        await accounts.login("admin1", ADMIN_PASSWORD, client="192.0.2.1")
    assert blocked.value.retry_after == WINDOW - 100

    # the blocked client may still try another name (under the per-client limit)
    await accounts.login("op1", OPERATOR_PASSWORD, client="192.0.2.1")

    clock.now += WINDOW - 100
    await accounts.login("admin1", ADMIN_PASSWORD, client="192.0.2.1")


async def test_a_client_guessing_many_names_is_limited_too(
    accounts: Accounts, clock: FakeClock
) -> None:
    per_client = 4 * MAX_FAILURES
    for i in range(per_client):  # never more than max_failures per name
        clock.now += 1
        with pytest.raises(AuthError):
            await accounts.login(f"guess{i % 6}", "wrong-password-x", client="198.51.100.7")
    with pytest.raises(TooManyAttempts) as blocked:
        await accounts.login("op1", OPERATOR_PASSWORD, client="198.51.100.7")
    assert blocked.value.retry_after == pytest.approx(WINDOW - per_client + 1)
    await accounts.login("op1", OPERATOR_PASSWORD, client="198.51.100.8")


async def test_a_success_forgets_that_names_failures_from_that_client(
    accounts: Accounts,
) -> None:
    for _round in range(3):  # typos, then the right password: never blocked
        for _ in range(MAX_FAILURES - 1):
            with pytest.raises(AuthError):
                await accounts.login("op1", "typo-password", client="203.0.113.5")
        await accounts.login("op1", OPERATOR_PASSWORD, client="203.0.113.5")


async def test_parallel_guesses_cannot_outrun_the_limit(accounts: Accounts) -> None:
    results = await asyncio.gather(
        *(accounts.login("admin1", f"guess-number-{i}", client="192.0.2.9") for i in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, TooManyAttempts) for r in results) == 10 - MAX_FAILURES
    assert sum(type(r) is AuthError for r in results) == MAX_FAILURES


async def test_failed_logins_are_logged_without_the_password(
    accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("ivr.web.auth")
    logger.addHandler(caplog.handler)  # "ivr" may not propagate (setup_logging)
    try:
        with caplog.at_level(logging.INFO, logger="ivr.web.auth"), pytest.raises(AuthError):
            await accounts.login("admin1", "secret-guess-123", client="192.0.2.44")
    finally:
        logger.removeHandler(caplog.handler)
    warnings = {id(r): r for r in caplog.records if r.levelno == logging.WARNING}.values()
    assert len(warnings) == 1  # (a record may be caught twice if "ivr" propagates)
    [record] = warnings
    line = record.getMessage()
    assert "admin1" in line and "192.0.2.44" in line
    assert "secret-guess-123" not in caplog.text


# -- roles and CSRF -----------------------------------------------------------------
async def test_roles_and_csrf_on_a_write(console: Console) -> None:
    publish = f"{console.url}/api/test/publish"
    async with _browser() as anonymous, anonymous.post(publish) as response:
        assert response.status == 401
        assert response.content_type == "application/json"
        assert "error" in await response.json()

    async with _browser() as operator:
        _status, body = await _login(operator, console.url, "op1", OPERATOR_PASSWORD)
        async with operator.post(publish, headers={CSRF_HEADER: str(body["csrf"])}) as response:
            assert response.status == 403
            assert (await response.json())["error"] == "this needs the admin role"

    async with _browser() as admin:
        _status, body = await _login(admin, console.url, "admin1", ADMIN_PASSWORD)
        csrf = str(body["csrf"])
        async with admin.post(publish) as response:
            assert response.status == 403
            assert await response.json() == {"error": "csrf token missing or wrong"}
        async with admin.post(publish, headers={CSRF_HEADER: csrf[:-1] + "x"}) as response:
            assert response.status == 403
        async with admin.post(publish, headers={CSRF_HEADER: csrf}) as response:
            assert response.status == 200
            assert await response.json() == {"published": True, "by": "admin1"}
        async with admin.get(f"{console.url}/api/test/calls") as response:
            assert response.status == 200  # admin can do what an operator can


async def test_logout_needs_csrf_and_ends_the_session(console: Console) -> None:
    async with _browser() as browser:
        _status, body = await _login(browser, console.url, "admin1", ADMIN_PASSWORD)
        token = browser.cookie_jar.filter_cookies(URL(console.url))[SESSION_COOKIE].value
        async with browser.post(f"{console.url}/api/logout") as response:
            assert response.status == 403
        async with browser.post(
            f"{console.url}/api/logout", headers={CSRF_HEADER: str(body["csrf"])}
        ) as response:
            assert response.status == 200
        async with browser.get(f"{console.url}/api/me") as response:
            assert response.status == 401
    # the old cookie, sent again by hand, is dead too
    async with (
        aiohttp.ClientSession() as replay,
        replay.get(
            f"{console.url}/api/test/calls", headers={"Cookie": f"{SESSION_COOKIE}={token}"}
        ) as response,
    ):
        assert response.status == 401
    assert await console.accounts.session(token) is None


async def test_an_expired_session_is_401_and_deleted(console: Console) -> None:
    async with _browser() as browser:
        await _login(browser, console.url, "op1", OPERATOR_PASSWORD)
        console.clock.now += TTL - 1
        async with browser.get(f"{console.url}/api/test/calls") as response:
            assert response.status == 200
        console.clock.now += 1
        async with browser.get(f"{console.url}/api/test/calls") as response:
            assert response.status == 401
    assert await console.db.fetch_all("SELECT * FROM sessions") == []


async def test_a_disabled_user_loses_the_session_and_cannot_log_in(console: Console) -> None:
    token, _session = await console.accounts.login("op1", OPERATOR_PASSWORD, client="c")
    await console.db.execute("UPDATE users SET disabled = 1 WHERE name = 'op1'")
    assert await console.accounts.session(token) is None
    with pytest.raises(AuthError, match="wrong name or password"):
        await console.accounts.login("op1", OPERATOR_PASSWORD, client="c")


# -- users and passwords ------------------------------------------------------------
async def test_the_stored_hash_is_scrypt_salted_and_not_the_password(
    accounts: Accounts, db: Database
) -> None:
    await accounts.add_user("op2", OPERATOR_PASSWORD, "operator")
    rows = await db.fetch_all(
        "SELECT password_hash FROM users WHERE name IN ('op1', 'op2') ORDER BY name"
    )
    hashes = [r["password_hash"] for r in rows]
    for stored in hashes:
        assert stored.startswith("scrypt$")
        assert OPERATOR_PASSWORD not in stored
        _scheme, n, r, p, _salt, _digest = stored.split("$")
        assert (int(n), int(r), int(p)) == (2**15, 8, 1)
    assert hashes[0] != hashes[1]  # a salt per user


async def test_hashing_does_not_block_the_event_loop() -> None:
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    took = []
    for _ in range(3):
        start = time.perf_counter()
        await hash_password("correct horse battery staple")
        took.append(time.perf_counter() - start)
    done.set()
    await task
    assert max(gaps) < 0.75 * min(took), (gaps, took)  # a blocking hash would stall the ticker


async def test_set_password_ends_the_users_sessions(accounts: Accounts) -> None:
    token, _session = await accounts.login("op1", OPERATOR_PASSWORD, client="c")
    other, _session = await accounts.login("admin1", ADMIN_PASSWORD, client="c")
    await accounts.set_password("op1", "a-brand-new-password")
    assert await accounts.session(token) is None
    assert await accounts.session(other) is not None  # only that user's
    with pytest.raises(AuthError):
        await accounts.login("op1", OPERATOR_PASSWORD, client="c")
    await accounts.login("op1", "a-brand-new-password", client="c")
    with pytest.raises(AuthError, match="at least 10"):
        await accounts.set_password("op1", "short")
    with pytest.raises(AuthError, match="no user"):
        await accounts.set_password("ghost", "a-brand-new-password")


@pytest.mark.parametrize(
    ("name", "password", "role", "sip_uri", "message"),
    [
        ("Admin", ADMIN_PASSWORD, "admin", None, "must be 2 to 32"),
        ("a", ADMIN_PASSWORD, "admin", None, "must be 2 to 32"),
        ("bad name", ADMIN_PASSWORD, "admin", None, "must be 2 to 32"),
        ("x" * 33, ADMIN_PASSWORD, "admin", None, "must be 2 to 32"),
        ("newbie", ADMIN_PASSWORD, "root", None, "not one of reviewer, department, operator"),
        ("newbie", "123456789", "operator", None, "at least 10 characters"),
        ("newbie", ADMIN_PASSWORD, "operator", "13800138000", "not a SIP URI"),
        ("op1", ADMIN_PASSWORD, "operator", None, "already exists"),
    ],
)
async def test_add_user_refuses_bad_input(
    accounts: Accounts, name: str, password: str, role: str, sip_uri: str | None, message: str
) -> None:
    with pytest.raises(AuthError, match=message):
        await accounts.add_user(name, password, role, sip_uri=sip_uri)


async def test_users_and_user(accounts: Accounts, clock: FakeClock) -> None:
    users = await accounts.users()
    assert [(u.name, u.role, u.sip_uri) for u in users] == [
        ("admin1", "admin", None),
        ("op1", "operator", "sip:op1@127.0.0.1"),
    ]
    op1 = await accounts.user("op1")
    assert op1 is not None and op1.created_at == clock.now
    assert await accounts.user("ghost") is None


# -- ivr users ----------------------------------------------------------------------
def _ivr(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ivr.cli", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


async def test_ivr_users_add_list_passwd(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, operators=["sip:op@127.0.0.1:5080"], prompt_cache=tmp_path / "cache"
    )
    done = await asyncio.to_thread(
        _ivr, config, "users", "add", "admin1", "--role", "admin", "--password-stdin",
        stdin="first-admin-password\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "added admin admin1" in done.stdout
    done = await asyncio.to_thread(
        _ivr, config, "users", "add", "op7", "--role", "operator",
        "--sip-uri", "sip:op7@127.0.0.1:5080", "--password-stdin", stdin="operator-password-7\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    listed = await asyncio.to_thread(_ivr, config, "users", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0][:2] == ["name", "role"]
    assert rows[1][:2] == ["admin1", "admin"]
    assert rows[2][:2] == ["op7", "operator"] and rows[2][-1] == "sip:op7@127.0.0.1:5080"

    bad = await asyncio.to_thread(
        _ivr, config, "users", "add", "someone", "--role", "root", "--password-stdin",
        stdin="some-long-password\n",
    )  # fmt: skip
    assert bad.returncode == 1
    roles = "reviewer, department, operator, supervisor, admin"
    assert f"role 'root' is not one of {roles}" in bad.stderr
    short = await asyncio.to_thread(
        _ivr, config, "users", "add", "someone", "--role", "operator", "--password-stdin",
        stdin="short\n",
    )  # fmt: skip
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    twice = await asyncio.to_thread(
        _ivr, config, "users", "add", "admin1", "--role", "admin", "--password-stdin",
        stdin="first-admin-password\n",
    )  # fmt: skip
    assert twice.returncode == 1 and "already exists" in twice.stderr
    ghost = await asyncio.to_thread(
        _ivr, config, "users", "passwd", "ghost", "--password-stdin", stdin="whatever-password\n"
    )
    assert ghost.returncode == 1 and "no user 'ghost'" in ghost.stderr

    changed = await asyncio.to_thread(
        _ivr, config, "users", "passwd", "admin1", "--password-stdin", stdin="second-password-9\n"
    )
    assert changed.returncode == 0, changed.stderr

    db = await open_store(tmp_path / "ivr.sqlite3")
    try:
        accounts = Accounts(db)
        with pytest.raises(AuthError):
            await accounts.login("admin1", "first-admin-password", client="cli-test")
        _token, session = await accounts.login("admin1", "second-password-9", client="cli-test")
        assert session.user.role == "admin"
        row = await db.fetch_one("SELECT password_hash FROM users WHERE name = 'admin1'")
        assert row is not None and "second-password-9" not in row["password_hash"]
        assert json.dumps([u.name for u in await accounts.users()]) == '["admin1", "op7"]'
    finally:
        await db.close()


def test_ivr_users_add_asks_twice_and_refuses_a_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    from ivr.cli import main

    config = write_config(
        tmp_path, operators=["sip:op@127.0.0.1:5080"], prompt_cache=tmp_path / "cache"
    )
    answers = iter(["first-try-password", "second-try-password"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    assert main(["--config", str(config), "users", "add", "admin1", "--role", "admin"]) == 1
    assert "the two passwords differ" in capsys.readouterr().err

    answers = iter(["same-password-1", "same-password-1"])
    assert main(["--config", str(config), "users", "add", "admin1", "--role", "admin"]) == 0
    assert "added admin admin1" in capsys.readouterr().out


async def test_an_older_hash_is_upgraded_at_log_in(
    accounts: Accounts, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ivr.web import auth

    with monkeypatch.context() as patch:
        patch.setattr(auth, "SCRYPT_N", 2**14)
        await accounts.add_user("old1", "an-old-password", "operator")
    row = await db.fetch_one("SELECT password_hash FROM users WHERE name = 'old1'")
    assert row is not None and row["password_hash"].startswith("scrypt$16384$8$1$")
    await accounts.login("old1", "an-old-password", client="c")
    row = await db.fetch_one("SELECT password_hash FROM users WHERE name = 'old1'")
    assert row is not None and row["password_hash"].startswith("scrypt$32768$8$1$")
    await accounts.login("old1", "an-old-password", client="c")


async def test_old_failure_counters_are_dropped(accounts: Accounts, clock: FakeClock) -> None:
    for i in range(5):
        with pytest.raises(AuthError):
            await accounts.login(f"name{i}", "wrong-password-x", client=f"192.0.2.{i}")
    assert len(accounts._failures) == 5
    clock.now += WINDOW + 61
    await accounts.login("op1", OPERATOR_PASSWORD, client="192.0.2.200")
    assert accounts._failures == {} and accounts._client_failures == {}
