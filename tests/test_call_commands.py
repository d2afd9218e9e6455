"""Console commands on calls across nodes (ivr/call_commands.py), on both back
ends (SQLite file, a real PostgreSQL server): node A's console asks, node B,
which holds the call, carries it out and says how it went; a command for a
call on a lost node fails at once with the reason; a stale one expires and is
never carried out; one in flight when its node dies fails once the node is
taken for lost. The whole path with real calls: tests/test_cluster_consultation.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ivr.call_commands import CallCommands, CommandFailed
from ivr.node_roster import NodeRoster
from ivr.store import Database, open_store


@dataclass
class NodeB:
    """What the node holding the call does with the commands it takes."""

    done: list[tuple[str, str, dict[str, Any], str]] = field(default_factory=list)

    async def consult(self, call_id: str, args: Mapping[str, Any], by: str) -> dict[str, Any]:
        if args.get("name") == "水务集团":
            raise CommandFailed("水务集团: 忙线")
        self.done.append((call_id, "consult", dict(args), by))
        return {"name": args["name"], "state": "ringing"}


@dataclass
class Two:
    a: CallCommands
    b: CallCommands
    held: NodeB
    db: Database
    roster_b: NodeRoster


@pytest.fixture
async def two_nodes(store_location: str | Path) -> AsyncIterator[Two]:
    db_a, db_b = await open_store(store_location), await open_store(store_location)
    roster_a = NodeRoster(db_a, "node-a", timeout=1.5)
    roster_b = NodeRoster(db_b, "node-b", timeout=1.5)
    await roster_a.join()
    await roster_b.join()
    await db_a.execute(
        "INSERT INTO calls (call_id, caller, dialled, started_at, node) VALUES (?, ?, ?, ?, ?)",
        ("call-1", "13800000001", "12345", time.time(), "node-b"),
    )
    held = NodeB()
    a = CallCommands(db_a, roster_a, {"consult": held.consult}, holds=lambda _: False, every=0.05)
    b = CallCommands(
        db_b, roster_b, {"consult": held.consult}, holds=lambda c: c == "call-1", every=0.05
    )
    yield Two(a, b, held, db_a, roster_b)
    await a.stop()
    await b.stop()
    await db_a.close()
    await db_b.close()


async def test_the_node_holding_the_call_carries_out_what_another_nodes_console_asked(
    two_nodes: Two,
) -> None:
    two_nodes.b.start()
    outcome = await two_nodes.a.run("call-1", "consult", {"name": "住建局"}, "op1")
    assert outcome.ok, outcome
    assert outcome.result == {"name": "住建局", "state": "ringing"} and outcome.node == "node-b"
    assert two_nodes.held.done == [("call-1", "consult", {"name": "住建局"}, "op1")]
    busy = await two_nodes.a.run("call-1", "consult", {"name": "水务集团"}, "op1")
    assert not busy.ok and busy.reason == "水务集团: 忙线" and busy.state == "failed"
    rows = await two_nodes.db.fetch_all(
        "SELECT command, requested_by, requested_from, node, state, reason FROM call_commands "
        "ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        ("consult", "op1", "node-a", "node-b", "done", ""),
        ("consult", "op1", "node-a", "node-b", "failed", "水务集团: 忙线"),
    ]
    ended = await two_nodes.a.run("call-9", "consult", {"name": "住建局"}, "op1")
    assert not ended.ok and "不在任何节点上" in ended.reason
    unknown = await two_nodes.a.run("call-1", "transfer", {}, "op1")
    assert not unknown.ok and "unknown command" in unknown.reason


async def test_a_command_for_a_call_on_a_lost_node_fails_at_once_with_the_reason(
    two_nodes: Two,
) -> None:
    two_nodes.b.start()
    await two_nodes.db.execute(  # node B has not said it is alive for 30 s
        "UPDATE nodes SET heartbeat_at = ? WHERE node_id = 'node-b'", (time.time() - 30,)
    )
    started = time.monotonic()
    outcome = await two_nodes.a.run("call-1", "consult", {"name": "住建局"}, "op1")
    assert time.monotonic() - started < 5.0, "it waited as for a node that is alive"
    assert not outcome.ok and "node-b" in outcome.reason and "已失联" in outcome.reason
    assert "no heartbeat for 30 s" in outcome.reason
    await asyncio.sleep(0.3)
    assert two_nodes.held.done == [], "a command for a lost node was carried out"
    (row,) = await two_nodes.db.fetch_all("SELECT state, reason FROM call_commands")
    assert row["state"] == "failed" and row["reason"] == outcome.reason


async def test_a_command_its_node_does_not_take_in_time_expires_and_is_never_carried_out(
    two_nodes: Two,
) -> None:
    two_nodes.a.expire = 0.6
    two_nodes.b.expire = 0.6
    beating = asyncio.ensure_future(_beat(two_nodes.roster_b, 2.0))  # alive, not reading
    try:
        outcome = await two_nodes.a.run("call-1", "consult", {"name": "住建局"}, "op1")
    finally:
        await beating
    assert not outcome.ok and outcome.state == "expired" and "expired" in outcome.reason
    two_nodes.b.start()  # the node reads its commands again: the stale one stays undone
    await asyncio.sleep(0.4)
    assert two_nodes.held.done == []
    (row,) = await two_nodes.db.fetch_all("SELECT state FROM call_commands")
    assert row["state"] == "expired"


async def test_a_command_waiting_when_its_node_dies_fails_once_the_node_is_lost(
    two_nodes: Two,
) -> None:
    # node B beat a moment ago, then died (no more heartbeats, nothing read)
    started = time.monotonic()
    outcome = await two_nodes.a.run("call-1", "consult", {"name": "住建局"}, "op1")
    waited = time.monotonic() - started
    assert not outcome.ok and "node-b" in outcome.reason and "已失联" in outcome.reason
    assert waited > 0.5, waited  # until the heartbeat was the roster's 1.5 s old, not at once
    assert two_nodes.held.done == []


async def _beat(roster: NodeRoster, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await roster.beat()
        await asyncio.sleep(0.1)
