"""Tickets in a real SQLite file, the work-order webhook against a real local
HTTP server (down, slow, then up), and the JSON API / event stream over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ivr.store import Database, open_store
from ivr.tickets import TicketError, TicketStore
from ivr.tickets.events import TicketEvents
from ivr.tickets.work_orders import WorkOrderOutbox
from ivr.web.api import HotlineApi
from ivr.web.auth import Accounts
from tests.web_client import PASSWORD, log_in

LOG = logging.getLogger("test")

PREFILL = {
    "name": {
        "value": "王芳",
        "evidence": [{"start": 2, "end": 4, "text": "王芳"}],
        "source": "speech",
    },
    "category": {
        "value": "供水",
        "evidence": [{"start": 9, "end": 11, "text": "停水"}],
        "source": "speech",
    },
}


@pytest.fixture
async def db(store_location: str | Path) -> Any:
    database = await open_store(store_location)
    yield database
    await database.close()


async def test_prefill_then_operator_edit_keeps_history(db: Database) -> None:
    store = TicketStore(db)
    ticket = await store.create("call-1", "13800138000")
    await store.apply_prefill(ticket.id, PREFILL, "我叫王芳，家里停水了", None)
    edited = await store.edit(ticket.id, {"name": "王方", "status": "in_progress"}, who="op7")
    assert edited.value("name") == "王方" and edited.status == "in_progress"
    assert edited.value("category") == "供水"
    assert edited.fields["category"]["evidence"][0]["text"] == "停水"
    # a later prefill does not overwrite the operator's correction
    again = await store.apply_prefill(ticket.id, PREFILL, "我叫王芳，家里停水了。", None)
    assert again.value("name") == "王方"
    history = await store.history(ticket.id)
    whats = [(h.who, h.what, h.old_value, h.new_value) for h in history]
    assert ("ivr", "field:name", None, "王芳") in whats
    assert ("op7", "field:name", "王芳", "王方") in whats
    assert ("op7", "status", "open", "in_progress") in whats
    with pytest.raises(TicketError, match="status 'gone'"):
        await store.edit(ticket.id, {"status": "gone"}, who="op7")
    with pytest.raises(TicketError, match="ticket 999 does not exist"):
        await store.edit(999, {"name": "x"}, who="op7")


async def test_recordings_are_linked_and_purged_after_retention(
    db: Database, tmp_path: Path
) -> None:
    from ivr.recordings import purge_recordings

    store = TicketStore(db)
    ticket = await store.create("call-2", "010")
    wav = tmp_path / "r1.wav"
    wav.write_bytes(b"RIFF....")
    rec = await store.add_recording(ticket.id, wav, 3.5, "silence")
    await store.set_recording_transcript(rec, "停水了")
    got = await store.get(ticket.id)
    assert got is not None and got.recordings[0].transcript == "停水了"
    assert await purge_recordings(store, 1, LOG) == 0  # younger than a day: kept
    await db.execute("UPDATE ticket_recordings SET created_at = created_at - 2 * 86400")
    assert await purge_recordings(store, 1, LOG) == 1
    assert not wav.exists()
    got = await store.get(ticket.id)
    assert got is not None and got.recordings[0].path == ""
    assert got.recordings[0].transcript == "停水了"  # the words stay


async def test_conversation_recordings_are_purged_after_retention(
    db: Database, tmp_path: Path
) -> None:
    from ivr.call_records import CallRecordStore
    from ivr.recordings import purge_conversations

    records = CallRecordStore(db)
    wav = tmp_path / "calls" / "c1.wav"
    wav.parent.mkdir()
    wav.write_bytes(b"RIFF....")
    rid = await records.add_conversation("call-9", "sip:op@x", str(wav), time.time())
    await records.conversation_done(rid, 42.5)
    assert await purge_conversations(records, 30, LOG) == 0  # younger than 30 days: kept
    await db.execute("UPDATE conversation_recordings SET started_at = started_at - 31 * 86400")
    assert await purge_conversations(records, 30, LOG) == 1
    assert not wav.exists()
    (row,) = await records.conversations_of("call-9")
    assert row["path"] == "" and row["seconds"] == 42.5  # that it happened stays


class Webhook:
    """A local work-order system: answers 503, then hangs, then takes orders."""

    def __init__(self) -> None:
        self.behaviour = "down"
        self.received: list[dict[str, Any]] = []
        self.attempts = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.behaviour == "down":
            return web.Response(status=503, text="maintenance")
        if self.behaviour == "slow":
            await asyncio.sleep(5)
        self.received.append(await request.json())
        return web.json_response({"ok": True})


@pytest.fixture
async def webhook() -> Any:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/orders", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield hook, f"http://127.0.0.1:{port}/orders"
    await runner.cleanup()


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_webhook_down_then_slow_then_up_loses_nothing(
    db: Database, webhook: tuple[Webhook, str], caplog: pytest.LogCaptureFixture
) -> None:
    hook, url = webhook
    store = TicketStore(db)
    ticket = await store.create("call-3", "13800138000")
    outbox = WorkOrderOutbox(db, url=url, timeout=0.5, retry_delays=(0.2, 0.2), log=LOG)
    outbox.start()
    await outbox.post(ticket.id, {"ticket_id": ticket.id, "emergency": "fire"})

    async def failed_twice() -> bool:
        (entry,) = await outbox.entries(ticket.id)
        return entry.attempts >= 2

    await wait_for(failed_twice)
    (entry,) = await outbox.entries(ticket.id)
    assert entry.delivered_at is None and entry.last_error == "HTTP 503 Service Unavailable"
    assert "not delivered" in caplog.text and "HTTP 503" in caplog.text

    hook.behaviour = "slow"
    attempts = entry.attempts

    async def timed_out() -> bool:
        (e,) = await outbox.entries(ticket.id)
        return e.attempts > attempts and e.last_error is not None and "timed out" in e.last_error

    await wait_for(timed_out)
    await outbox.stop()  # the IVR stops with the order still undelivered

    hook.behaviour = "up"
    restarted = WorkOrderOutbox(db, url=url, timeout=2.0, retry_delays=(0.2,), log=LOG)
    restarted.start()

    async def delivered() -> bool:
        (e,) = await restarted.entries(ticket.id)
        return e.delivered_at is not None

    await wait_for(delivered)
    await restarted.stop()
    assert hook.received == [{"ticket_id": ticket.id, "emergency": "fire"}]


async def test_two_nodes_post_each_work_order_once(
    store_location: str | Path, webhook: tuple[Webhook, str]
) -> None:
    hook, url = webhook
    hook.behaviour = "up"
    one, two = await open_store(store_location), await open_store(store_location)
    try:
        store = TicketStore(one)
        a = WorkOrderOutbox(one, url=url, timeout=1, retry_delays=(0.2,), log=LOG, node="a")
        b = WorkOrderOutbox(two, url=url, timeout=1, retry_delays=(0.2,), log=LOG, node="b")
        ids = []
        for n in range(12):
            ticket = await store.create(f"call-{n}", "13800138000")
            ids.append(ticket.id)
            await (a if n % 2 else b).post(ticket.id, {"ticket_id": ticket.id})
        a.start()
        b.start()

        async def all_in() -> bool:
            return len(hook.received) >= 12

        await wait_for(all_in)
        await asyncio.sleep(0.5)  # time for a second post, were there one
        await a.stop()
        await b.stop()
        assert sorted(r["ticket_id"] for r in hook.received) == ids  # each once
    finally:
        await one.close()
        await two.close()


async def test_a_work_order_leased_by_a_dead_node_is_posted_by_another(
    db: Database, webhook: tuple[Webhook, str]
) -> None:
    hook, url = webhook
    hook.behaviour = "up"
    ticket = await TicketStore(db).create("call-9", "13800138000")
    dead = WorkOrderOutbox(db, url=url, timeout=1, retry_delays=(0.2,), log=LOG, node="dead")
    await dead.post(ticket.id, {"ticket_id": ticket.id})
    # the node leased it for its post, then died (no stop: its lease stays)
    await db.execute(
        "UPDATE work_order_outbox SET lease_node = 'dead', lease_until = ?", (time.time() + 1.5,)
    )
    alive = WorkOrderOutbox(db, url=url, timeout=1, retry_delays=(0.2,), log=LOG, node="alive")
    alive.start()
    await asyncio.sleep(0.8)
    assert hook.received == []  # the lease holds

    async def posted() -> bool:
        return len(hook.received) == 1

    await wait_for(posted)
    await alive.stop()
    assert hook.received == [{"ticket_id": ticket.id}]


async def test_api_serves_tickets_and_streams_events(db: Database) -> None:
    store = TicketStore(db)
    events = TicketEvents()
    api = HotlineApi(tickets=lambda: store, events=events, status=lambda: {"calls": 0}, log=LOG)
    accounts = Accounts(db)
    api.use_accounts(accounts)
    await accounts.add_user("op1", PASSWORD, "operator")
    await api.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{api.port}"
    try:
        ticket = await store.create("call-4", "13800138000")
        async with aiohttp.ClientSession() as anonymous:
            for path in (f"/api/tickets/{ticket.id}", "/api/events", "/api/calls/call-4/tickets"):
                async with anonymous.get(base + path) as r:
                    assert r.status == 401, path  # the tickets hold callers' personal data
            async with anonymous.get(f"{base}/api/health") as r:
                assert r.status == 200
        async with await log_in(base, "op1") as http:
            async with http.get(f"{base}/api/events") as stream:
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                assert (await stream.content.readline()).startswith(b": connected")
                await stream.content.readline()
                updated = await store.apply_prefill(ticket.id, PREFILL, "我叫王芳", None)
                events.publish("prefilled", updated.to_json())
                lines = [await stream.content.readline() for _ in range(3)]
                assert lines[1] == b"event: prefilled\n"
                body = json.loads(lines[2].decode().removeprefix("data: "))
                assert body["id"] == ticket.id and body["fields"]["name"]["value"] == "王芳"
            async with http.get(f"{base}/api/tickets/{ticket.id}") as r:
                assert r.status == 200
                got = await r.json()
                assert got["caller"] == "13800138000" and got["transcript"] == "我叫王芳"
            async with http.get(f"{base}/api/tickets/{ticket.id}/history") as r:
                whats = [h["what"] for h in (await r.json())["history"]]
                assert whats[0] == "created" and "field:name" in whats
            async with http.get(f"{base}/api/tickets/424242") as r:
                assert r.status == 404 and "no ticket 424242" in (await r.json())["error"]
            async with http.get(f"{base}/api/tickets/..%2F..%2Fetc") as r:
                assert r.status == 400 and "is not a number" in (await r.json())["error"]
            async with http.get(f"{base}/api/calls/call-4/tickets") as r:
                assert [t["id"] for t in (await r.json())["tickets"]] == [ticket.id]
    finally:
        await api.stop()
