"""The persistent callback queue (tables ``callbacks`` and
``callback_events``, migration 3).

One open callback per number (a partial unique index); a new drop from the
same number updates it.  ``claim_due`` moves due callbacks to ``dialing``
inside one transaction holding the store's lock ``callbacks.claim``, so two
tasks, processes or nodes never claim the same one; ``outcome`` / ``done``
report how the dial went and schedule the next attempt per the policy or give
up.  Every change of state adds a ``callback_events`` row.  ``recover`` (at
start) returns callbacks a dead process left mid-dial to ``pending``.

Every method that needs the time takes ``now`` (epoch seconds): the queue
never reads the clock itself.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable

from ivr.callbacks.model import (
    OPEN_STATES,
    URGENCIES,
    WAITING_STATES,
    AttemptResult,
    Callback,
    CallbackEvent,
    CallbackReason,
    CallbackState,
    OriginalPlace,
    is_urgent,
    more_urgent,
    priority,
)
from ivr.callbacks.policy import RATE_WINDOW, CallbackPolicy
from ivr.store import Database, Row, Transaction

MAX_LIST = 10_000  # largest list() limit
RECOVERED = "recovered after restart"

_COLUMNS = (
    "id",
    "number",
    "call_id",
    "first_call_id",
    "ticket_id",
    "reason",
    "state",
    "priority",
    "elderly",
    "emergency",
    "urgency",
    "original_enqueued_at",
    "original_position",
    "attempts",
    "next_at",
    "last_error",
    "created_at",
    "updated_at",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM callbacks"


def _in(states: Iterable[CallbackState]) -> str:
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(states)) + ")"


_OPEN = _in(OPEN_STATES)
_WAITING = _in(WAITING_STATES)
_DIAL_ORDER = "priority, COALESCE(original_enqueued_at, created_at), id"
_ATTEMPTS_SINCE = """
    SELECT e.at FROM callback_events AS e JOIN callbacks AS c ON c.id = e.callback_id
    WHERE c.number = ? AND e.to_state = 'dialing' AND e.at > ? ORDER BY e.at
"""


class CallbackError(Exception):
    """A callback operation that cannot be done."""


class CallbackNotFoundError(CallbackError, LookupError):
    """No callback with that id."""


class CallbackStateError(CallbackError, ValueError):
    """The callback is in a state that does not allow this."""


class CallbackQueue:
    """Callbacks in the database, dialled per ``policy``."""

    def __init__(self, db: Database, policy: CallbackPolicy, *, node: str | None = None) -> None:
        self._db = db
        self.policy = policy
        # the node this queue dials from (a cluster): its claims carry its name, so
        # a survivor can take back the callbacks of a node that died mid-dial
        self.node = node

    # ------------------------------------------------------------ asking

    async def request(
        self,
        number: str,
        *,
        call_id: str,
        reason: CallbackReason,
        now: float,
        ticket_id: int | None = None,
        urgency: str | None = None,
        emergency: bool = False,
        elderly: bool = False,
        enqueued_at: float | None = None,
        position: int | None = None,
    ) -> Callback:
        """Ask for a callback to ``number`` after call ``call_id`` ended for
        ``reason``.  Creates the number's open callback, or updates it: the
        original place in line, ticket and first call are kept, priority only
        goes up, and a drop from a new call makes it due again from attempt 1.

        ``enqueued_at``/``position``: when the caller joined the operator queue
        on this call and their position in it (None if they never queued)."""
        number = _number(number)
        if not call_id:
            raise ValueError("callback: call_id must not be empty")
        reason = CallbackReason(reason)
        if urgency is not None and urgency not in URGENCIES:
            raise ValueError(f"callback: urgency {urgency!r} must be one of {', '.join(URGENCIES)}")
        _check_time("now", now)
        if enqueued_at is not None:
            _check_time("enqueued_at", enqueued_at)
        if position is not None and (isinstance(position, bool) or position < 0):
            raise ValueError(f"callback: position must be 0 or more, got {position!r}")
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(f"{_SELECT} WHERE number = ? AND state IN {_OPEN}", (number,))
            if row is None:
                urgent = is_urgent(urgency, emergency)
                callback_id = await _insert(
                    tx,
                    (
                        number,
                        call_id,
                        call_id,
                        ticket_id,
                        reason.value,
                        CallbackState.PENDING.value,
                        priority(urgency, emergency, elderly),
                        int(elderly),
                        int(emergency),
                        urgency,
                        enqueued_at,
                        position,
                        0,
                        self.policy.first_due(now, urgent=urgent),
                        None,
                        now,
                        now,
                    ),
                )
                await _event(
                    tx, callback_id, now, None, CallbackState.PENDING, f"{reason}: call {call_id}"
                )
                return await _require(tx, callback_id)
            old = _callback(row)
            return await self._merge(
                tx,
                old,
                call_id=call_id,
                reason=reason,
                now=now,
                ticket_id=ticket_id,
                urgency=urgency,
                emergency=emergency,
                elderly=elderly,
                enqueued_at=enqueued_at,
                position=position,
            )

    async def _merge(
        self,
        tx: Transaction,
        old: Callback,
        *,
        call_id: str,
        reason: CallbackReason,
        now: float,
        ticket_id: int | None,
        urgency: str | None,
        emergency: bool,
        elderly: bool,
        enqueued_at: float | None,
        position: int | None,
    ) -> Callback:
        new_urgency = more_urgent(old.urgency, urgency)
        new_emergency = old.emergency or emergency
        new_elderly = old.elderly or elderly
        urgent = is_urgent(new_urgency, new_emergency)
        place: tuple[float | None, int | None]
        if old.original_enqueued_at is None and enqueued_at is not None:
            place = (enqueued_at, position)
        else:
            place = (old.original_enqueued_at, old.original_position)
        state, attempts, next_at = old.state, old.attempts, old.next_at
        if call_id == old.call_id:
            detail = f"call {call_id} asked again: {reason}"
            if state.is_waiting and urgent and not old.urgent and self.policy.in_quiet_hours(now):
                next_at = min(next_at, now)  # now urgent: no longer held by quiet hours
        elif state is CallbackState.DIALING:
            detail = f"{reason} again (call {call_id}) while a dial is in progress"
        else:  # a fresh drop: the caller was just reachable; start the attempts again
            detail = f"{reason} again: call {call_id}"
            first = self.policy.first_due(now, urgent=urgent)
            next_at = min(next_at, first) if state.is_waiting else first
            state, attempts = CallbackState.PENDING, 0
        await tx.execute(
            """
            UPDATE callbacks SET call_id = ?, ticket_id = ?, reason = ?, state = ?, priority = ?,
                elderly = ?, emergency = ?, urgency = ?, original_enqueued_at = ?,
                original_position = ?, attempts = ?, next_at = ?, updated_at = ?
            WHERE id = ?
            """,
            (
                call_id,
                old.ticket_id if old.ticket_id is not None else ticket_id,
                reason.value,
                state.value,
                priority(new_urgency, new_emergency, new_elderly),
                int(new_elderly),
                int(new_emergency),
                new_urgency,
                place[0],
                place[1],
                attempts,
                next_at,
                now,
                old.id,
            ),
        )
        await _event(tx, old.id, now, old.state, state, detail)
        return await _require(tx, old.id)

    async def caller_dialled_in(
        self, number: str, *, now: float, call_id: str | None = None
    ) -> OriginalPlace | None:
        """The caller rang us again: cancel their open callback and return the
        place in line they had, for the new call to keep.  None when they have
        no callback waiting (or one is already connected)."""
        number = _number(number)
        _check_time("now", now)
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(f"{_SELECT} WHERE number = ? AND state IN {_OPEN}", (number,))
            if row is None:
                return None
            cb = _callback(row)
            if cb.state is CallbackState.CONNECTED:
                return None
            detail = "caller dialled in again" + (f" (call {call_id})" if call_id else "")
            await _set_state(tx, cb, CallbackState.CANCELLED, now, detail)
            return OriginalPlace(
                callback_id=cb.id,
                enqueued_at=cb.original_enqueued_at,
                position=cb.original_position,
                ticket_id=cb.ticket_id,
                call_id=cb.first_call_id,
            )

    # ------------------------------------------------------------ dialling

    async def claim_due(
        self, *, now: float, free_operators: int, limit: int | None = None
    ) -> list[Callback]:
        """Move the callbacks due at ``now`` to ``dialing`` (attempts + 1) and
        return them, most urgent first, then by original place in line.

        At most ``free_operators`` callbacks are dialling at once (counting the
        ones already dialling), or ``policy.max_dialing`` in customer_first
        mode; ``limit`` caps how many this call claims.  Non-urgent callbacks
        are held through quiet hours, and a number that had
        ``policy.max_attempts_per_hour`` attempts in the last hour waits; both
        get their ``next_at`` moved to when they may go."""
        _check_time("now", now)
        if free_operators < 0:
            raise ValueError(f"free_operators must be 0 or more, got {free_operators}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, got {limit}")
        due_sql = f"state IN {_WAITING} AND next_at <= ?"
        due = await self._db.fetch_one(f"SELECT 1 FROM callbacks WHERE {due_sql} LIMIT 1", (now,))
        if due is None:  # the common case: no write lock taken
            return []
        async with self._db.transaction() as tx:
            return await self._claim(tx, now, free_operators, limit, due_sql)

    async def _claim(
        self, tx: Transaction, now: float, free_operators: int, limit: int | None, due_sql: str
    ) -> list[Callback]:
        policy = self.policy
        await tx.lock("callbacks.claim")  # one claim at a time, on every node
        if policy.in_quiet_hours(now):
            await tx.execute(
                f"""
                UPDATE callbacks SET next_at = ?, updated_at = ?
                WHERE {due_sql} AND emergency = 0 AND (urgency IS NULL OR urgency <> ?)
                """,
                (policy.quiet_hours_end(now), now, now, URGENCIES[0]),
            )
        row = await tx.fetch_one(
            "SELECT COUNT(*) FROM callbacks WHERE state = ?", (CallbackState.DIALING.value,)
        )
        dialing = int(row[0]) if row is not None else 0
        room = (policy.max_dialing if policy.customer_first else free_operators) - dialing
        if limit is not None:
            room = min(room, limit)
        claimed: list[Callback] = []
        if room <= 0:
            return claimed
        rows = await tx.fetch_all(f"{_SELECT} WHERE {due_sql} ORDER BY {_DIAL_ORDER}", (now,))
        for candidate in (_callback(r) for r in rows):
            if len(claimed) >= room:
                break
            recent = await tx.fetch_all(_ATTEMPTS_SINCE, (candidate.number, now - RATE_WINDOW))
            if len(recent) >= policy.max_attempts_per_hour:
                # due again when the oldest attempt that counts leaves the hour
                frees_at = float(recent[len(recent) - policy.max_attempts_per_hour][0])
                at = policy.schedule(frees_at + RATE_WINDOW, urgent=candidate.urgent)
                await tx.execute(
                    "UPDATE callbacks SET next_at = ?, updated_at = ? WHERE id = ?",
                    (max(at, now), now, candidate.id),
                )
                continue
            attempt = candidate.attempts + 1
            await tx.execute(
                "UPDATE callbacks SET state = ?, attempts = ?, updated_at = ?, lease_node = ? "
                "WHERE id = ?",
                (CallbackState.DIALING.value, attempt, now, self.node, candidate.id),
            )
            await _event(
                tx,
                candidate.id,
                now,
                candidate.state,
                CallbackState.DIALING,
                f"attempt {attempt} of {policy.max_attempts}",
            )
            claimed.append(await _require(tx, candidate.id))
        return claimed

    async def outcome(
        self,
        callback_id: int,
        result: CallbackState,
        *,
        now: float,
        detail: str = "",
        give_up: bool = False,
    ) -> AttemptResult:
        """How the dial of a ``dialing`` callback went.

        CONNECTED: the caller answered (call ``done`` when the call is over).
        NO_ANSWER / BUSY / FAILED (any other error, e.g. 5xx or a timeout):
        the next attempt is scheduled per ``policy.retry_delays`` (state
        no_answer / busy / pending); with every attempt used, or
        ``give_up=True`` (e.g. 404: the number does not exist), the callback is
        failed and ``ticket_to_flag`` names its ticket.  A callback cancelled
        while it was dialling is left cancelled (the dialer should hang up)."""
        result = CallbackState(result)
        if result not in (
            CallbackState.CONNECTED,
            CallbackState.NO_ANSWER,
            CallbackState.BUSY,
            CallbackState.FAILED,
        ):
            raise ValueError(
                f"callback outcome must be connected, no_answer, busy or failed, not {result}"
            )
        _check_time("now", now)
        async with self._db.transaction() as tx:
            cb = await _require(tx, callback_id)
            if cb.state is CallbackState.CANCELLED:
                return AttemptResult(cb, gave_up=False, ticket_to_flag=None)
            if cb.state is not CallbackState.DIALING:
                raise CallbackStateError(
                    f"callback {callback_id} is {cb.state}, not dialing: "
                    "report an outcome only for a callback claimed with claim_due"
                )
            if result is CallbackState.CONNECTED:
                updated = await _set_state(tx, cb, result, now, detail or "answered")
                return AttemptResult(updated, gave_up=False, ticket_to_flag=None)
            error = f"{result}: {detail}" if detail else str(result)
            next_at = None if give_up else self.policy.retry_due(now, cb.attempts, urgent=cb.urgent)
            if next_at is None:
                why = "gave up" if give_up else f"gave up after {cb.attempts} attempts"
                updated = await _set_state(
                    tx, cb, CallbackState.FAILED, now, f"{error}; {why}", error=error
                )
                return AttemptResult(updated, gave_up=True, ticket_to_flag=cb.ticket_id)
            waiting = CallbackState.PENDING if result is CallbackState.FAILED else result
            updated = await _set_state(
                tx,
                cb,
                waiting,
                now,
                f"{error}; attempt {cb.attempts + 1} due in {next_at - now:.0f} s",
                error=error,
                next_at=next_at,
            )
            return AttemptResult(updated, gave_up=False, ticket_to_flag=None)

    async def done(self, callback_id: int, *, now: float, detail: str = "") -> Callback:
        """The connected callback call is over.  Idempotent; a cancelled one
        stays cancelled."""
        _check_time("now", now)
        async with self._db.transaction() as tx:
            cb = await _require(tx, callback_id)
            if cb.state in (CallbackState.DONE, CallbackState.CANCELLED):
                return cb
            if cb.state is not CallbackState.CONNECTED:
                raise CallbackStateError(
                    f"callback {callback_id} is {cb.state}, not connected: only a connected "
                    "callback can be done (report a failed dial with outcome())"
                )
            return await _set_state(tx, cb, CallbackState.DONE, now, detail or "call over")

    async def recover(self, *, now: float, node: str | None = None) -> int:
        """Callbacks a dead process left ``dialing`` (or ``connected``: its calls
        died with it) go back to ``pending``, due at once.  Returns how many.

        ``node``: only those that node claimed (at start, a node takes back its
        own; a survivor those of a node that stopped heartbeating), and those
        claimed before nodes had names.  None: every one (one machine, run only
        while no other process dials callbacks from this database)."""
        _check_time("now", now)
        which = "" if node is None else " AND (lease_node = ? OR lease_node IS NULL)"
        params: tuple[object, ...] = (CallbackState.DIALING.value, CallbackState.CONNECTED.value)
        if node is not None:
            params += (node,)
        async with self._db.transaction() as tx:
            await tx.lock("callbacks.claim")
            rows = await tx.fetch_all(f"{_SELECT} WHERE state IN (?, ?){which} ORDER BY id", params)
            for cb in (_callback(r) for r in rows):
                detail = RECOVERED
                if node is not None and node != self.node:  # a survivor's take-over
                    detail = f"taken back from lost node {node}"
                if cb.state is CallbackState.CONNECTED:
                    detail += " (the callback call was connected)"
                await _set_state(tx, cb, CallbackState.PENDING, now, detail, next_at=now)
            return len(rows)

    # ------------------------------------------------------------ admin (CLI, JSON API)

    async def cancel(self, callback_id: int, reason: str, *, now: float) -> Callback:
        """Cancel an open callback that is not connected (a dial in progress
        ends as cancelled when the dialer reports it)."""
        reason = reason.strip()
        if not reason:
            raise ValueError("say why the callback is cancelled (reason must not be empty)")
        _check_time("now", now)
        async with self._db.transaction() as tx:
            cb = await _require(tx, callback_id)
            if not cb.state.is_open or cb.state is CallbackState.CONNECTED:
                raise CallbackStateError(
                    f"callback {callback_id} is {cb.state}: only a pending, dialing, "
                    "no_answer or busy callback can be cancelled"
                )
            return await _set_state(tx, cb, CallbackState.CANCELLED, now, reason)

    async def retry(
        self, callback_id: int, *, now: float, detail: str = "retry requested"
    ) -> Callback:
        """Make a callback due now (pending), keeping its attempts; a failed,
        cancelled or done one is reopened for one more attempt.  A non-urgent
        callback retried in quiet hours is due at their end."""
        _check_time("now", now)
        async with self._db.transaction() as tx:
            cb = await _require(tx, callback_id)
            if cb.state in (CallbackState.DIALING, CallbackState.CONNECTED):
                raise CallbackStateError(
                    f"callback {callback_id} is {cb.state}: wait for the call in progress"
                )
            if not cb.state.is_open:
                other = await tx.fetch_one(
                    f"SELECT id FROM callbacks WHERE number = ? AND state IN {_OPEN}", (cb.number,)
                )
                if other is not None:
                    raise CallbackStateError(
                        f"callback {callback_id}: {cb.number} already has open callback "
                        f"{other[0]}; retry that one"
                    )
            next_at = self.policy.schedule(now, urgent=cb.urgent)
            note = f"{detail} (after {cb.attempts} attempts)"
            return await _set_state(tx, cb, CallbackState.PENDING, now, note, next_at=next_at)

    async def get(self, callback_id: int) -> Callback | None:
        row = await self._db.fetch_one(f"{_SELECT} WHERE id = ?", (callback_id,))
        return _callback(row) if row is not None else None

    async def open_for(self, number: str) -> Callback | None:
        """The number's open callback, if any."""
        row = await self._db.fetch_one(
            f"{_SELECT} WHERE number = ? AND state IN {_OPEN}", (_number(number),)
        )
        return _callback(row) if row is not None else None

    async def open_for_call(self, call_id: str) -> list[Callback]:
        """The open callbacks asked for after call ``call_id``."""
        rows = await self._db.fetch_all(
            f"{_SELECT} WHERE call_id = ? AND state IN {_OPEN} ORDER BY id", (call_id,)
        )
        return [_callback(r) for r in rows]

    async def list(
        self,
        states: Iterable[CallbackState | str] | None = None,
        *,
        number: str | None = None,
        limit: int = 100,
    ) -> list[Callback]:
        """Callbacks, open ones first in the order they will be dialled, then
        the closed ones newest first.  ``states`` filters (None: all)."""
        if not 0 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be 0..{MAX_LIST}, got {limit}")
        where: list[str] = []
        params: list[object] = []
        if states is not None:
            wanted = sorted({CallbackState(s) for s in states})
            if not wanted:
                return []
            where.append(f"state IN ({', '.join('?' for _ in wanted)})")
            params.extend(s.value for s in wanted)
        if number is not None:
            where.append("number = ?")
            params.append(_number(number))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        is_open = f"state IN {_OPEN}"
        rows = await self._db.fetch_all(
            f"""{_SELECT}{clause}
            ORDER BY {is_open} DESC,
                CASE WHEN {is_open} THEN priority ELSE 0 END,
                CASE WHEN {is_open} THEN COALESCE(original_enqueued_at, created_at)
                     ELSE -created_at END,
                id
            LIMIT ?""",
            (*params, limit),
        )
        return [_callback(r) for r in rows]

    async def events(self, callback_id: int) -> builtins.list[CallbackEvent]:
        """The callback's recorded transitions, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT id, callback_id, at, from_state, to_state, detail FROM callback_events "
            "WHERE callback_id = ? ORDER BY id",
            (callback_id,),
        )
        return [
            CallbackEvent(
                id=int(r[0]),
                callback_id=int(r[1]),
                at=float(r[2]),
                from_state=CallbackState(r[3]) if r[3] is not None else None,
                to_state=CallbackState(r[4]),
                detail=str(r[5]),
            )
            for r in rows
        ]

    async def counts(self) -> dict[str, int]:
        """How many callbacks are in each state (every state listed)."""
        rows = await self._db.fetch_all("SELECT state, COUNT(*) FROM callbacks GROUP BY state")
        found = {str(r[0]): int(r[1]) for r in rows}
        return {s.value: found.get(s.value, 0) for s in CallbackState}

    async def next_due_at(self) -> float | None:
        """The earliest ``next_at`` of a waiting callback (None: nothing
        waits), for the dial loop to sleep until.  It can be in the past when
        callbacks are due but no operator is free."""
        row = await self._db.fetch_one(
            f"SELECT MIN(next_at) FROM callbacks WHERE state IN {_WAITING}"
        )
        return float(row[0]) if row is not None and row[0] is not None else None


# ---------------------------------------------------------------- helpers


def _number(number: str) -> str:
    text = number.strip()
    if not text:
        raise ValueError("callback: the caller's number must not be empty")
    return text


def _check_time(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"callback: {name} must be epoch seconds, got {value!r}")


async def _insert(tx: Transaction, values: tuple[object, ...]) -> int:
    columns = _COLUMNS[1:]
    row = await tx.fetch_one(
        f"INSERT INTO callbacks ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)}) RETURNING id",
        values,
    )
    assert row is not None
    return int(row[0])


async def _require(tx: Transaction, callback_id: int) -> Callback:
    row = await tx.fetch_one(f"{_SELECT} WHERE id = ?", (callback_id,))
    if row is None:
        raise CallbackNotFoundError(f"no callback with id {callback_id}")
    return _callback(row)


async def _event(
    tx: Transaction,
    callback_id: int,
    at: float,
    from_state: CallbackState | None,
    to_state: CallbackState,
    detail: str,
) -> None:
    await tx.execute(
        "INSERT INTO callback_events (callback_id, at, from_state, to_state, detail) "
        "VALUES (?, ?, ?, ?, ?)",
        (callback_id, at, from_state.value if from_state else None, to_state.value, detail),
    )


async def _set_state(
    tx: Transaction,
    cb: Callback,
    state: CallbackState,
    now: float,
    detail: str,
    *,
    error: str | None = None,
    next_at: float | None = None,
) -> Callback:
    """Move ``cb`` to ``state`` and record the transition."""
    await tx.execute(
        """
        UPDATE callbacks SET state = ?, updated_at = ?,
            last_error = COALESCE(?, last_error), next_at = COALESCE(?, next_at)
        WHERE id = ?
        """,
        (state.value, now, error, next_at, cb.id),
    )
    await _event(tx, cb.id, now, cb.state, state, detail)
    return await _require(tx, cb.id)


def _callback(row: Row) -> Callback:
    v = dict(zip(_COLUMNS, tuple(row), strict=True))
    return Callback(
        id=int(v["id"]),
        number=str(v["number"]),
        call_id=str(v["call_id"]),
        first_call_id=str(v["first_call_id"]),
        ticket_id=int(v["ticket_id"]) if v["ticket_id"] is not None else None,
        reason=CallbackReason(v["reason"]),
        state=CallbackState(v["state"]),
        priority=int(v["priority"]),
        elderly=bool(v["elderly"]),
        emergency=bool(v["emergency"]),
        urgency=str(v["urgency"]) if v["urgency"] is not None else None,
        original_enqueued_at=_float_or_none(v["original_enqueued_at"]),
        original_position=int(v["original_position"])
        if v["original_position"] is not None
        else None,
        attempts=int(v["attempts"]),
        next_at=float(v["next_at"]),
        last_error=str(v["last_error"]) if v["last_error"] is not None else None,
        created_at=float(v["created_at"]),
        updated_at=float(v["updated_at"]),
    )


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
