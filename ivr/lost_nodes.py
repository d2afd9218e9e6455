"""What the survivors do when a node stops heartbeating (killed, frozen, cut
off): within seconds one of them, and only one, takes the lost node over:

* its calls still open in the store end with reason ``node_lost``;
* callers who were past the greeting are queued for a callback (their tickets
  stay as they were: the callback rings with them);
* its callers leave the one waiting line and its operators' rings are freed;
* the callbacks it was dialling go back to pending, for a live node to dial.

Which survivor: the one whose UPDATE turns the node's state from up/draining
to ``lost`` (one statement, so two survivors never both take it over).  A node
alone (one machine) that was killed does the same for itself when it starts
again: its callers are called back after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ivr.call import EndReason
from ivr.callbacks import CallbackQueue
from ivr.callbacks.model import CallbackReason, CallbackState
from ivr.callbacks.queue import CallbackStateError
from ivr.node_roster import NodeRoster
from ivr.shared_line import SharedLine
from ivr.store import Database
from ivr.store_watch import FailingRounds

WATCH_EVERY_S = 1.0


@dataclass(frozen=True)
class TakenOver:
    node: str
    calls_ended: int
    callbacks_queued: int
    callbacks_recovered: int


class LostNodeWatch:
    def __init__(
        self,
        db: Database,
        roster: NodeRoster,
        line: SharedLine,
        callbacks: Callable[[], CallbackQueue | None],
        *,
        on_callbacks: Callable[[], None] = lambda: None,
        log: logging.Logger | None = None,
    ) -> None:
        self.db = db
        self.roster = roster
        self.line = line
        self._callbacks = callbacks
        self._on_callbacks = on_callbacks
        self._log = log or logging.getLogger("ivr.nodes")
        self._task: asyncio.Task[None] | None = None

    def start(self, every: float = WATCH_EVERY_S) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._watch_forever(every))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _watch_forever(self, every: float) -> None:
        failing = FailingRounds(self._log, "lost-node watch: round failed")
        while True:
            await asyncio.sleep(every)
            if not self.roster.may_judge():
                # this node cannot reach the store, or reaches it again only since
                # less than the timeout: the others' heartbeats may not be back yet
                continue
            try:
                await self.sweep()
            except Exception as exc:  # the store is away: said once, not every round
                failing.failed(exc, with_traceback=True)
            else:
                failing.worked()

    async def sweep(self) -> list[TakenOver]:
        """Take over every node that stopped heartbeating; what was done."""
        done: list[TakenOver] = []
        for node in await self.roster.lost():
            won = await self.db.execute(
                "UPDATE nodes SET state = 'lost' WHERE node_id = ? "
                "AND state IN ('up', 'draining') AND heartbeat_at < ?",
                (node, self.roster.alive_since()),
            )
            if won:
                done.append(await self._take_over(node))
        return done

    async def back_from_lost(self, calls: Iterable[str]) -> tuple[int, int]:
        """This node was cut off from the store, not dead, and a survivor took
        it over meanwhile: the ``calls`` it still holds are in progress again
        (the survivor's ``node_lost`` end undone, so their progress is written
        again) and the callbacks queued for them are cancelled unless already
        answered. Its waiting callers go back into the line with the writes it
        kept (ivr/store_watch.py). Returns (calls resumed, callbacks cancelled)."""
        now = self.roster.clock()
        node = self.roster.node_id
        resumed = cancelled = 0
        queue = self._callbacks()
        for call_id in calls:
            resumed += await self.db.execute(
                "UPDATE calls SET ended_at = NULL, end_reason = NULL, "
                "outcome = CASE WHEN outcome = 'node_lost' THEN NULL ELSE outcome END "
                "WHERE call_id = ? AND node = ? AND end_reason = ?",
                (call_id, node, EndReason.NODE_LOST.value),
            )
            if queue is None:
                continue
            for callback in await queue.open_for_call(call_id):
                if callback.state is CallbackState.CONNECTED:
                    self._log.warning(
                        "callback %d for call %s was answered before node %s came back",
                        callback.id,
                        call_id,
                        node,
                    )
                    continue
                with contextlib.suppress(CallbackStateError):
                    await queue.cancel(
                        callback.id,
                        f"call {call_id} still in progress on node {node} "
                        "(it was cut off from the store, not lost)",
                        now=now,
                    )
                    cancelled += 1
        self._log.warning(
            "node %s back: %d call(s) it still holds in progress again, %d callback(s) "
            "queued for them cancelled",
            node,
            resumed,
            cancelled,
        )
        return resumed, cancelled

    async def take_over_own_past(self, crashed: bool) -> TakenOver | None:
        """At start, when this node's last run ended without saying so (killed,
        power cut: ``crashed``, from ``NodeRoster.join``) and no survivor took it
        over (a node alone): do what a survivor would have done, for its calls."""
        if not crashed:
            return None
        return await self._take_over(self.roster.node_id)

    async def _take_over(self, node: str) -> TakenOver:
        now = self.roster.clock()
        queue = self._callbacks()
        rows = await self.db.fetch_all(
            "SELECT call_id, caller, path, digits, answered_at FROM calls "
            "WHERE node = ? AND ended_at IS NULL ORDER BY started_at",
            (node,),
        )
        ended = queued = 0
        for row in rows:
            call_id, caller = str(row["call_id"]), str(row["caller"])
            changed = await self.db.execute(
                "UPDATE calls SET ended_at = ?, end_reason = ?, "
                "outcome = COALESCE(outcome, 'node_lost') WHERE call_id = ? AND ended_at IS NULL",
                (now, EndReason.NODE_LOST.value, call_id),
            )
            ended += changed
            if not changed or queue is None or not caller.strip():
                continue
            try:
                path = json.loads(str(row["path"]))
            except ValueError:
                path = []
            past_greeting = row["answered_at"] is not None and (
                len(path) >= 2 or bool(row["digits"])
            )
            if not past_greeting:
                continue
            ticket = await self.db.fetch_one(
                "SELECT id FROM tickets WHERE call_id = ? ORDER BY id DESC LIMIT 1", (call_id,)
            )
            try:
                await queue.request(
                    caller,
                    call_id=call_id,
                    reason=CallbackReason.DROPPED,
                    now=now,
                    ticket_id=int(ticket["id"]) if ticket is not None else None,
                )
                queued += 1
            except (ValueError, LookupError) as exc:
                self._log.warning("node %s lost: no callback for call %s: %s", node, call_id, exc)
        await self.line.forget_node(node)
        recovered = 0
        if queue is not None and node != self.roster.node_id:
            # a node's own dials are taken back by its callback dialler at start
            recovered = await queue.recover(now=now, node=node)
        if queued or recovered:
            self._on_callbacks()
        self._log.warning(
            "node %s lost (no heartbeat for %.0f s): %d call(s) ended as node_lost, "
            "%d callback(s) queued, %d callback dial(s) taken back",
            node,
            self.roster.timeout,
            ended,
            queued,
            recovered,
        )
        return TakenOver(node, ended, queued, recovered)
