"""A node that stops heartbeating is taken over by one survivor (SQLite and a
real PostgreSQL server): its open calls end as node_lost, callers past the
greeting are queued for a callback with their ticket, its callers leave the
line, its operator's ring is freed, its callback dial is taken back."""

from __future__ import annotations

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
from tests.conftest import StartHotline
from tests.peers import free_udp_port
from tests.test_callbacks_live import callbacks_config

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

    assert await c.line.line() == []
    assert (await c.line.operators())["sip:op1@x"].state is OperatorState.FREE
    assert [n.state for n in await c.roster.nodes()] == ["lost", "up", "up"]


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
