"""The audit log and abnormal access (issue 13 item 6), over real HTTP on real
hotlines: every read of a ticket or recording, every export and admin change
is in the append-only audit_log (who, role, what, when, from where, outcome)
and admins search it; an account past an hourly threshold is locked on every
node (sessions ended, log-in refused saying why) and the admins alerted on
the event stream of any node, until an admin unlocks it; password spraying
locks the address; exports for a role without see_personal hold no whole
phone number and no transcript. The thresholds count from the store, so two
nodes sharing it (SQLite file or PostgreSQL) see one total."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from ivr.audit import AuditLog, AuditQuery
from ivr.config import load_settings
from ivr.logs import setup_logging
from ivr.server import Hotline
from ivr.store import ConstraintError, open_store
from tests.conftest import ROOT, write_config
from tests.test_web_console import CHROMIUM, browser, shot, until  # noqa: F401
from tests.web_client import PASSWORD, hotline_client, log_in

WHOLE_NUMBER = re.compile(r"(?<!\d)1\d{10}(?!\d)")
StartNode = Callable[..., Awaitable[Hotline]]


@pytest.fixture
async def start_node(
    tmp_path: Path, prompt_cache: Path
) -> AsyncIterator[Callable[..., Awaitable[Hotline]]]:
    """``await start_node(name, audit=..., store=...)``: a hotline (a node named
    ``name``) with ``[audit]`` keys ``audit``, on the store ``store`` (an SQLite
    path or a PostgreSQL URL; nodes given the same store share it)."""
    started: list[Hotline] = []

    async def start(name: str, *, audit: str = "", store: str | Path | None = None) -> Hotline:
        directory = tmp_path / name
        directory.mkdir()
        path = write_config(
            directory,
            operators=["sip:nobody@127.0.0.1:9"],
            prompt_cache=prompt_cache,
            extra=f'\n[node]\nid = "{name}"\n\n[audit]\n{audit}\n',
        )
        location = store if store is not None else tmp_path / "ivr.sqlite3"
        key = "url" if str(location).startswith("postgresql://") else "database"
        text, n = re.subn(r'(?m)^database = ".*"$', f'{key} = "{location}"', path.read_text())
        assert n == 1
        path.write_text(text)
        log = setup_logging("DEBUG", "text")
        log.propagate = True  # caplog sees the IVR's lines
        hotline = Hotline(load_settings(path), log)
        started.append(hotline)
        await hotline.start()
        return hotline

    yield start
    for hotline in started:
        if not hotline.stopped.is_set():
            await hotline.stop(drain_timeout=2.0)
    logging.getLogger("ivr").handlers.clear()


def base(hotline: Hotline) -> str:
    return f"http://127.0.0.1:{hotline.api.port}"


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as response:
        body = await response.read()
        if response.content_type == "application/json":
            return response.status, json.loads(body)
        return response.status, body


async def try_log_in(
    url: str, name: str, password: str = PASSWORD, *, source: str = "127.0.0.1"
) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{url}/api/login", json={"name": name, "password": password}) as response,
    ):
        return response.status, await response.json()


async def audit_rows(admin: aiohttp.ClientSession, url: str, **query: str) -> list[dict[str, Any]]:
    status, body = await get(admin, f"{url}/api/admin/audit", params={"limit": "500", **query})
    assert status == 200, body
    rows: list[dict[str, Any]] = body["entries"]
    return rows


class Alerts:
    """An admin's event stream, kept open: the audit_alert events it got."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.got: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._open = asyncio.Event()

    async def __aenter__(self) -> Alerts:
        self._task = asyncio.ensure_future(self._read())
        await asyncio.wait_for(self._open.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async with self.session.get(f"{self.url}/api/events") as response:
            assert response.status == 200
            kind = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line == ": connected":
                    self._open.set()
                elif line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: ") and kind == "audit_alert":
                    self.got.append(json.loads(line[len("data: ") :]))

    async def wait_for(self, kind: str, subject: str, timeout: float = 10.0) -> dict[str, Any]:
        for _ in range(int(timeout / 0.1)):
            for alert in self.got:
                if alert["kind"] == kind and alert["subject"] == subject:
                    return alert
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {kind} alert for {subject}; got {self.got}")


def wav(path: Path) -> Path:
    sf.write(path, np.zeros(4000, dtype=np.int16), 8000, subtype="PCM_16")
    return path


# --------------------------------------------------------------------- the table


async def test_the_audit_log_is_append_only(store_location: str | Path) -> None:
    async with await open_store(store_location) as db:
        audit = AuditLog(db, node="n1")
        await audit.record(action="ticket.read", outcome="allowed", user="wang", items=1)
        with pytest.raises(ConstraintError, match="append-only"):
            await db.execute("UPDATE audit_log SET user_name = 'someone else'")
        with pytest.raises(ConstraintError, match="append-only"):
            await db.execute("DELETE FROM audit_log")
        rows = await db.fetch_all("SELECT user_name, action FROM audit_log")
        assert [tuple(r) for r in rows] == [("wang", "ticket.read")]
    # and the program has no path that changes or deletes a row
    for path in (ROOT / "ivr").rglob("*.py"):
        text = re.sub(r"\s+", " ", path.read_text()).upper()
        assert "UPDATE AUDIT_LOG" not in text and "DELETE FROM AUDIT_LOG" not in text, path


# ------------------------------------------------------------- what is recorded


async def test_reads_exports_and_admin_changes_are_recorded_and_searchable(
    start_node: StartNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ivr")
    hotline = await start_node("a")
    url = base(hotline)
    assert hotline.tickets is not None
    ticket = await hotline.tickets.create("call-a", "13800138000")
    recording = await hotline.tickets.add_recording(ticket.id, wav(tmp_path / "r.wav"), 0.5, "x")
    admin = await hotline_client(hotline, "admin", name="boss")
    wang = await hotline_client(hotline, "operator", name="wang")
    try:
        spoofed = {"X-Forwarded-For": "203.0.113.9"}  # not believed: no trusted proxy
        assert (await get(wang, f"{url}/api/tickets/{ticket.id}", headers=spoofed))[0] == 200
        assert (await get(wang, f"{url}/api/tickets/{ticket.id}/history"))[0] == 200
        status, found = await get(wang, f"{url}/api/tickets", params={"q": "13800138000"})
        assert status == 200 and found["tickets"] == []  # the caller's number is no text
        status, found = await get(wang, f"{url}/api/tickets", params={"status": "open"})
        assert status == 200 and [t["id"] for t in found["tickets"]] == [ticket.id]
        assert (await get(wang, f"{url}/api/tickets/999"))[0] == 404
        assert (await get(wang, f"{url}/api/tickets/{ticket.id}/recordings/{recording}.wav"))[
            0
        ] == 200
        assert (await get(wang, f"{url}/api/tickets.csv"))[0] == 403  # operators may not export
        assert (await get(wang, f"{url}/api/admin/audit"))[0] == 403
        async with aiohttp.ClientSession() as anonymous:
            assert (await get(anonymous, f"{url}/api/tickets/{ticket.id}"))[0] == 401
        assert (await get(admin, f"{url}/api/tickets.csv"))[0] == 200
        async with admin.post(f"{url}/api/admin/config/reload") as response:
            assert response.status == 200
        assert hotline.records is not None
        talk = await hotline.records.add_conversation(
            "call-a", "sip:op@127.0.0.1", str(wav(tmp_path / "talk.wav")), 1.0
        )
        played = await get(admin, f"{url}/api/calls/call-a/conversations/{talk}.wav")
        assert played[0] == 200 and played[1][:4] == b"RIFF"

        rows = await audit_rows(admin, url, user="wang")
        seen = [
            (r["action"], r["object_type"], r["object_id"], r["items"], r["outcome"], r["status"])
            for r in reversed(rows)
        ]
        assert seen == [
            ("login", "user", "wang", 0, "allowed", 200),
            ("ticket.read", "ticket", str(ticket.id), 1, "allowed", 200),
            ("ticket.history", "ticket", str(ticket.id), 1, "allowed", 200),
            ("ticket.search", "ticket", "", 0, "allowed", 200),
            ("ticket.search", "ticket", "", 1, "allowed", 200),
            ("ticket.read", "ticket", "999", 0, "failed", 404),
            ("recording.play", "recording", f"{ticket.id}/{recording}", 1, "allowed", 200),
            ("ticket.export", "ticket", "", 0, "refused", 403),
            ("audit.search", "audit", "", 0, "refused", 403),
        ]
        assert {(r["address"], r["role"], r["node"]) for r in rows} == {
            ("127.0.0.1", "operator", "a")
        }
        searches = [r["detail"] for r in reversed(rows) if r["action"] == "ticket.search"]
        assert searches == ["query q=138****8000", f"query status=open; ids {ticket.id}"]
        anonymous_rows = await audit_rows(admin, url, user="", outcome="refused")
        assert any(r["action"] == "ticket.read" and r["status"] == 401 for r in anonymous_rows)
        boss = [
            (r["action"], r["object_id"], r["items"], r["outcome"])
            for r in reversed(await audit_rows(admin, url, user="boss"))
        ]
        assert boss[1:4] == [
            ("ticket.export", "", 1, "allowed"),
            ("config.reload", "", 1, "allowed"),
            ("conversation.play", f"call-a/{talk}", 1, "allowed"),
        ]

        # filters: action prefix, object, address, outcome, time range; pages
        reads = await audit_rows(admin, url, user="wang", action="ticket.")
        assert {r["action"] for r in reads} == {
            "ticket.read",
            "ticket.history",
            "ticket.search",
            "ticket.export",
        }
        on_ticket = await audit_rows(admin, url, object_type="ticket", object_id=str(ticket.id))
        assert {r["action"] for r in on_ticket} == {"ticket.read", "ticket.history"}
        assert await audit_rows(admin, url, address="203.0.113.9") == []
        assert await audit_rows(admin, url, **{"from": "2999-01-01"}) == []
        assert len(await audit_rows(admin, url, **{"to": "2999-01-01"})) >= len(rows)
        status, first = await get(admin, f"{url}/api/admin/audit", params={"limit": "3"})
        assert status == 200 and len(first["entries"]) == 3
        status, second = await get(
            admin,
            f"{url}/api/admin/audit",
            params={"limit": "3", "before": str(first["next_before"])},
        )
        ids = [r["id"] for r in first["entries"] + second["entries"]]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6
        status, bad = await get(admin, f"{url}/api/admin/audit", params={"from": "yesterday"})
        assert status == 400 and "from=" in bad["error"]
    finally:
        await admin.close()
        await wang.close()
    # the searched-for number is masked in every log line (the audit's included)
    assert "13800138000" not in caplog.text
    assert "audit: wang (operator) from 127.0.0.1: ticket.search ticket allowed" in caplog.text


# ------------------------------------------------------------------ thresholds


async def test_reads_over_the_limit_lock_the_account_on_every_node_and_alert(
    start_node: StartNode, store_location: str | Path
) -> None:
    """Two nodes on one store: the reads of both count; the account is locked
    on both; the admin on the other node is alerted; an admin unlocks it."""
    limit = "ticket_reads_per_hour = 5"
    a = await start_node("a", audit=limit, store=store_location)
    b = await start_node("b", audit=limit, store=store_location)
    assert a.tickets is not None
    tickets = [await a.tickets.create(f"call-{n}", f"1380013800{n}") for n in range(4)]
    admin = await hotline_client(b, "admin", name="boss")
    wang_a = await hotline_client(a, "operator", name="wang")
    wang_b = await log_in(base(b), "wang")
    try:
        async with Alerts(admin, base(b)) as alerts:
            for n in range(3):
                status, _ = await get(wang_a, f"{base(a)}/api/tickets/{tickets[n].id}")
                assert status == 200
            status, found = await get(wang_b, f"{base(b)}/api/tickets", params={"limit": "2"})
            assert status == 200 and len(found["tickets"]) == 2  # 5 read: the limit
            status, refused = await get(wang_a, f"{base(a)}/api/tickets/{tickets[3].id}")
            assert status == 423
            assert "ticket_reads_per_hour = 5" in refused["error"], refused
            assert "13800138003" not in json.dumps(refused)  # the ticket was not served
            # its sessions are over on both nodes; its log-in says why
            assert (await get(wang_b, f"{base(b)}/api/tickets/{tickets[0].id}"))[0] == 401
            assert (await get(wang_a, f"{base(a)}/api/me"))[0] == 401
            status, body = await try_log_in(base(b), "wang")
            assert status == 423 and "locked" in body["error"], body
            assert "ticket_reads_per_hour" in body["error"]
            status, body = await try_log_in(base(b), "wang", "a-wrong-password!")
            assert status == 401  # a wrong password is not told the account is locked

            alert = await alerts.wait_for("account_locked", "wang")
            assert "6 tickets read within an hour" in alert["reason"]
        status, locks = await get(admin, f"{base(b)}/api/admin/audit/locks")
        assert [(lock["kind"], lock["subject"]) for lock in locks["locks"]] == [("account", "wang")]
        rows = await audit_rows(admin, base(b), user="wang", action="ticket.")
        assert {r["node"] for r in rows} == {"a", "b"}
        assert (rows[0]["outcome"], rows[0]["status"]) == ("refused", 423)

        # an operator cannot unlock; an admin can, and the count starts again
        wang_c = None
        async with admin.post(
            f"{base(b)}/api/admin/audit/unlock", json={"kind": "account", "subject": "wang"}
        ) as response:
            assert response.status == 200, await response.text()
        wang_c = await log_in(base(a), "wang")
        assert (await get(wang_c, f"{base(a)}/api/tickets/{tickets[3].id}"))[0] == 200
        unlocked = await audit_rows(admin, base(a), action="account.unlock")
        assert [(r["user"], r["object_id"], r["outcome"]) for r in unlocked] == [
            ("boss", "wang", "allowed")
        ]
        await wang_c.close()
    finally:
        for session in (admin, wang_a, wang_b):
            await session.close()


async def test_recordings_and_exports_over_their_limits_lock_the_account(
    start_node: StartNode, tmp_path: Path
) -> None:
    hotline = await start_node("a", audit="recording_plays_per_hour = 2\nexports_per_hour = 1\n")
    url = base(hotline)
    assert hotline.tickets is not None
    ticket = await hotline.tickets.create("call-a", "13800138000")
    first = await hotline.tickets.add_recording(ticket.id, wav(tmp_path / "1.wav"), 0.5, "x")
    second = await hotline.tickets.add_recording(ticket.id, wav(tmp_path / "2.wav"), 0.5, "x")
    boss = await hotline_client(hotline, "admin", name="boss")
    wang = await hotline_client(hotline, "operator", name="wang")
    li = await hotline_client(hotline, "admin", name="li")
    try:
        async with Alerts(boss, url) as alerts:
            for rid in (first, second):
                path = f"{url}/api/tickets/{ticket.id}/recordings/{rid}.wav"
                status, body = await get(wang, path)
                assert status == 200 and body[:4] == b"RIFF"
            status, body = await get(wang, f"{url}/api/tickets/{ticket.id}/recordings/{first}.wav")
            assert status == 423 and "recording_plays_per_hour = 2" in body["error"]
            await alerts.wait_for("account_locked", "wang")

            assert (await get(li, f"{url}/api/tickets.csv"))[0] == 200
            status, body = await get(li, f"{url}/api/tickets.csv")
            assert status == 423 and "exports_per_hour = 1" in body["error"]
            await alerts.wait_for("account_locked", "li")
        assert (await try_log_in(url, "li"))[0] == 423
        status, locks = await get(boss, f"{url}/api/admin/audit/locks")
        assert sorted(lock["subject"] for lock in locks["locks"]) == ["li", "wang"]
        async with wang.post(
            f"{url}/api/admin/audit/unlock", json={"kind": "account", "subject": "wang"}
        ) as response:
            assert response.status == 401  # its session was ended
        for name in ("li", "wang"):
            async with boss.post(
                f"{url}/api/admin/audit/unlock", json={"kind": "account", "subject": name}
            ) as response:
                assert response.status == 200
        assert (await try_log_in(url, "li"))[0] == 200
        async with boss.post(
            f"{url}/api/admin/audit/unlock", json={"kind": "account", "subject": "li"}
        ) as response:
            assert response.status == 404  # not locked any more
    finally:
        for session in (boss, wang, li):
            await session.close()


async def test_password_spraying_locks_the_address_and_alerts(
    start_node: StartNode, store_location: str | Path
) -> None:
    hotline = await start_node(
        "a", audit="login_spray_names = 4\nlogin_spray_window = 600\n", store=store_location
    )
    url = base(hotline)
    admin = await hotline_client(hotline, "admin", name="boss")
    assert hotline.accounts is not None
    await hotline.accounts.add_user("wang", PASSWORD, "operator")
    sprayer = "127.0.0.2"
    try:
        async with Alerts(admin, url) as alerts:
            for name in ("admin", "root", "test"):  # three names: not yet spraying
                assert (await try_log_in(url, name, "123456789012", source=sprayer))[0] == 401
            assert (await try_log_in(url, "wang", source=sprayer))[0] == 200
            assert (await try_log_in(url, "wang", "123456789012", source=sprayer))[0] == 401
            alert = await alerts.wait_for("address_locked", sprayer)
            assert "4 different names" in alert["reason"]
        # the right password from that address is refused now, saying why; others log in
        status, body = await try_log_in(url, "wang", source=sprayer)
        assert status == 423 and "log-ins from 127.0.0.2 are locked" in body["error"], body
        assert (await try_log_in(url, "wang"))[0] == 200
        rows = await audit_rows(admin, url, address=sprayer, action="login", outcome="refused")
        assert sorted({r["object_id"] for r in rows}) == ["admin", "root", "test", "wang"]
        status, locks = await get(admin, f"{url}/api/admin/audit/locks")
        assert [(lock["kind"], lock["subject"]) for lock in locks["locks"]] == [
            ("address", sprayer)
        ]
        async with admin.post(
            f"{url}/api/admin/audit/unlock", json={"kind": "address", "subject": sprayer}
        ) as response:
            assert response.status == 200
        assert (await try_log_in(url, "wang", source=sprayer))[0] == 200
    finally:
        await admin.close()


# --------------------------------------------------------------------- masking


async def test_an_export_for_a_role_without_see_personal_holds_no_whole_number(
    start_node: StartNode,
) -> None:
    hotline = await start_node(
        "a",
        audit='export_roles = ["operator", "admin"]\nsee_personal = ["admin"]\n'
        'trusted_proxies = ["127.0.0.0/8"]\n',
    )
    url = base(hotline)
    assert hotline.tickets is not None
    ticket = await hotline.tickets.create("call-a", "13800138000")
    said = "我叫王芳，电话13912345678，住在天目山路88号，路灯坏了"
    await hotline.tickets.apply_prefill(
        ticket.id,
        {"name": {"value": "王芳"}, "phone": {"value": "13912345678"}},
        said,
        None,
    )
    admin = await hotline_client(hotline, "admin", name="boss")
    wang = await hotline_client(hotline, "operator", name="wang")
    try:
        proxied = {"X-Forwarded-For": "10.9.9.9, 198.51.100.7"}
        status, masked = await get(wang, f"{url}/api/tickets.csv", headers=proxied)
        assert status == 200
        text = masked.decode("utf-8-sig")
        assert WHOLE_NUMBER.search(text) is None, text
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows[0]["caller"] == "138****8000" and rows[0]["phone"] == "139****5678"
        assert rows[0]["transcript"] == "" and "路灯" not in text
        assert rows[0]["name"] == "王芳"

        status, whole = await get(admin, f"{url}/api/tickets.csv")
        full = list(csv.DictReader(io.StringIO(whole.decode("utf-8-sig"))))
        assert full[0]["caller"] == "13800138000" and full[0]["transcript"] == said

        # behind a trusted proxy the client is the last address it forwarded for
        rows_w = await audit_rows(admin, url, user="wang", action="ticket.export")
        assert [(r["address"], r["items"]) for r in rows_w] == [("198.51.100.7", 1)]
    finally:
        await admin.close()
        await wang.close()


# --------------------------------------------------------------------- browser


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_the_audit_page_shows_the_lock_and_the_admin_unlocks_it(
    start_node: StartNode,
    browser: Any,  # noqa: F811
) -> None:
    hotline = await start_node("a", audit="ticket_reads_per_hour = 3")
    url = base(hotline)
    assert hotline.tickets is not None
    ticket = await hotline.tickets.create("call-a", "13800138000")
    await hotline_client(hotline, "admin", name="boss")
    wang = await hotline_client(hotline, "operator", name="wang")
    try:
        for _ in range(3):
            assert (await get(wang, f"{url}/api/tickets/{ticket.id}"))[0] == 200
    finally:
        await wang.close()

    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"{url}/login")
    await page.fill("#name", "boss")
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_url(f"{url}/admin")
    await page.wait_for_selector("#to-audit")

    # wang reads once more: locked, and the admin page's banner says so at once
    wang = await log_in(url, "wang")
    try:
        assert (await get(wang, f"{url}/api/tickets/{ticket.id}"))[0] == 423
    finally:
        await wang.close()
    banner = page.locator("#audit-alert")
    await banner.wait_for(state="visible", timeout=15000)
    assert "wang" in await banner.inner_text()
    colour = await banner.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(255, 244, 229)"  # styled (the page's CSP refuses inline styles)

    await page.click("#to-audit")
    await page.wait_for_url(f"{url}/admin/audit")
    await page.wait_for_selector("#locks tr[data-subject=wang]")
    await page.wait_for_selector("#audit-rows tr")
    log_text = await page.locator("#audit-rows").inner_text()
    assert "ticket.read" in log_text and "拒绝 423" in log_text and "wang" in log_text
    await page.fill("#audit-filter input[name=action]", "ticket.read")
    await page.fill("#audit-filter input[name=user]", "wang")
    await page.click("#audit-filter button[type=submit]")

    async def four_rows() -> bool:
        return int(await page.locator("#audit-rows tr").count()) == 4

    await until(four_rows, 10)
    await shot(page, "admin-audit")

    # the locked operator's log-in page says why
    other = await browser.new_page(viewport={"width": 900, "height": 600})
    await other.goto(f"{url}/login")
    await other.fill("#name", "wang")
    await other.fill("#password", PASSWORD)
    await other.click("#login")
    await other.wait_for_selector("#error:has-text('账号已锁定')")
    await shot(other, "login-locked")

    await page.click("#locks tr[data-subject=wang] button")
    await page.wait_for_selector("#locks-none:not(.hidden)")
    assert "已解锁" in await page.locator("#lock-status").inner_text()
    await other.click("#login")
    await other.wait_for_url(f"{url}/operator")


# ------------------------------------------------------------------------- CLI


def test_the_cli_audits_user_changes_and_unlocks_a_locked_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The only admin locked: `ivr users unlock` on the machine lets them in
    again; users added there are audited as the machine's user."""
    from ivr.audit import AccessGuard
    from ivr.cli import main
    from ivr.config import AuditSettings
    from ivr.tickets.events import TicketEvents

    config = tmp_path / "config.toml"
    config.write_text(
        '[storage]\ndatabase = "ivr.sqlite3"\n\n[queues.general]\n'
        'operators = ["sip:op@127.0.0.1:5999"]\n'
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["--config", str(config), "users", "add", "boss", "--role", "admin",
                 "--password-stdin"]) == 0  # fmt: skip

    async def lock() -> None:
        async with await open_store(tmp_path / "ivr.sqlite3") as db:
            guard = AccessGuard(db, AuditLog(db), TicketEvents(), AuditSettings)
            assert await guard.lock_account("boss", "a test lock")

    asyncio.run(lock())
    assert main(["--config", str(config), "users", "unlock", "boss"]) == 0
    assert "account boss unlocked" in capsys.readouterr().out
    assert main(["--config", str(config), "users", "unlock", "boss"]) == 1
    assert "is not locked" in capsys.readouterr().err
    registry = tmp_path / "elderly.csv"
    registry.write_text("number\n13800138000\n")
    assert main(["--config", str(config), "callers", "import-elderly", str(registry)]) == 0
    assert main(["--config", str(config), "callers", "forget", "13800138000"]) == 0

    async def rows() -> list[tuple[str, str, str, str]]:
        async with await open_store(tmp_path / "ivr.sqlite3") as db:
            found = await AuditLog(db).search(AuditQuery())
            return [(r.action, r.role, r.object_id, r.outcome) for r in reversed(found)]

    assert asyncio.run(rows()) == [
        ("users.add", "cli", "boss", "allowed"),
        ("account.lock", "system", "boss", "allowed"),
        ("account.unlock", "cli", "boss", "allowed"),
        ("account.unlock", "cli", "boss", "failed"),
        ("callers.import_elderly", "cli", str(registry), "allowed"),
        ("callers.forget", "cli", "138****8000", "allowed"),
    ]
