"""The one waiting line of every node (ivr.shared_line) on SQLite and on a
real PostgreSQL server: two nodes, each with its own connection to the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.node_roster import NodeRoster
from ivr.operators import Operator, OperatorState, Queue
from ivr.shared_line import SharedLine
from ivr.store import Database, open_store


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    db: Database
    roster: NodeRoster
    line: SharedLine


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def nodes(store_location: str | Path, clock: Clock) -> AsyncIterator[tuple[Node, Node]]:
    made: list[Node] = []
    for name in ("node-a", "node-b"):
        db = await open_store(store_location)
        roster = NodeRoster(db, name, clock=clock, timeout=5.0)
        await roster.join()
        made.append(Node(db, roster, SharedLine(db, roster)))
    await made[0].line.add_operators(["sip:op1@x", "sip:op2@x", "sip:op3@x", "sip:yue@x"])
    yield made[0], made[1]
    for node in made:
        await node.db.close()


def queue(*uris: str, skills: dict[str, frozenset[str]] | None = None) -> Queue:
    skills = skills or {}
    return Queue(
        name="general",
        operators=[
            Operator(uri=u, queue="general", skills=skills.get(u, frozenset())) for u in uris
        ],
        max_waiting=100,
        max_wait=60,
    )


async def test_the_longest_waiting_caller_on_any_node_gets_the_next_operator(
    nodes: tuple[Node, Node], clock: Clock
) -> None:
    a, b = nodes
    q = queue("sip:op1@x")
    await a.line.join("general", "call-a1", "13800000001", None, priority=False)
    clock.now += 1
    await b.line.join("general", "call-b1", "13800000002", None, priority=False)
    assert [e.call_id for e in await b.line.line()] == ["call-a1", "call-b1"]
    assert await b.line.waiting("general") == 2

    assert await b.line.claim(q, "call-b1") is None  # a caller on node A waited longer
    got = await a.line.claim(q, "call-a1")
    assert got is not None and got.operator == "sip:op1@x"
    states = await b.line.operators()
    assert states["sip:op1@x"].state is OperatorState.RINGING
    assert states["sip:op1@x"].node == "node-a" and states["sip:op1@x"].call_id == "call-a1"

    await a.line.rang("call-a1", "sip:op1@x", answered=True)
    await a.line.leave("call-a1")
    assert await b.line.claim(q, "call-b1") is None  # talking
    await a.line.talked("sip:op1@x", wrap_up=0)
    got = await b.line.claim(q, "call-b1")
    assert got is not None and got.operator == "sip:op1@x"
    assert (await a.line.operators())["sip:op1@x"].calls_taken == 1


async def test_a_caller_called_back_keeps_an_earlier_place(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    await a.line.join("general", "new", "1", None, priority=False)
    await b.line.join("general", "back", "2", None, priority=True)
    await a.line.join("general", "newer", "3", None, priority=False)
    assert [e.call_id for e in await a.line.line()] == ["back", "new", "newer"]


async def test_one_operator_is_never_rung_by_two_nodes_under_50_callers(
    nodes: tuple[Node, Node], store_location: str | Path, clock: Clock
) -> None:
    a, b = nodes
    more = []  # five nodes in all, each with its own connection to the store
    for name in ("node-c", "node-d", "node-e"):
        db = await open_store(store_location)
        roster = NodeRoster(db, name, clock=clock, timeout=5.0)
        await roster.join()
        more.append(Node(db, roster, SharedLine(db, roster)))
    every = [a, b, *more]
    try:
        q = queue("sip:op1@x", "sip:op2@x", "sip:op3@x")
        callers = [(every[n % len(every)], f"call-{n:02d}") for n in range(50)]
        for node, call_id in callers:
            await node.line.join("general", call_id, call_id, None, priority=False)
        won: list[tuple[str, str]] = []
        for _ in range(3):  # every caller asks, on every node at once, three times over
            claims = await asyncio.gather(*(node.line.claim(q, cid) for node, cid in callers))
            won += [(cid, c.operator) for (_, cid), c in zip(callers, claims, strict=True) if c]
        assert len(won) == 3 and len({op for _, op in won}) == 3  # each rung once, no more
        states = await a.line.operators()
        ringing = {uri: s.call_id for uri, s in states.items() if s.state is OperatorState.RINGING}
        assert set(ringing) == {"sip:op1@x", "sip:op2@x", "sip:op3@x"}
        assert sorted(ringing.values()) == ["call-00", "call-01", "call-02"]  # the line's head

        # then rings end unanswered while every caller keeps asking: whoever holds
        # an operator holds it alone, whatever the order the nodes' statements run in
        for cid, op in won:
            await every[int(cid[-2:]) % len(every)].line.rang(cid, op, answered=False)
        held: dict[str, str] = {}
        rings = 0

        async def caller(node: Node, call_id: str) -> None:
            nonlocal rings
            for _ in range(6):
                got = await node.line.claim(q, call_id)
                if got is None:
                    await asyncio.sleep(0.002)
                    continue
                assert got.operator not in held, f"{got.operator} rung for {held} and {call_id}"
                held[got.operator] = call_id
                rings += 1
                await asyncio.sleep(0.001)
                del held[got.operator]
                await node.line.rang(call_id, got.operator, answered=False)

        await asyncio.gather(*(caller(node, cid) for node, cid in callers))
        assert rings >= 10  # the operators were rung again and again
    finally:
        for node in more:
            await node.db.close()


async def test_a_lost_nodes_ring_and_callers_free_themselves(
    nodes: tuple[Node, Node], clock: Clock
) -> None:
    a, b = nodes
    q = queue("sip:op1@x")
    await b.line.join("general", "on-b", "1", None, priority=False)
    await a.line.join("general", "on-a", "2", None, priority=False)
    assert await b.line.claim(q, "on-b") is not None  # node B rings op1, then dies
    assert await a.line.claim(q, "on-a") is None
    clock.now += 6  # B's heartbeat is older than the timeout; A beats on
    await a.roster.beat()
    assert await a.roster.lost() == ["node-b"]
    assert [e.call_id for e in await a.line.line()] == ["on-a"]
    got = await a.line.claim(q, "on-a")
    assert got is not None and got.operator == "sip:op1@x"
    assert await a.line.forget_node("node-b") == 1  # its caller's row; op1 is A's now
    assert (await a.line.operators())["sip:op1@x"].node == "node-a"


async def test_wrap_up_ends_at_its_time_and_paused_operators_get_no_call(
    nodes: tuple[Node, Node], clock: Clock
) -> None:
    a, b = nodes
    q = queue("sip:op1@x", "sip:op2@x")
    await b.line.set_paused("sip:op2@x", True)
    await a.line.join("general", "c1", "1", None, priority=False)
    got = await a.line.claim(q, "c1")
    assert got is not None and got.operator == "sip:op1@x"
    await a.line.rang("c1", "sip:op1@x", answered=True)
    await a.line.leave("c1")
    await a.line.talked("sip:op1@x", wrap_up=10)
    await b.line.join("general", "c2", "2", None, priority=False)
    assert await b.line.claim(q, "c2") is None  # op1 wraps up, op2 is paused
    assert (await b.line.operators())["sip:op2@x"].state is OperatorState.PAUSED
    clock.now += 11
    await a.roster.beat()
    await b.roster.beat()
    got = await b.line.claim(q, "c2")
    assert got is not None and got.operator == "sip:op1@x"


async def test_an_operator_who_did_not_answer_is_skipped_then_tried_again(
    nodes: tuple[Node, Node],
) -> None:
    a, _ = nodes
    q = queue("sip:op1@x", "sip:op2@x")
    await a.line.join("general", "c1", "1", None, priority=False)
    first = await a.line.claim(q, "c1")
    assert first is not None
    await a.line.rang("c1", first.operator, answered=False)
    second = await a.line.claim(q, "c1")
    assert second is not None and second.operator != first.operator
    await a.line.rang("c1", second.operator, answered=False)
    third = await a.line.claim(q, "c1")
    assert third is not None and third.start_over  # both tried: start over


async def test_a_dialect_caller_waiting_for_a_seat_does_not_block_the_line(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    q = queue("sip:op1@x", "sip:yue@x", skills={"sip:yue@x": frozenset({"yue"})})
    await a.line.join("general", "yue-caller", "1", "yue", priority=False)
    await b.line.join("general", "mandarin", "2", None, priority=False)
    await a.line.join("general", "yue-2", "3", "yue", priority=False)
    seat = await a.line.claim(q, "yue-caller")
    assert seat is not None and seat.operator == "sip:yue@x"
    other = await b.line.claim(q, "mandarin")
    assert other is not None and other.operator == "sip:op1@x"
    assert await a.line.claim(q, "yue-2") is None  # the seat is busy; no overflow yet
