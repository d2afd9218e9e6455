"""Console events across nodes: a screen pop made by the node that holds the
call reaches an operator's browser on any node.

Each event published on a node is written to ``console_events`` in the store;
every node reads, every ``every`` seconds, the rows of the last ``WINDOW_S``
seconds written by the other nodes and hands the new ones to its own screens.
Reading a time window (not "ids above the last one seen") keeps an event whose
row committed after a later id was read; the ids seen are remembered for the
window.  Rows older than ``KEEP_S`` are deleted.  Why a table and not
PostgreSQL's LISTEN/NOTIFY: docs/decisions.md, "Console events across nodes".
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ivr.node_roster import NodeRoster
from ivr.store import Database
from ivr.store_watch import FailingRounds
from ivr.tickets.events import TicketEvents

RELAY_EVERY_S = 0.2
WINDOW_S = 30.0  # a row is looked for this long after it was written
KEEP_S = 120.0  # rows are kept this long


class EventRelay:
    def __init__(
        self,
        db: Database,
        roster: NodeRoster,
        events: TicketEvents,
        *,
        every: float = RELAY_EVERY_S,
        log: logging.Logger | None = None,
    ) -> None:
        self.db = db
        self.roster = roster
        self.events = events
        self.every = every
        self._log = log or logging.getLogger("ivr.events")
        self._seen: dict[int, float] = {}  # row id -> when it was written
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._since = 0.0

    def start(self) -> None:
        self._since = self.roster.clock()  # events before this node started are not news
        self.events.on_publish.append(self._send)
        self._task = asyncio.ensure_future(self._relay_forever())

    async def stop(self) -> None:
        if self._send in self.events.on_publish:
            self.events.on_publish.remove(self._send)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._writes:
            await asyncio.wait(self._writes, timeout=2.0)

    def _send(self, kind: str, ticket: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._write(kind, ticket))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, kind: str, ticket: dict[str, Any]) -> None:
        try:
            await self.db.execute(
                "INSERT INTO console_events (at, node, kind, payload) VALUES (?, ?, ?, ?)",
                (
                    self.roster.clock(),
                    self.roster.node_id,
                    kind,
                    json.dumps(ticket, ensure_ascii=False),
                ),
            )
        except Exception as exc:  # the store is away: this node's own screens had it
            self._log.warning("console event %s not relayed to other nodes: %s", kind, exc)

    async def _relay_forever(self) -> None:
        rounds = 0
        failing = FailingRounds(self._log, "console events of other nodes not read")
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.relay()
                rounds += 1
                if rounds % 50 == 0:
                    await self.db.execute(
                        "DELETE FROM console_events WHERE at < ?", (self.roster.clock() - KEEP_S,)
                    )
            except Exception as exc:  # the store is away: said once, not every round
                failing.failed(exc)
            else:
                failing.worked()

    async def relay(self) -> int:
        """Hand the other nodes' new events to this node's screens; how many."""
        now = self.roster.clock()
        since = max(self._since, now - WINDOW_S)
        rows = await self.db.fetch_all(
            "SELECT id, at, kind, payload FROM console_events WHERE at >= ? AND node <> ? "
            "ORDER BY at, id",
            (since, self.roster.node_id),
        )
        handed = 0
        for row in rows:
            row_id = int(row["id"])
            if row_id in self._seen:
                continue
            self._seen[row_id] = float(row["at"])
            try:
                ticket = json.loads(str(row["payload"]))
            except ValueError:
                continue
            if isinstance(ticket, dict):
                self.events.deliver(str(row["kind"]), ticket)
                handed += 1
        for row_id in [i for i, at in self._seen.items() if at < now - WINDOW_S - 5]:
            del self._seen[row_id]
        return handed
