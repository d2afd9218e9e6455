"""The waiting line and the operators' states, shared by every node through
the store: one line per queue, whichever node holds each caller.

A node's desk asks ``claim`` whether the next free operator is its caller's.
The claim runs in one transaction holding the store's lock ``desk``: it reads
the whole line (callers of live nodes only) and every operator's state, runs
the same rule as one machine (``Queue.assignment``: in line order, skills,
overflow, operators who did not answer skipped), and, if the caller gets an
operator, marks that operator ``ringing`` for this node before the lock is let
go. So an operator is never rung by two nodes at once, and the longest-waiting
eligible caller on any node gets the next free operator.

An operator marked ringing or talking by a node that stops heartbeating counts
as free (the node is gone, and so are its legs); a wrap-up ends at its time
whoever wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ivr.node_roster import NodeRoster, live_nodes_sql
from ivr.operators import Operator, OperatorState, Queue, Waiter, spare_operators
from ivr.store import Database, Transaction

DESK_LOCK = "desk"


@dataclass(frozen=True)
class LineEntry:
    call_id: str
    queue: str
    node: str
    caller: str
    skill: str | None
    priority: bool
    joined_at: float
    ringing: str | None
    skipped: frozenset[str]


@dataclass(frozen=True)
class OperatorRow:
    uri: str
    state: OperatorState  # as it counts now (a lost node's ring is free)
    paused: bool
    call_id: str | None
    node: str | None
    calls_taken: int


@dataclass(frozen=True)
class HeldOperator:
    """An operator a node rings, talks to or wraps up (for ``write_back``)."""

    uri: str
    state: OperatorState  # ringing, talking or wrap_up
    call_id: str | None
    free_at: float | None  # the end of a wrap-up


@dataclass(frozen=True)
class Claim:
    operator: str
    start_over: bool  # every operator the caller may take had been tried


_WAITERS = (
    "SELECT w.call_id, w.queue, w.node, w.caller, w.skill, w.priority, w.joined_at, "
    "w.ringing, w.skipped FROM queue_waiters w JOIN nodes n ON n.node_id = w.node "
    f"WHERE {live_nodes_sql()}"
)
_ORDER = " ORDER BY w.priority DESC, w.id"


class SharedLine:
    def __init__(self, db: Database, roster: NodeRoster) -> None:
        self.db = db
        self.roster = roster

    @property
    def node_id(self) -> str:
        return self.roster.node_id

    async def add_operators(self, uris: Iterable[str]) -> None:
        """Operators of the config get a state row (free) if they have none."""
        now = self.roster.clock()
        for uri in uris:
            await self.db.execute(
                "INSERT INTO operator_states (uri, state, updated_at) VALUES (?, 'free', ?) "
                "ON CONFLICT (uri) DO NOTHING",
                (uri, now),
            )

    async def join(
        self, queue: str, call_id: str, caller: str, skill: str | None, *, priority: bool
    ) -> None:
        await self.db.execute(
            "INSERT INTO queue_waiters (call_id, queue, node, caller, skill, priority, joined_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (call_id, queue, self.node_id, caller, skill, int(priority), self.roster.clock()),
        )

    async def leave(self, call_id: str) -> None:
        await self.db.execute("DELETE FROM queue_waiters WHERE call_id = ?", (call_id,))

    async def waiting(self, queue: str) -> int:
        row = await self.db.fetch_one(
            f"SELECT COUNT(*) FROM ({_WAITERS} AND w.queue = ?) AS line",
            (self.roster.alive_since(), queue),
        )
        return int(row[0]) if row is not None else 0

    async def line(self, queues: Iterable[str] | None = None) -> list[LineEntry]:
        """Every live caller waiting, by queue, head first."""
        rows = await self.db.fetch_all(_WAITERS + _ORDER, (self.roster.alive_since(),))
        wanted = None if queues is None else set(queues)
        return [e for e in map(_entry, rows) if wanted is None or e.queue in wanted]

    async def operators(self, uris: Iterable[str] | None = None) -> dict[str, OperatorRow]:
        return await _operators(self.db, self.roster, uris)

    async def claim(
        self, queue: Queue, call_id: str, *, lender: Queue | None = None
    ) -> Claim | None:
        """The free operator this caller gets now, marked ringing for this node;
        None while no free operator is theirs (someone earlier in line, or a
        skill they wait for). ``lender``: ``queue``'s overflow_to queue, whose
        spare operators (free, due to none of its own line) a caller who has
        waited overflow_to_after may take."""
        async with self.db.transaction() as tx:
            await tx.lock(DESK_LOCK)
            now = self.roster.clock()
            entries = [
                _entry(r)
                for r in await tx.fetch_all(
                    _WAITERS + " AND w.queue = ?" + _ORDER, (self.roster.alive_since(), queue.name)
                )
            ]
            if not any(e.call_id == call_id for e in entries):
                return None
            uris = [op.uri for op in queue.operators]
            spare: list[Operator] = []
            if lender is not None:
                uris += [op.uri for op in lender.operators]
            states = await _operators(tx, self.roster, uris)
            view = _view(queue, entries, states)
            waiter = view.waiting[call_id]
            if lender is not None and view.lends_to(waiter, now):
                lender_line = [
                    _entry(r)
                    for r in await tx.fetch_all(
                        _WAITERS + " AND w.queue = ?" + _ORDER,
                        (self.roster.alive_since(), lender.name),
                    )
                ]
                spare = spare_operators(view, _view(lender, lender_line, states), now)
            mine = view.assignment(now, spare=spare).get(call_id)
            if mine is None:
                return None
            operator, start_over = mine
            await tx.execute(
                "UPDATE operator_states SET state = 'ringing', call_id = ?, node = ?, "
                "free_at = NULL, updated_at = ? WHERE uri = ?",
                (call_id, self.node_id, now, operator.uri),
            )
            waiter = view.waiting[call_id]
            skipped = set() if start_over else set(waiter.skipped)
            await tx.execute(
                "UPDATE queue_waiters SET ringing = ?, skipped = ? WHERE call_id = ?",
                (operator.uri, json.dumps(sorted(skipped)), call_id),
            )
            return Claim(operator.uri, start_over)

    async def rang(self, call_id: str, operator: str, *, answered: bool) -> None:
        """The ring for ``call_id`` is over: answered (the operator talks) or
        not (the operator is free again and skipped by this caller)."""
        now = self.roster.clock()
        async with self.db.transaction() as tx:
            await tx.lock(DESK_LOCK)
            if answered:
                await tx.execute(
                    "UPDATE operator_states SET state = 'talking', calls_taken = calls_taken + 1, "
                    "updated_at = ? WHERE uri = ? AND node = ?",
                    (now, operator, self.node_id),
                )
                await tx.execute(
                    "UPDATE queue_waiters SET ringing = NULL WHERE call_id = ?", (call_id,)
                )
                return
            await _free(tx, operator, self.node_id, now)
            row = await tx.fetch_one(
                "SELECT skipped FROM queue_waiters WHERE call_id = ?", (call_id,)
            )
            if row is not None:
                skipped = set(json.loads(str(row[0]))) | {operator}
                await tx.execute(
                    "UPDATE queue_waiters SET ringing = NULL, skipped = ? WHERE call_id = ?",
                    (json.dumps(sorted(skipped)), call_id),
                )

    async def talked(self, operator: str, *, wrap_up: float) -> None:
        """The operator's call is over: wrap-up for ``wrap_up`` s, then free."""
        now = self.roster.clock()
        async with self.db.transaction() as tx:
            await tx.lock(DESK_LOCK)
            if wrap_up > 0:
                await tx.execute(
                    "UPDATE operator_states SET state = 'wrap_up', call_id = NULL, free_at = ?, "
                    "updated_at = ? WHERE uri = ? AND node = ?",
                    (now + wrap_up, now, operator, self.node_id),
                )
            else:
                await _free(tx, operator, self.node_id, now)

    async def release(self, operator: str) -> None:
        """Free now (a ring given up, a leg that never came)."""
        async with self.db.transaction() as tx:
            await tx.lock(DESK_LOCK)
            await _free(tx, operator, self.node_id, self.roster.clock())

    async def set_paused(self, operator: str, paused: bool) -> None:
        await self.db.execute(
            "UPDATE operator_states SET paused = ?, updated_at = ? WHERE uri = ?",
            (int(paused), self.roster.clock(), operator),
        )

    async def write_back(
        self,
        waiters: list[LineEntry],
        held: list[HeldOperator],
        paused: Mapping[str, bool] | None = None,
    ) -> None:
        """After a node decided alone (the store was lost): its callers in line
        and the operators it holds become the store's, replacing what the store
        had from this node (callers since gone, rings since over), and the pauses
        operators set on this node's screens meanwhile. An operator another node
        rang meanwhile is taken by this one (the trade-off of deciding alone:
        docs/decisions.md)."""
        now = self.roster.clock()
        async with self.db.transaction() as tx:
            await tx.lock(DESK_LOCK)
            await tx.execute("DELETE FROM queue_waiters WHERE node = ?", (self.node_id,))
            for w in waiters:
                await tx.execute(
                    "DELETE FROM queue_waiters WHERE call_id = ?", (w.call_id,)
                )
                await tx.execute(
                    "INSERT INTO queue_waiters (call_id, queue, node, caller, skill, priority, "
                    "joined_at, ringing, skipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        w.call_id,
                        w.queue,
                        self.node_id,
                        w.caller,
                        w.skill,
                        int(w.priority),
                        w.joined_at,
                        w.ringing,
                        json.dumps(sorted(w.skipped)),
                    ),
                )
            await tx.execute(
                "UPDATE operator_states SET state = 'free', call_id = NULL, node = NULL, "
                "free_at = NULL, updated_at = ? WHERE node = ?",
                (now, self.node_id),
            )
            for op in held:
                await tx.execute(
                    "UPDATE operator_states SET state = ?, call_id = ?, node = ?, free_at = ?, "
                    "updated_at = ? WHERE uri = ?",
                    (op.state.value, op.call_id, self.node_id, op.free_at, now, op.uri),
                )
            for uri, is_paused in (paused or {}).items():
                await tx.execute(
                    "UPDATE operator_states SET paused = ?, updated_at = ? WHERE uri = ?",
                    (int(is_paused), now, uri),
                )

    async def forget_node(self, node: str) -> int:
        """A lost node's callers leave the line and its operators are freed; how
        many rows changed."""
        now = self.roster.clock()
        async with self.db.transaction() as tx:
            await tx.lock(DESK_LOCK)
            gone = await tx.execute("DELETE FROM queue_waiters WHERE node = ?", (node,))
            freed = await tx.execute(
                "UPDATE operator_states SET state = 'free', call_id = NULL, node = NULL, "
                "free_at = NULL, updated_at = ? WHERE node = ? AND state IN ('ringing', 'talking')",
                (now, node),
            )
            return gone + freed


async def _free(tx: Transaction, operator: str, node: str, now: float) -> None:
    await tx.execute(
        "UPDATE operator_states SET state = 'free', call_id = NULL, node = NULL, free_at = NULL, "
        "updated_at = ? WHERE uri = ? AND (node = ? OR node IS NULL)",
        (now, operator, node),
    )


async def _operators(
    statements: Database | Transaction, roster: NodeRoster, uris: Iterable[str] | None
) -> dict[str, OperatorRow]:
    rows = await statements.fetch_all(
        "SELECT o.uri, o.state, o.paused, o.call_id, o.node, o.free_at, o.calls_taken, "
        f"CASE WHEN n.node_id IS NOT NULL AND {live_nodes_sql()} THEN 1 ELSE 0 END AS alive "
        "FROM operator_states o LEFT JOIN nodes n ON n.node_id = o.node",
        (roster.alive_since(),),
    )
    wanted = None if uris is None else set(uris)
    now = roster.clock()
    out: dict[str, OperatorRow] = {}
    for r in rows:
        uri = str(r[0])
        if wanted is not None and uri not in wanted:
            continue
        stored, paused, alive = str(r[1]), bool(r[2]), bool(r[7])
        free_at = None if r[5] is None else float(r[5])
        if stored in ("ringing", "talking") and alive:
            state = OperatorState(stored)
        elif stored == "wrap_up" and free_at is not None and free_at > now:
            state = OperatorState.WRAP_UP
        else:
            state = OperatorState.PAUSED if paused else OperatorState.FREE
        held = state in (OperatorState.RINGING, OperatorState.TALKING)
        out[uri] = OperatorRow(
            uri=uri,
            state=state,
            paused=paused,
            call_id=str(r[3]) if held and r[3] is not None else None,
            node=str(r[4]) if held and r[4] is not None else None,
            calls_taken=int(r[6]),
        )
    return out


def _entry(r: object) -> LineEntry:
    row: Mapping[int, object] = r  # type: ignore[assignment]
    skipped = json.loads(str(row[8]))
    return LineEntry(
        call_id=str(row[0]),
        queue=str(row[1]),
        node=str(row[2]),
        caller=str(row[3]),
        skill=None if row[4] is None else str(row[4]),
        priority=bool(row[5]),
        joined_at=float(row[6]),  # type: ignore[arg-type]
        ringing=None if row[7] is None else str(row[7]),
        skipped=frozenset(str(s) for s in skipped),
    )


def _view(queue: Queue, entries: list[LineEntry], states: Mapping[str, OperatorRow]) -> Queue:
    """The queue as the store has it: its operators (skills from the config,
    states from the store) and the whole line of every node."""
    operators = [
        Operator(
            uri=op.uri,
            queue=queue.name,
            state=states[op.uri].state if op.uri in states else OperatorState.FREE,
            calls_taken=states[op.uri].calls_taken if op.uri in states else 0,
            skills=op.skills,
            paused=states[op.uri].paused if op.uri in states else False,
        )
        for op in queue.operators
    ]
    view = Queue(
        name=queue.name,
        operators=operators,
        max_waiting=queue.max_waiting,
        max_wait=queue.max_wait,
        overflow_after=queue.overflow_after,
        elderly_overflow_after=queue.elderly_overflow_after,
        target_answer=queue.target_answer,
        overflow_to=queue.overflow_to,
        overflow_to_after=queue.overflow_to_after,
    )
    for e in entries:
        view.line.append(e.call_id)
        view.waiting[e.call_id] = Waiter(
            call_id=e.call_id,
            caller=e.caller,
            skill=e.skill,
            joined=e.joined_at,
            skipped=set(e.skipped),
            ringing=e.ringing,
        )
    return view
