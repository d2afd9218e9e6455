"""The store lost while the node runs (issue 12 item 10), with the real parts:
a hotline on PostgreSQL, a sipp operator and our trial callers. A call is
bridged; PostgreSQL is stopped at once (pg_ctl stop -m immediate); the bridged
call goes on to its end; a new call is answered, goes through the menu and is
bridged to the operator by this node's desk alone; /api/health says degraded
with the store unreachable; PostgreSQL comes back; health says ok, and the
call records of both calls (and the ticket of the second) are in the store."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr.call_records import CallRecord
from ivr.config import load_settings
from ivr.logs import setup_logging
from ivr.server import Hotline
from ivr.trial_call import TrialResult, place_call
from tests.conftest import trial, write_config
from tests.peers import SippUas, free_udp_port
from tests.postgres_server import PostgresServer, PostgresUnavailable

LOG = logging.getLogger("test.store_lost")
NODE = "node-store-lost"

pytestmark = pytest.mark.peers


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own: it is stopped and started again
    (the session's shared server is left alone)."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done = check()
        if asyncio.iscoroutine(done):
            done = await done
        if done:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not in {timeout:.0f} s: {what}")
        await asyncio.sleep(0.2)


async def health(hotline: Hotline) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{hotline.api.port}/api/health") as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


def bridged_calls(hotline: Hotline) -> list[str]:
    return [cid for cid, call in hotline.calls.items() if call.record.outcome == "bridged"]


async def test_store_lost_while_running(
    own_postgres: PostgresServer,
    tmp_path: Path,
    prompt_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ivr")
    url = own_postgres.new_database("store_lost")
    operator = SippUas(tmp_path / "operator", free_udp_port(), free_udp_port(even=True))
    await operator.start()
    path = write_config(
        tmp_path,
        operators=[operator.uri],
        prompt_cache=prompt_cache,
        extra=f'\n[node]\nid = "{NODE}"\n',
    )
    text = path.read_text()
    text, n = re.subn(r'(?m)^database = ".*"$', f'url = "{url}"', text)
    assert n == 1
    path.write_text(text)
    log = setup_logging("DEBUG", "text")
    log.propagate = True  # caplog sees the IVR's lines
    hotline = Hotline(load_settings(path), log)
    try:
        await hotline.start()
        await run_the_outage(hotline, own_postgres, operator, caplog)
    finally:
        await hotline.stop(drain_timeout=2.0)
        await operator.stop()
        logging.getLogger("ivr").handlers.clear()


async def run_the_outage(
    hotline: Hotline,
    server: PostgresServer,
    operator: SippUas,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = hotline.endpoint.port
    assert (await health(hotline))["status"] == "ok"

    # 1. a call is bridged to the operator (welcome, main menu, 0), the store up
    first = asyncio.ensure_future(
        place_call(trial(port, digits="0", digit_delay=3.0, duration=22.0), LOG)
    )
    await until(lambda: bridged_calls(hotline), "the first call bridged", timeout=20.0)
    (first_id,) = bridged_calls(hotline)
    assert await hotline.records.get(first_id) is not None  # type: ignore[union-attr]

    # 2. PostgreSQL goes away at once
    await asyncio.to_thread(server.stop_server, "immediate")
    await until(
        lambda: hotline.store_watch is not None and not hotline.store_watch.up,
        "the store seen lost",
        timeout=10.0,
    )
    during = await health(hotline)
    assert during["status"] == "degraded", during
    assert during["node"] == NODE and during["state"] == "up"
    assert str(during["store"]).startswith("unreachable since "), during
    assert during["desk"] == "deciding alone", during

    # 3. the bridged call goes on to its end (the caller hangs up at 22 s)
    result: TrialResult = await first
    assert result.status == 200 and result.ended_by == "caller", result
    assert result.seconds >= 21.0, result
    assert first_id not in hotline.calls

    # 4. a new call: answered, the menu, put through to the operator by this node alone
    second = asyncio.ensure_future(
        place_call(trial(port, digits="0", digit_delay=3.0, duration=18.0), LOG)
    )
    await until(lambda: bridged_calls(hotline), "the second call bridged", timeout=20.0)
    (second_id,) = bridged_calls(hotline)
    path = hotline.calls[second_id].record.path
    assert path[:2] == ["welcome", "main"] and "operator" in path, path
    assert (await health(hotline))["status"] == "degraded"
    result = await second
    assert result.status == 200 and result.ended_by == "caller" and result.seconds >= 17.0, result
    assert hotline.pending_writes is not None and len(hotline.pending_writes) >= 2

    # 5. PostgreSQL is back: health ok, everything kept is written
    await asyncio.to_thread(server.start_again)
    await until(
        lambda: hotline.store_watch is not None and hotline.store_watch.up,
        "the store seen back",
        timeout=15.0,
    )
    after = await health(hotline)
    assert after["status"] == "ok" and after["store"] == "ok", after
    await until(lambda: len(hotline.pending_writes or []) == 0, "kept writes written")
    await until(lambda: hotline.desk.alone_since is None, "the desk back on the shared line")
    shared = hotline.desk.shared
    assert shared is not None  # the store has the operator free again, and no one in line
    assert (await shared.operators())[operator.uri].state.value == "free"
    assert await shared.line() == []

    records = hotline.records
    assert records is not None
    done: dict[str, CallRecord] = {}

    async def both_written() -> bool:
        for call_id in (first_id, second_id):
            record = await records.get(call_id)
            if record is not None and record.ended_at is not None:
                done[call_id] = record
        return len(done) == 2

    await until(both_written, "both call records in the store")
    for record in done.values():
        assert record.outcome == "bridged" and record.operator == operator.uri, record
        assert record.end_reason == "caller_hangup" and record.node == NODE, record
    assert hotline.tickets is not None
    assert await hotline.tickets.for_call(second_id)  # its ticket, made in memory, is stored

    said = caplog.text
    for line in (
        "store lost at",
        "decides alone",
        f"call record {second_id} kept in memory",
        "store back at",
        "shared line reachable again",
        f"call record {second_id} written to the store",
    ):
        assert line in said, line
    assert said.count("decides alone") == 1  # said once, not for every call or claim


async def test_kept_writes_are_bounded_written_in_order_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PendingWrites over a real store: kept while it is lost (in order, up
    to the limit; one more is logged with its content), written when it is back."""
    from ivr.store import open_store
    from ivr.store_watch import PendingWrites, StoreWatch

    caplog.set_level(logging.INFO, logger="test.kept")
    log = logging.getLogger("test.kept")
    async with await open_store(tmp_path / "ivr.sqlite3") as db:
        await db.execute("CREATE TABLE seen (n INTEGER)")
        watch = StoreWatch(db, log=log)
        pending = PendingWrites(watch, log=log, limit=2)
        watch.lost("taken away by the test")
        for n in (1, 2, 3):
            written = await pending.write(
                f"row {n}",
                f"n={n}, caller 13800138000",
                lambda n=n: db.execute("INSERT INTO seen (n) VALUES (?)", (n,)),
            )
            assert not written
        assert len(pending) == 2 and pending.dropped == 1
        assert "row 3 NOT kept, its content: n=3, caller 138****8000" in caplog.text
        assert await watch.probe() and watch.up  # the store answers: back
        assert await pending.flush() == 2
        assert [r[0] for r in await db.fetch_all("SELECT n FROM seen")] == [1, 2]
        assert "row 2 written to the store" in caplog.text


async def test_a_ticket_kept_in_memory_is_written_whole(tmp_path: Path) -> None:
    """UnwrittenTicket: what the intake did while the store was away becomes
    one ticket in the store, with its recordings, transcripts, fields and notes;
    a write cut short goes on where it stopped (nothing twice)."""
    from ivr.store import open_store
    from ivr.tickets import TicketStore
    from ivr.tickets.unwritten import UnwrittenTicket
    from ivr.tickets.work_orders import WorkOrderOutbox

    async with await open_store(tmp_path / "ivr.sqlite3") as db:
        store = TicketStore(db)
        outbox = WorkOrderOutbox(db, url="", timeout=1.0, retry_delays=[1.0], log=LOG)
        memory = UnwrittenTicket("call-1", "13800138000", None)
        await memory.create("call-1", "13800138000")
        field = {"value": "西湖区", "evidence": [], "source": "speech"}
        rid = await memory.add_recording(0, tmp_path / "r1.wav", 3.5, "silence")
        await memory.set_recording_transcript(rid, "我在西湖区")
        await memory.apply_prefill(0, {"district": field}, "我在西湖区", None)
        await memory.add_note(0, "first note")
        await memory.add_note(0, "second note")
        assert memory.as_ticket().summary().startswith("西湖区")
        memory.notes.append(object())  # type: ignore[arg-type]  # not JSON: cuts the write short
        with pytest.raises(TypeError):
            await memory.write_to(store, outbox)
        assert len(memory.notes) == 1  # the two notes before it were written, once
        memory.notes.pop()
        ticket_id = await memory.write_to(store, outbox)
        assert len(await store.for_call("call-1")) == 1
        ticket = await store.get(ticket_id)
        assert ticket is not None
        assert ticket.value("district") == "西湖区" and ticket.transcript == "我在西湖区"
        assert ticket.notes == ["first note", "second note"]
        assert [(r.seconds, r.transcript) for r in ticket.recordings] == [(3.5, "我在西湖区")]
