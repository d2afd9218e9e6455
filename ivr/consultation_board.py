"""Who is in each consultation, for every node's console (多方协同 in a cluster).

The node holding a bridged call keeps its conversation in memory (the
conference mixes there); an operator whose browser is on another node still
needs to see who is in the call and who is being rung, to show the buttons. So
the holding node writes each conversation's state to ``call_conversations`` as
it changes (the latest state of each call, written in order by one writer
task; a change made while a write is on its way is written next), and deletes
the row when the conversation is over. Another node's console reads the row;
a row whose node stopped heartbeating is not shown (its calls are lost), and a
node starting again deletes the rows it left.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ivr.node_roster import NodeRoster, live_nodes_sql
from ivr.store import Database
from ivr.store_watch import FailingRounds


class ConsultationBoard:
    def __init__(self, db: Database, roster: NodeRoster, log: logging.Logger | None = None) -> None:
        self.db = db
        self.roster = roster
        self._log = log or logging.getLogger("ivr.consultation")
        self._changed: dict[str, dict[str, Any] | None] = {}  # call id -> state (None: over)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = FailingRounds(self._log, "consultations not written for other nodes")

    async def start(self) -> None:
        """Forget the rows of this node's last run (its calls went with it), then write."""
        try:
            await self.db.execute(
                "DELETE FROM call_conversations WHERE node = ?", (self.roster.node_id,)
            )
        except Exception as exc:
            self._failing.failed(exc)
        self._task = asyncio.ensure_future(self._write_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def put(self, call_id: str, state: dict[str, Any]) -> None:
        self._changed[call_id] = state
        self._wake.set()

    def remove(self, call_id: str) -> None:
        self._changed[call_id] = None
        self._wake.set()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._changed = self._changed, {}
            for call_id, state in batch.items():
                try:
                    await self._write(call_id, state)
                except Exception as exc:  # the store is away: the console on this node has it
                    self._failing.failed(exc)
                else:
                    self._failing.worked()

    async def _write(self, call_id: str, state: dict[str, Any] | None) -> None:
        if state is None:
            await self.db.execute("DELETE FROM call_conversations WHERE call_id = ?", (call_id,))
            return
        await self.db.execute(
            """
            INSERT INTO call_conversations (call_id, node, operator, state, updated_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (call_id) DO UPDATE SET node = excluded.node,
                operator = excluded.operator, state = excluded.state,
                updated_at = excluded.updated_at
            """,
            (
                call_id,
                self.roster.node_id,
                str(state.get("operator", "")),
                json.dumps(state, ensure_ascii=False),
                self.roster.clock(),
            ),
        )

    async def read(self, call_id: str) -> dict[str, Any] | None:
        """The conversation of ``call_id`` as its node last wrote it, with ``node``;
        None when there is none, or its node is lost."""
        row = await self.db.fetch_one(
            "SELECT c.node, c.state FROM call_conversations c "
            f"JOIN nodes n ON n.node_id = c.node WHERE c.call_id = ? AND {live_nodes_sql()}",
            (call_id, self.roster.alive_since()),
        )
        if row is None:
            return None
        try:
            state = json.loads(str(row["state"]))
        except ValueError:
            return None
        if not isinstance(state, dict):
            return None
        return {**state, "node": str(row["node"])}
