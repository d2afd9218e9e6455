"""A node that stops heartbeating is taken over by one survivor (SQLite and a
real PostgreSQL server): its open calls end as node_lost, callers past the
greeting are queued for a callback with their ticket, its callers leave the
line, its operator's ring is freed, its callback dial is taken back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.call_records import CallRecord, CallRecordStore
from ivr.callbacks import CallbackPolicy, CallbackQueue
from ivr.callbacks.model import CallbackReason, CallbackState
from ivr.lost_nodes import LostNodeWatch
from ivr.node_roster import NodeRoster
from ivr.operators import Operator, OperatorState, Queue
from ivr.shared_line import SharedLine
from ivr.store import Database, open_store
from ivr.tickets import TicketStore
from ivr.trial_call import place_call
from tests.conftest import StartHotline, trial
from tests.peers import free_udp_port
from tests.test_callbacks_live import callbacks_config

LOG = logging.getLogger("test.lost_nodes")
NOON = 1_796_450_400.0  # any time: these callbacks keep no quiet hours


@dataclass
class Clock:
    now: float = NOON

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    db: Database
    roster: NodeRoster
    line: SharedLine
    callbacks: CallbackQueue


def policy() -> CallbackPolicy:
    return CallbackPolicy(retry_delays=(0.0, 60.0), quiet_hours=None, timezone="UTC")


@pytest.fixture
async def nodes(store_location: str | Path) -> AsyncIterator[tuple[Node, Node, Node, Clock]]:
    clock = Clock()
    made = []
    for name in ("node-a", "node-b", "node-c"):
        db = await open_store(store_location)
        roster = NodeRoster(db, name, clock=clock, timeout=5.0)
        await roster.join()
        callbacks = CallbackQueue(db, policy(), node=name)
        made.append(Node(db, roster, SharedLine(db, roster), callbacks))
    yield made[0], made[1], made[2], clock
    for node in made:
        await node.db.close()


async def test_one_survivor_takes_a_lost_node_over(
    nodes: tuple[Node, Node, Node, Clock],
) -> None:
    a, b, c, clock = nodes
    records = CallRecordStore(a.db)
    talking = CallRecord(
        call_id="past-greeting",
        caller="13812345678",
        dialled="12345",
        started_at=NOON - 30,
        answered_at=NOON - 29,
        path=["welcome", "main", "operator"],
        digits="0",
        node="node-a",
    )
    greeting = CallRecord(
        call_id="at-greeting",
        caller="13900000000",
        dialled="12345",
        started_at=NOON - 2,
        answered_at=NOON - 1,
        path=["welcome"],
        node="node-a",
    )
    elsewhere = CallRecord(
        call_id="on-b", caller="13700000000", dialled="12345", started_at=NOON - 5, node="node-b"
    )
    for record in (talking, greeting, elsewhere):
        await records.start(record)
    ticket = await TicketStore(a.db).create("past-greeting", "13812345678")
    await a.line.add_operators(["sip:op1@x"])
    queue = Queue("general", [Operator("sip:op1@x", "general")], max_waiting=10, max_wait=60)
    await a.line.join("general", "past-greeting", "13812345678", None, priority=False)
    assert await a.line.claim(queue, "past-greeting") is not None  # ringing op1 for A
    await b.callbacks.request(
        "13600000000", call_id="older", reason=CallbackReason.ABANDONED, now=NOON - 60
    )
    (dialling,) = await a.callbacks.claim_due(now=NOON - 50, free_operators=1)

    woken: list[str] = []
    watch_b = LostNodeWatch(
        b.db, b.roster, b.line, lambda: b.callbacks, on_callbacks=lambda: woken.append("b")
    )
    watch_c = LostNodeWatch(c.db, c.roster, c.line, lambda: c.callbacks)
    assert await watch_b.sweep() == []  # everyone is alive

    clock.now += 6  # node A is killed: no more heartbeats; B and C beat on
    await b.roster.beat()
    await c.roster.beat()
    taken = await watch_b.sweep() + await watch_c.sweep()
    assert [(t.node, t.calls_ended, t.callbacks_queued, t.callbacks_recovered) for t in taken] == [
        ("node-a", 2, 1, 1)
    ]
    assert woken == ["b"]

    for call_id in ("past-greeting", "at-greeting"):
        ended = await records.get(call_id)
        assert ended is not None and ended.end_reason == "node_lost" and ended.ended_at is not None
    still = await records.get("on-b")
    assert still is not None and still.ended_at is None

    callback = await c.callbacks.open_for("13812345678")
    assert callback is not None and callback.ticket_id == ticket.id
    assert callback.reason is CallbackReason.DROPPED and callback.state is CallbackState.PENDING
    assert await c.callbacks.open_for("13900000000") is None  # hung up at the greeting
    back = await c.callbacks.get(dialling.id)
    assert back is not None and back.state is CallbackState.PENDING
    assert (await c.callbacks.events(dialling.id))[-1].detail == "taken back from lost node node-a"

    assert await c.line.line() == []
    assert (await c.line.operators())["sip:op1@x"].state is OperatorState.FREE
    assert [n.state for n in await c.roster.nodes()] == ["lost", "up", "up"]


async def test_a_node_cut_off_from_the_store_comes_back_and_keeps_its_calls(
    nodes: tuple[Node, Node, Node, Clock],
) -> None:
    """Split brain: A only lost the store for a while; B took it for lost and
    queued a callback for A's caller. A's next heartbeat finds it was taken
    over: its call is in progress again and the callback is cancelled, not
    dialled to a caller who is still on the line."""
    a, b, c, clock = nodes
    records = CallRecordStore(a.db)
    await records.start(
        CallRecord(
            call_id="still-talking",
            caller="13812345678",
            dialled="12345",
            started_at=NOON - 30,
            answered_at=NOON - 29,
            path=["welcome", "main", "operator"],
            digits="0",
            node="node-a",
        )
    )
    watch_a = LostNodeWatch(a.db, a.roster, a.line, lambda: a.callbacks)

    async def back() -> None:
        await watch_a.back_from_lost(["still-talking"])

    a.roster.on_found_lost = back
    watch_b = LostNodeWatch(b.db, b.roster, b.line, lambda: b.callbacks)
    clock.now += 6  # A cannot reach the store; B and C can
    await b.roster.beat()
    await c.roster.beat()
    (taken,) = await watch_b.sweep()
    assert (taken.node, taken.callbacks_queued) == ("node-a", 1)
    queued = await b.callbacks.open_for("13812345678")
    assert queued is not None and queued.state is CallbackState.PENDING

    await a.roster.beat()  # A reaches the store again
    record = await records.get("still-talking")
    assert record is not None and record.ended_at is None and record.end_reason is None
    cancelled = await b.callbacks.get(queued.id)
    assert cancelled is not None and cancelled.state is CallbackState.CANCELLED
    assert await b.callbacks.open_for("13812345678") is None
    states = {n.node_id: n.state for n in await b.roster.nodes()}
    assert states["node-a"] == "up"
    assert await watch_b.sweep() == []  # A is alive again: nobody takes it over twice


async def test_a_node_alone_calls_back_after_a_kill_the_callers_it_held(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """One machine, killed mid-call (its row still says up): at the next start
    it does what a survivor would have done for the call it held."""
    db = await open_store(tmp_path / "ivr.sqlite3")  # the file write_config names
    try:
        await db.execute(
            "INSERT INTO nodes (node_id, started_at, heartbeat_at, state) VALUES (?, ?, ?, 'up')",
            ("solo", NOON - 100, NOON - 10),
        )
        await CallRecordStore(db).start(
            CallRecord(
                call_id="held-when-killed",
                caller="13812345678",
                dialled="12345",
                started_at=NOON - 40,
                answered_at=NOON - 39,
                path=["welcome", "main"],
                digits="1",
                node="solo",
            )
        )
        ticket = await TicketStore(db).create("held-when-killed", "13812345678")
    finally:
        await db.close()
    hotline = await start_hotline(
        ["sip:op@127.0.0.1:5999"],
        callbacks=callbacks_config(free_udp_port(), retry="[60]"),  # not dialled in this test
        extra='[node]\nid = "solo"\n',
    )
    assert hotline.records is not None and hotline.callback_queue is not None
    record = await hotline.records.get("held-when-killed")
    assert record is not None and record.end_reason == "node_lost"
    callback = await hotline.callback_queue.open_for("13812345678")
    assert callback is not None and callback.ticket_id == ticket.id
    assert callback.reason is CallbackReason.DROPPED


async def test_a_running_hotline_taken_for_lost_keeps_its_caller_and_cancels_the_callback(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real hotline holds a real caller in the queue. Another node ("node-b",
    its clock 10 s ahead: to it the hotline's heartbeats look 10 s old, as when
    the hotline is cut off from the store) takes the hotline over: the call is
    marked node_lost and a callback is queued. The hotline's next heartbeat
    finds it was taken for lost: the call is in progress again, the callback
    is cancelled before anyone dials it, the caller stays on the line, and the
    call ends as the caller ends it."""
    hotline = await start_hotline(
        ["sip:op@127.0.0.1:5999"],  # nobody answers there: the caller waits in the queue
        callbacks=callbacks_config(free_udp_port(), retry="[60]"),
        extra='[node]\nid = "node-a"\n',
    )
    port = hotline.endpoint.port
    call = asyncio.ensure_future(
        place_call(
            trial(port, digits="0", digit_delay=2.0, duration=14.0, caller="13812345678"), LOG
        )
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not any("operator" in c.record.path for c in hotline.calls.values()):
        assert loop.time() < deadline, "the caller never reached the queue"
        await asyncio.sleep(0.2)
    (call_id,) = list(hotline.calls)
    assert hotline.call_progress is not None
    await hotline.call_progress.write_changed()  # its path is in the store

    db = await open_store(tmp_path / "ivr.sqlite3")
    try:
        ahead = Clock(time.time() + 10)
        roster_b = NodeRoster(db, "node-b", clock=ahead, timeout=5.0)
        await roster_b.join()
        queue_b = CallbackQueue(db, policy(), node="node-b")
        watch_b = LostNodeWatch(db, roster_b, SharedLine(db, roster_b), lambda: queue_b)
        taken = await watch_b.sweep()
        assert [(t.node, t.calls_ended, t.callbacks_queued) for t in taken] == [("node-a", 1, 1)]
        queued = await queue_b.open_for("13812345678")
        assert queued is not None and queued.state is CallbackState.PENDING

        deadline = loop.time() + 5  # the hotline's next heartbeat finds it
        while (await queue_b.get(queued.id)).state is not CallbackState.CANCELLED:  # type: ignore[union-attr]
            assert loop.time() < deadline, "the callback was not cancelled"
            await asyncio.sleep(0.2)
        record = await CallRecordStore(db).get(call_id)
        assert record is not None and record.ended_at is None and record.end_reason is None
        assert call_id in hotline.calls and not call.done()  # the caller is still on the line
        assert {n.node_id: n.state for n in await roster_b.nodes()}["node-a"] == "up"

        result = await call
        assert result.ended_by == "caller" and result.seconds >= 13.0, result
        deadline = loop.time() + 10
        while True:
            record = await CallRecordStore(db).get(call_id)
            if record is not None and record.ended_at is not None:
                break
            assert loop.time() < deadline, "the call's end was not written"
            await asyncio.sleep(0.2)
        assert record.end_reason == "caller_hangup", record
    finally:
        await db.close()
    assert "taken for lost by another node while cut off from the store" in caplog.text
