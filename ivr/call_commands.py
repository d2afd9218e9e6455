"""Console commands on calls, whichever node holds the call (坐席操作跨节点).

An operator's browser may be on node A while node B holds their call (its
SIP dialogs, its RTP, its conference are in B's memory). A button on A's
console (bring a department in, drop a party, hang up) is a *command*: if this
node holds the call it is carried out at once; otherwise it is written to
``call_commands`` for the node the ``calls`` table names, which reads its
pending rows every ``every`` seconds, takes each one (pending -> running, one
UPDATE, so it is carried out once), carries it out and writes done or failed
with a reason. The console that wrote it waits for that row and shows the
reason.

A command for a node that stopped heartbeating fails at once (or, if the node
stops while the command waits, as soon as its heartbeat is ``timeout`` old)
with the reason naming the node; one not taken within ``expire`` seconds (the
node alive but not reading, e.g. its store connection stuck) is marked
``expired`` and is never carried out later. Rows are deleted after ``KEEP_S``.
Why a table: docs/decisions.md, "Console commands across nodes".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivr.node_roster import NodeRoster
from ivr.store import Database
from ivr.store_watch import FailingRounds

COMMAND_EVERY_S = 0.2  # how often a node reads the commands for its calls
COMMAND_EXPIRE_S = 10.0  # a command not taken this long is stale: never carried out
KEEP_S = 3600.0  # finished rows are kept this long (for the log of who did what)
WAIT_EVERY_S = 0.05  # how often the asking console reads its command's row

# (call id, args, the user who asked) -> what came of it, for the screen;
# raises CommandFailed with the words for the operator
Handler = Callable[[str, Mapping[str, Any], str], Awaitable[dict[str, Any]]]


class CommandFailed(Exception):
    """A command that could not be carried out; the message is for the screen."""


@dataclass(frozen=True)
class CommandOutcome:
    ok: bool
    reason: str = ""  # why it failed, in words for the operator ("" when ok)
    result: dict[str, Any] = field(default_factory=dict)
    node: str | None = None  # the node that holds the call (carried it out)
    command_id: int | None = None  # the row, when it went through the store
    state: str = "done"  # done, failed, expired

    def to_json(self) -> dict[str, Any]:
        return {
            **self.result,
            "ok": self.ok,
            "reason": self.reason,
            "node": self.node,
            "command": self.command_id,
            "command_state": self.state,
        }


def _failed(reason: str, *, node: str | None = None, state: str = "failed") -> CommandOutcome:
    return CommandOutcome(False, reason, node=node, state=state)


class CallCommands:
    """Carries out console commands on calls: this node's at once, other
    nodes' through the store; and those other nodes wrote for this one."""

    def __init__(
        self,
        db: Database,
        roster: NodeRoster,
        handlers: Mapping[str, Handler],
        *,
        holds: Callable[[str], bool],
        every: float = COMMAND_EVERY_S,
        expire: float = COMMAND_EXPIRE_S,
        log: logging.Logger | None = None,
    ) -> None:
        self.db = db
        self.roster = roster
        self.handlers = dict(handlers)
        self.holds = holds  # whether this node holds the call now
        self.every = every
        self.expire = expire
        self._log = log or logging.getLogger("ivr.commands")
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def node_id(self) -> str:
        return self.roster.node_id

    # -- asking ----------------------------------------------------------------------
    async def run(
        self, call_id: str, command: str, args: Mapping[str, Any], requested_by: str
    ) -> CommandOutcome:
        """Carry out ``command`` on ``call_id`` here or on the node holding it, and
        wait for the outcome (at most ``expire`` seconds)."""
        if command not in self.handlers:
            return _failed(f"unknown command {command[:40]!r}")
        if self.holds(call_id):
            return await self._carry_out(call_id, command, args, requested_by)
        try:
            return await self._through_store(call_id, command, args, requested_by)
        except CommandFailed as exc:
            return _failed(str(exc))
        except Exception as exc:  # the store is away: the other node cannot be asked
            self._log.warning("command %s on %s not sent: %s", command, call_id, exc)
            return _failed(f"通话在另一节点上，数据库暂不可达，无法转达 ({exc})")

    async def _carry_out(
        self, call_id: str, command: str, args: Mapping[str, Any], requested_by: str
    ) -> CommandOutcome:
        try:
            result = await self.handlers[command](call_id, args, requested_by)
        except CommandFailed as exc:
            return _failed(str(exc), node=self.node_id)
        except Exception as exc:
            self._log.exception("command %s on %s failed", command, call_id)
            return _failed(f"执行出错: {exc}", node=self.node_id)
        return CommandOutcome(True, result=result, node=self.node_id)

    async def _through_store(
        self, call_id: str, command: str, args: Mapping[str, Any], requested_by: str
    ) -> CommandOutcome:
        row = await self.db.fetch_one(
            "SELECT node, ended_at FROM calls WHERE call_id = ?", (call_id,)
        )
        if row is None or not row["node"]:
            raise CommandFailed("这通电话不在任何节点上 (no call record names its node)")
        node = str(row["node"])
        if row["ended_at"] is not None:
            raise CommandFailed("通话已结束")
        if node == self.node_id:  # the record says here, but it is not here (any more)
            raise CommandFailed("通话已结束")
        now = self.roster.clock()
        lost = await self._why_lost(node)
        state, reason = ("failed", lost) if lost else ("pending", "")
        inserted = await self.db.fetch_one(
            "INSERT INTO call_commands (call_id, node, command, args, requested_by, "
            "requested_from, requested_at, state, reason, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                call_id,
                node,
                command,
                json.dumps(dict(args), ensure_ascii=False),
                requested_by,
                self.node_id,
                now,
                state,
                reason,
                now if lost else None,
            ),
        )
        assert inserted is not None
        command_id = int(inserted[0])
        self._log.info(
            "command %d: %s on %s (node %s) by %s%s",
            command_id,
            command,
            call_id,
            node,
            requested_by,
            f": {lost}" if lost else "",
        )
        if lost:
            return CommandOutcome(False, lost, node=node, command_id=command_id, state="failed")
        return await self._wait(command_id, node, now)

    async def _why_lost(self, node: str) -> str:
        """Why commands cannot reach ``node`` ("" when it is alive)."""
        row = await self.db.fetch_one(
            "SELECT state, heartbeat_at FROM nodes WHERE node_id = ?", (node,)
        )
        if row is None:
            return f"节点 {node} 不在集群中 (node unknown)"
        silent = self.roster.clock() - float(row["heartbeat_at"])
        if str(row["state"]) == "lost" or silent >= self.roster.timeout:
            return f"节点 {node} 已失联 (node lost: no heartbeat for {silent:.0f} s)"
        if str(row["state"]) == "stopped":
            return f"节点 {node} 已停止 (node stopped)"
        return ""

    async def _wait(self, command_id: int, node: str, since: float) -> CommandOutcome:
        checked_node_at = since
        while True:
            await asyncio.sleep(WAIT_EVERY_S)
            row = await self.db.fetch_one(
                "SELECT state, reason, result FROM call_commands WHERE id = ?", (command_id,)
            )
            if row is None:
                return _failed("命令记录已丢失", node=node)
            state = str(row["state"])
            if state == "done":
                result = json.loads(str(row["result"]))
                return CommandOutcome(
                    True, result=result, node=node, command_id=command_id, state=state
                )
            if state in ("failed", "expired"):
                return CommandOutcome(
                    False, str(row["reason"]), node=node, command_id=command_id, state=state
                )
            now = self.roster.clock()
            if now - checked_node_at >= 0.5:  # pending, or taken by a node that died
                checked_node_at = now
                lost = await self._why_lost(node)
                if lost and await self._close(command_id, "failed", lost, taken_too=True):
                    self._log.warning("command %d: %s", command_id, lost)
                    return CommandOutcome(
                        False, lost, node=node, command_id=command_id, state="failed"
                    )
            if state == "pending" and now - since >= self.expire:
                why = f"节点 {node} 未在 {self.expire:g} 秒内执行 (expired)"
                if await self._close(command_id, "expired", why):
                    self._log.warning("command %d: %s", command_id, why)
                    return CommandOutcome(
                        False, why, node=node, command_id=command_id, state="expired"
                    )
            if now - since >= self.expire + 30.0:  # taken, and never finished
                return _failed(f"节点 {node} 执行超时", node=node)

    async def _close(
        self, command_id: int, state: str, reason: str, *, taken_too: bool = False
    ) -> bool:
        """Fail a command still pending (``taken_too``: or running); False when its
        node took (or finished) it meanwhile."""
        states = "('pending', 'running')" if taken_too else "('pending')"
        changed = await self.db.execute(
            "UPDATE call_commands SET state = ?, reason = ?, finished_at = ? "
            f"WHERE id = ? AND state IN {states}",
            (state, reason, self.roster.clock(), command_id),
        )
        return changed > 0

    # -- carrying out what other nodes asked ---------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._serve_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._running:
            await asyncio.wait(self._running, timeout=2.0)

    async def _serve_forever(self) -> None:
        rounds = 0
        failing = FailingRounds(self._log, "commands from other nodes' consoles not read")
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.serve()
                rounds += 1
                if rounds % 100 == 0:
                    await self.db.execute(
                        "DELETE FROM call_commands WHERE requested_at < ? AND state <> 'pending' "
                        "AND state <> 'running'",
                        (self.roster.clock() - KEEP_S,),
                    )
            except Exception as exc:  # the store is away: said once, not every round
                failing.failed(exc)
            else:
                failing.worked()

    async def serve(self) -> int:
        """Take this node's pending commands and carry them out; how many taken."""
        now = self.roster.clock()
        rows = await self.db.fetch_all(
            "SELECT id, call_id, command, args, requested_by, requested_at FROM call_commands "
            "WHERE node = ? AND state = 'pending' ORDER BY id",
            (self.node_id,),
        )
        taken = 0
        for row in rows:
            command_id = int(row["id"])
            if now - float(row["requested_at"]) >= self.expire:
                await self._close(command_id, "expired", "过期未执行 (expired)")
                continue
            claimed = await self.db.execute(
                "UPDATE call_commands SET state = 'running', taken_at = ? "
                "WHERE id = ? AND state = 'pending'",
                (self.roster.clock(), command_id),
            )
            if not claimed:  # expired or failed by the asking node meanwhile
                continue
            taken += 1
            task = asyncio.ensure_future(
                self._run_taken(
                    command_id,
                    str(row["call_id"]),
                    str(row["command"]),
                    str(row["args"]),
                    str(row["requested_by"]),
                )
            )
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return taken

    async def _run_taken(
        self, command_id: int, call_id: str, command: str, args_text: str, requested_by: str
    ) -> None:
        try:
            args = json.loads(args_text)
        except ValueError:
            args = None
        if command not in self.handlers:
            outcome = _failed(f"本节点不认识命令 {command[:40]!r}", node=self.node_id)
        elif not isinstance(args, dict):
            outcome = _failed("命令参数不是 JSON 对象", node=self.node_id)
        elif not self.holds(call_id):
            outcome = _failed("通话已不在本节点 (the call is over)", node=self.node_id)
        else:
            outcome = await self._carry_out(call_id, command, args, requested_by)
        self._log.info(
            "command %d: %s on %s by %s: %s",
            command_id,
            command,
            call_id,
            requested_by,
            "done" if outcome.ok else f"failed: {outcome.reason}",
        )
        try:
            await self.db.execute(
                "UPDATE call_commands SET state = ?, reason = ?, result = ?, finished_at = ? "
                "WHERE id = ? AND state = 'running'",
                (
                    "done" if outcome.ok else "failed",
                    outcome.reason,
                    json.dumps(outcome.result, ensure_ascii=False, default=str),
                    self.roster.clock(),
                    command_id,
                ),
            )
        except Exception as exc:  # carried out; the console that asked waits, then says so
            self._log.warning("command %d: outcome not written: %s", command_id, exc)
