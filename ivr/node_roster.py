"""The nodes of one hotline: each node says it is alive by a heartbeat in the
store; a node silent for ``timeout`` seconds is lost (its calls, its place in
the waiting line and its operators' rings are let go by the survivors).

One machine is a cluster of one node: the same rows, the same code.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ivr.store import Database, DatabaseError

HEARTBEAT_EVERY_S = 1.0
NODE_TIMEOUT_S = 5.0  # a node silent this long is lost
LIVE_STATES = ("up", "draining")


def default_node_id(sip_host: str, sip_port: int) -> str:
    """This machine's name and SIP port: unique among nodes on one machine too."""
    return f"{socket.gethostname()}:{sip_host}:{sip_port}"


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    sip_address: str
    web_address: str
    started_at: float
    heartbeat_at: float
    state: str


def live_nodes_sql(alias: str = "n") -> str:
    """SQL true for a live node row ``alias``; binds one ``?``: now - timeout."""
    return f"({alias}.heartbeat_at >= ? AND {alias}.state IN ('up', 'draining'))"


class NodeRoster:
    """This node's heartbeat, and who else is alive."""

    def __init__(
        self,
        db: Database,
        node_id: str,
        *,
        sip_address: str = "",
        web_address: str = "",
        timeout: float = NODE_TIMEOUT_S,
        every: float = HEARTBEAT_EVERY_S,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.sip_address = sip_address
        self.web_address = web_address
        self.timeout = timeout
        self.every = every
        self.clock = clock
        self.state = "up"
        self.healthy = True  # the last heartbeat reached the store
        # when the heartbeat reached the store again after failing (None: it never
        # failed): until every node had a timeout's time to beat again, nobody
        # is judged lost by this node (they were all cut off from the store too)
        self.healthy_again_at: float | None = None
        self._log = log or logging.getLogger("ivr.nodes")
        self._task: asyncio.Task[None] | None = None
        # called when a heartbeat finds this node marked lost by a survivor
        # (ivr/lost_nodes.py: LostNodeWatch.back_from_lost)
        self.on_found_lost: Callable[[], Awaitable[None]] | None = None

    def alive_since(self) -> float:
        """Heartbeats after this time count as alive."""
        return self.clock() - self.timeout

    async def join(self) -> bool:
        """Say this node is up. True when its last run ended without saying so
        (its row still up or draining: killed, not stopped) and no survivor
        took it over."""
        row = await self.db.fetch_one("SELECT state FROM nodes WHERE node_id = ?", (self.node_id,))
        crashed = row is not None and str(row[0]) in LIVE_STATES
        now = self.clock()
        await self.db.execute(
            """
            INSERT INTO nodes (node_id, sip_address, web_address, started_at, heartbeat_at, state)
            VALUES (?, ?, ?, ?, ?, 'up')
            ON CONFLICT (node_id) DO UPDATE SET sip_address = excluded.sip_address,
                web_address = excluded.web_address, started_at = excluded.started_at,
                heartbeat_at = excluded.heartbeat_at, state = 'up'
            """,
            (self.node_id, self.sip_address, self.web_address, now, now),
        )
        self.state = "up"
        return crashed

    async def beat(self) -> None:
        changed = await self.db.execute(
            "UPDATE nodes SET heartbeat_at = ?, state = ? WHERE node_id = ? AND state <> 'lost'",
            (self.clock(), self.state, self.node_id),
        )
        if changed:
            return
        # taken for lost by a survivor while this node was cut off from the
        # store (it was alive): say so, undo what can be undone, then beat
        row = await self.db.fetch_one("SELECT state FROM nodes WHERE node_id = ?", (self.node_id,))
        if row is not None and str(row[0]) == "lost":
            self._log.error(
                "node %s: taken for lost by another node while cut off from the store; "
                "its calls go on",
                self.node_id,
            )
            if self.on_found_lost is not None:
                await self.on_found_lost()
        await self.db.execute(
            "UPDATE nodes SET heartbeat_at = ?, state = ? WHERE node_id = ?",
            (self.clock(), self.state, self.node_id),
        )

    async def set_state(self, state: str) -> None:
        """'draining' (finishing its calls, taking no new ones) or 'stopped'."""
        self.state = state
        await self.beat()

    async def nodes(self) -> list[NodeInfo]:
        rows = await self.db.fetch_all(
            "SELECT node_id, sip_address, web_address, started_at, heartbeat_at, state "
            "FROM nodes ORDER BY node_id"
        )
        return [
            NodeInfo(
                str(r[0]), str(r[1]), str(r[2]), float(r[3]), float(r[4]), str(r[5])
            )
            for r in rows
        ]

    async def alive(self) -> set[str]:
        rows = await self.db.fetch_all(
            f"SELECT node_id FROM nodes n WHERE {live_nodes_sql()}", (self.alive_since(),)
        )
        return {str(r[0]) for r in rows}

    async def lost(self) -> list[str]:
        """Nodes that stopped heartbeating without saying they stopped."""
        rows = await self.db.fetch_all(
            "SELECT node_id FROM nodes n WHERE n.state IN ('up', 'draining') "
            "AND n.heartbeat_at < ? AND n.node_id <> ?",
            (self.alive_since(), self.node_id),
        )
        return [str(r[0]) for r in rows]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._beat_forever())

    async def stop(self, state: str = "stopped") -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.set_state(state)
        except DatabaseError:
            self._log.warning("node %s: could not record that it %s", self.node_id, state)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.beat()
            except Exception as exc:  # the store is unreachable: keep the calls going
                if self.healthy:
                    self._log.error("node %s: heartbeat failed: %s", self.node_id, exc)
                self.healthy = False
            else:
                if not self.healthy:
                    self._log.warning("node %s: heartbeat reaches the store again", self.node_id)
                    self.healthy_again_at = self.clock()
                self.healthy = True

    def may_judge(self) -> bool:
        """This node may judge others lost: its heartbeat reaches the store, and
        has for at least the timeout since it last failed."""
        if not self.healthy:
            return False
        again = self.healthy_again_at
        return again is None or self.clock() - again >= self.timeout
